"""One writer per format, each streaming the table shard by shard into a staged output.

- Parquet: one file (one row group per embedding shard), or above `part_rows` rows a
  directory of part files that pandas, polars and pyarrow read as one dataset. Units,
  descriptions and the HEALPix order are field metadata; provenance is the schema's
  ``ssl_hpc`` metadata (JSON).
- FITS: one binary table (TUNIT, TCOMM, provenance in its header), streamed row block by
  row block (astropy's StreamingHDU), so memory is one shard, not the table; TOPCAT maps
  the file rather than reading it whole.
- HATS: the Parquet parts, partitioned by hats-import into a collection (the catalogue
  plus a margin catalogue for crossmatches at partition edges) that ``lsdb.read_hats``
  opens; hats-import's map-reduce streams too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import SslHpcError
from .options import ExportOptions
from .output import FITS_VERSION_KEY, PROVENANCE_KEY, remove, staged
from .table import CatalogueTable, Spec

ARROW_TYPES = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "float32": pa.float32(),
    "bool": pa.bool_(),
    "string": pa.string(),
}


# -- Arrow and Parquet --------------------------------------------------------------------
def arrow_schema(table: CatalogueTable) -> pa.Schema:
    """The Arrow schema of `table`: types, units and descriptions, provenance."""
    fields = []
    for s in table.specs:
        kind = pa.list_(pa.float32(), s.width) if s.kind == "vector" else ARROW_TYPES[s.kind]
        meta = {"description": s.description, **({"unit": s.unit} if s.unit else {}), **s.meta}
        fields.append(pa.field(s.name, kind, metadata=meta))
    return pa.schema(fields, metadata={PROVENANCE_KEY: json.dumps(table.provenance)})


def record_batch(schema: pa.Schema, batch: dict[str, np.ndarray]) -> pa.RecordBatch:
    """One shard's columns as an Arrow record batch of `schema`."""
    arrays = []
    for f in schema:
        values = batch[f.name]
        if pa.types.is_fixed_size_list(f.type):  # (n, D) -> D float32 per row, no copy
            flat = pa.array(np.ascontiguousarray(values, np.float32).reshape(-1))
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, f.type.list_size))
        else:
            arrays.append(pa.array(values, type=f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _write_parts(
    batches: Iterable[dict[str, np.ndarray]], schema: pa.Schema, directory: Path, part_rows: int
) -> list[Path]:
    """Parquet files part-00000.parquet, ... in `directory`, each of whole shards and about
    `part_rows` rows (at least one shard)."""
    directory.mkdir(parents=True, exist_ok=True)
    parts: list[Path] = []
    writer, rows = None, 0
    try:
        for batch in batches:
            rb = record_batch(schema, batch)
            if writer is not None and rows + rb.num_rows > part_rows:
                writer.close()
                writer = None
            if writer is None:
                parts.append(directory / f"part-{len(parts):05d}.parquet")
                writer, rows = pq.ParquetWriter(parts[-1], schema), 0
            writer.write_batch(rb)
            rows += rb.num_rows
    finally:
        if writer is not None:
            writer.close()
    return parts


def write_parquet(
    table: CatalogueTable, path: Path, opts: ExportOptions, overwrite: bool = False
) -> None:
    """`table` as Parquet at `path`: one file, or a directory of parts above part_rows."""
    schema = arrow_schema(table)
    with staged(path, overwrite) as tmp:
        if table.n_rows > opts.part_rows:
            _write_parts(table.batches(), schema, tmp, opts.part_rows)
            return
        with pq.ParquetWriter(tmp, schema) as writer:
            for batch in table.batches():
                writer.write_batch(record_batch(schema, batch))


# -- FITS -----------------------------------------------------------------------------------
def _fits_format(s: Spec) -> tuple[str, np.dtype]:
    """The TFORM of a column and the big-endian numpy type of its bytes in the file."""
    if s.kind == "vector":
        return f"{s.width}E", np.dtype((">f4", (s.width,)))
    if s.kind == "string":
        return f"{s.width}A", np.dtype(f"S{s.width}")
    return {
        "int64": ("K", np.dtype(">i8")),
        "float64": ("D", np.dtype(">f8")),
        "float32": ("E", np.dtype(">f4")),
        "bool": ("L", np.dtype("i1")),  # the characters T and F
    }[s.kind]


#: provenance entries as FITS header keywords (the rest become COMMENT cards)
FITS_KEYS = {
    "ssl_hpc_version": FITS_VERSION_KEY,
    "created_utc": "DATE",
    "embeddings": "EMBSET",
    "embeddings_identity_sha256": "EMBSHA",
    "checkpoint": "CHECKPT",
    "checkpoint_sha256": "CKPTSHA",
    "survey": "SURVEY",
    "survey_name": "SURVNAME",
    "survey_content_sha256": "SURVCSHA",  # SURVSHA until 2026-12-08: manifest.json's sha256
    "report": "REPORT",
    "probe": "PROBE",
    "healpix_order": "HPXORDER",
    "healpix_from": "HPXFROM",
    "embedding_dim": "EMBDIM",
    "pca_components": "NPCA",
}


def fits_header(table: CatalogueTable):
    """The binary table's header: columns with TUNIT and TCOMM, provenance, row count."""
    from astropy.io import fits  # lazy: astropy is slow to import

    columns = [fits.Column(s.name, _fits_format(s)[0], unit=s.unit) for s in table.specs]
    header = fits.BinTableHDU.from_columns(columns, nrows=0, name="CATALOGUE").header
    header["NAXIS2"] = table.n_rows
    for i, s in enumerate(table.specs, 1):
        header[f"TCOMM{i}"] = s.description
    for key, value in table.provenance.items():
        if value is None:
            continue
        if key in FITS_KEYS:
            header[FITS_KEYS[key]] = value if isinstance(value, int | float) else str(value)
        elif isinstance(value, dict):
            for k, v in value.items():
                header.add_comment(f"{key}.{k} = {json.dumps(v)}")
        else:
            header.add_comment(f"{key} = {json.dumps(value)}")
    if "healpix_order" in table.provenance:
        header["HPXNSIDE"] = 1 << int(table.provenance["healpix_order"])
        header.add_comment("healpix column: nested ordering at HPXORDER (nside HPXNSIDE)")
    return header


def _fits_rows(specs: list[Spec], batch: dict[str, np.ndarray]) -> np.ndarray:
    """One shard's rows as the bytes of a FITS binary table (big-endian records)."""
    dtype = np.dtype([(s.name, _fits_format(s)[1]) for s in specs])
    rows = np.empty(len(batch[specs[0].name]), dtype)
    for s in specs:
        values = batch[s.name]
        if s.kind == "bool":
            values = np.where(values, ord("T"), ord("F"))
        elif s.kind == "string":
            values = np.array([v.encode() for v in values], dtype=f"S{s.width}")
        rows[s.name] = values
    return rows.view(np.uint8)


def write_fits(
    table: CatalogueTable, path: Path, opts: ExportOptions, overwrite: bool = False
) -> None:
    """`table` as one FITS binary table at `path`, streamed one shard at a time."""
    from astropy.io import fits  # lazy: astropy is slow to import

    header = fits_header(table)
    with staged(path, overwrite) as tmp:
        stream = fits.StreamingHDU(tmp, header)
        try:
            for batch in table.batches():
                stream.write(_fits_rows(table.specs, batch))
            if not stream.writecomplete:
                raise RuntimeError(f"{path}: fewer rows written than the {table.n_rows} promised")
        finally:
            stream.close()


# -- HATS -----------------------------------------------------------------------------------
#: HATS partitions are cut by bytes, as lsdb's own writer does (1 GiB): with vectors a row
#: is kilobytes wide, and hats-import's default of a million rows would make 8 GB files
HATS_PARTITION_BYTES = 1 << 30


def _with_positions(batches: Iterable[dict[str, np.ndarray]], path: Path) -> Iterator[dict]:
    for batch in batches:
        unknown = ~(np.isfinite(batch["ra"]) & np.isfinite(batch["dec"]))
        if unknown.any():
            raise SslHpcError(
                f"{path}: object {int(batch['object_id'][unknown][0])} has no position; a HATS "
                "catalogue places every row on the sky: use --format parquet or fits"
            )
        yield batch


def write_hats(
    table: CatalogueTable, path: Path, opts: ExportOptions, overwrite: bool = False
) -> None:
    """`table` as a HATS collection at `path` (catalogue + margin), via hats-import."""
    # lazy: dask and hats-import are heavy, and only this format needs them
    from dask.distributed import Client
    from hats_import.collection.arguments import CollectionArguments
    from hats_import.pipeline import pipeline_with_client

    name = path.name.split(".")[0] or "catalogue"
    with staged(path, overwrite) as tmp:
        work = tmp.with_name(tmp.name + "-work")
        remove(work)
        try:
            parts = work / "parts"
            batches = _with_positions(table.batches(), path)
            _write_parts(batches, arrow_schema(table), parts, opts.part_rows)
            args = (
                CollectionArguments(
                    output_artifact_name=name,
                    output_path=work / "out",
                    tmp_dir=work / "tmp",
                    resume=False,
                    progress_bar=False,
                )
                .catalog(
                    input_path=parts,
                    file_reader="parquet",
                    ra_column="ra",
                    dec_column="dec",
                    use_schema_file=parts / "part-00000.parquet",  # keeps units, provenance
                    byte_pixel_threshold=HATS_PARTITION_BYTES,
                    addl_hats_properties=_hats_properties(table),
                )
                .add_margin(margin_threshold=opts.margin_arcsec, is_default=True)
            )
            threads = min(4, os.cpu_count() or 1)
            with Client(
                processes=False, n_workers=1, threads_per_worker=threads, dashboard_address=None
            ) as client:
                pipeline_with_client(args, client)
            os.replace(work / "out" / name, tmp)
        finally:
            remove(work)


def _hats_properties(table: CatalogueTable) -> dict[str, str]:
    """Provenance as hats.properties entries (ssl_hpc_<key>=value)."""
    return {
        f"ssl_hpc_{k.removeprefix('ssl_hpc_')}": str(v)
        for k, v in table.provenance.items()
        if v is not None and not isinstance(v, dict)
    }


WRITERS = {"parquet": write_parquet, "fits": write_fits, "hats": write_hats}
