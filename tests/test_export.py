"""ssl-hpc export: the catalogue opens in pyarrow, pandas, astropy (FITS) and LSDB (HATS),
with the set's ids, positions and vectors, the survey's source ids and HEALPix pixels, the
report's and the probe's per-object columns; outputs appear whole or not at all."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import astropy.units as u
import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy_healpix import lonlat_to_healpix
from conftest import SMALL_SURVEY

from jobs.cli import main
from ssl_hpc.data.manifest import ColumnInfo, ShardEntry, load_manifest
from ssl_hpc.data.survey import Survey
from ssl_hpc.data.synth import SynthConfig, generate_survey
from ssl_hpc.downstream.study import probe_study
from ssl_hpc.embed import load, store
from ssl_hpc.errors import SslHpcError
from ssl_hpc.export import ExportOptions, export_catalogue
from ssl_hpc.export.output import is_a_catalogue
from ssl_hpc.export.table import EMBEDDING, CatalogueTable, Spec
from ssl_hpc.export.writers import write_hats, write_parquet
from ssl_hpc.report import discovery

DIM, PCA = 16, 4


def write_set(survey_dir: Path, out: Path, seed: int = 0) -> Path:
    """An embedding set of `survey_dir` with random vectors, written with the store's own
    writers (shards, pca.npz, manifest), as `ssl-hpc embed` lays it out."""
    survey = Survey(survey_dir)
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True)
    shards = []
    for i, path in enumerate(survey.shard_paths):
        with h5py.File(path, "r") as f:
            ids, ra, dec = f["object_id"][()], f["ra"][()], f["dec"][()]
        vectors = rng.normal(size=(len(ids), DIM)).astype(np.float32)
        e = store.write_embedding_shard(store.shard_path(out, i), {}, ids, ra, dec, vectors)
        shards.append({"file": e.file, "n_rows": e.n_rows, "bytes": e.n_bytes, "sha256": e.sha256})
    info = {"survey": str(survey_dir), "checkpoint": "encoder.pt", "checkpoint_sha256": "c0ffee"}
    (out / store.RUN_FILE).write_text(json.dumps(info))
    _, vectors = store.EmbeddingSet(out, {"shards": shards, "dim": DIM}).load()
    store.write_pca(out, vectors, PCA)
    manifest = {**info, "identity_sha256": "feed", "dim": DIM, "shards": shards}
    (out / store.MANIFEST).write_text(json.dumps(manifest))
    return out


def add_source_id(survey_dir: Path) -> None:
    """Give every shard a fixed-width bytes `source_id` column, as ingest from Multimodal
    Universe does, and record it in the manifest."""
    manifest = load_manifest(survey_dir)
    entries = []
    for entry in manifest.shards:
        path = survey_dir / entry.file
        with h5py.File(path, "a") as f:
            ids = f["object_id"][()]
            f["source_id"] = np.array([f"mmu-{i:07d}".encode() for i in ids], dtype="S11")
        fresh = ShardEntry.of_file(path, entry.n_rows)
        entries.append(replace(entry, sha256=fresh.sha256, n_bytes=fresh.n_bytes))
    columns = {**manifest.columns, "source_id": ColumnInfo("|S11", "catalogue", len(entries))}
    replace(manifest, shards=tuple(entries), columns=columns).write(survey_dir)


@pytest.fixture(scope="module")
def mmu_like(tmp_path_factory):
    """A survey partitioned at HEALPix order 1 with source ids, and an embedding set of it."""
    root = tmp_path_factory.mktemp("export")
    generate_survey(SynthConfig(**SMALL_SURVEY, healpix_order=1), root / "survey")
    add_source_id(root / "survey")
    return root / "survey", write_set(root / "survey", root / "emb")


@pytest.fixture(scope="module")
def plain(small_survey, tmp_path_factory):
    """The shared unpartitioned survey, its embedding set, and a report and a probe of it
    made by the report's and the probe's own writers; old-probe is the probe as probes
    were before they saved their heads."""
    root = tmp_path_factory.mktemp("export-plain")
    emb = write_set(small_survey, root / "emb", seed=1)
    survey = Survey(small_survey)
    _, vectors = load(emb).load()
    (root / "report").mkdir()
    discovery.anomalies(vectors, None, survey, root / "report", 5, 4, 0)
    discovery.trust(vectors, survey, root / "report", 5, 0)
    probe_study(vectors, survey, root / "probe", ["photoz", "smooth_or_featured"], (1.0,), 1)
    shutil.copytree(root / "probe", root / "old-probe", ignore=shutil.ignore_patterns("heads"))
    return small_survey, emb, root


def the_set(emb: Path) -> dict[str, np.ndarray]:
    es = load(emb)
    ids, vectors = es.load()
    pca = es.pca()
    return {
        "object_id": ids,
        "ra": es.column("ra"),
        "dec": es.column("dec"),
        "embedding": vectors,
        "pca": (vectors.astype(np.float64) - pca["mean"]) @ pca["components"].T.astype(np.float64),
    }


def test_parquet_round_trips_through_pyarrow_and_pandas(mmu_like, tmp_path):
    import pandas as pd

    survey_dir, emb = mmu_like
    want = the_set(emb)
    survey = Survey(survey_dir)
    cat = tmp_path / "cat.parquet"
    export_catalogue(emb, cat)
    t = pq.read_table(cat)
    np.testing.assert_array_equal(t["object_id"].to_numpy(), want["object_id"])
    np.testing.assert_array_equal(t["ra"].to_numpy(), want["ra"])
    np.testing.assert_array_equal(t["dec"].to_numpy(), want["dec"])
    vectors = np.stack(t["embedding"].to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(vectors, want["embedding"])
    assert str(t.schema.field("embedding").type) == f"fixed_size_list<element: float>[{DIM}]"
    pcs = np.stack([t[f"pca_{i}"].to_numpy() for i in range(PCA)], axis=1)
    np.testing.assert_allclose(pcs, want["pca"], rtol=1e-5, atol=1e-5)
    assert f"pca_{PCA}" not in t.column_names
    # the survey's own partition: its pixels and its order, not recomputed at order 4
    np.testing.assert_array_equal(t["healpix"].to_numpy(), survey.column("healpix"))
    assert t.schema.field("healpix").metadata[b"healpix_order"] == b"1"
    ids = [f"mmu-{i:07d}" for i in want["object_id"]]
    assert t["source_id"].to_pylist() == ids
    assert t.schema.field("ra").metadata[b"unit"] == b"deg"
    meta = json.loads(t.schema.metadata[b"ssl_hpc"])
    assert meta["embeddings"] == str(emb.resolve()) and meta["checkpoint"] == "encoder.pt"
    assert meta["survey"] == str(survey_dir.resolve()) and meta["healpix_from"] == "survey"
    assert meta["survey_content_sha256"] == load_manifest(survey_dir).content_sha256
    assert meta["ssl_hpc_version"]
    df = pd.read_parquet(cat)
    np.testing.assert_array_equal(df["object_id"].to_numpy(), want["object_id"])
    np.testing.assert_array_equal(np.stack(df["embedding"].to_numpy()), want["embedding"])
    assert list(df["source_id"]) == ids
    # above part_rows: a directory of part files, read back as one table
    parts = tmp_path / "parts.parquet"
    export_catalogue(emb, parts, ExportOptions(part_rows=100, pca=2, vectors=False))
    assert len(list(parts.glob("part-*.parquet"))) > 1
    back = pd.read_parquet(parts)
    np.testing.assert_array_equal(back["object_id"].to_numpy(), want["object_id"])
    assert "embedding" not in back and "pca_1" in back and "pca_2" not in back


def test_fits_table_opens_with_units_and_the_vectors(mmu_like, tmp_path):
    from astropy.io import fits
    from astropy.table import Table

    survey_dir, emb = mmu_like
    want = the_set(emb)
    cat = tmp_path / "cat.fits"
    export_catalogue(emb, cat, ExportOptions(format="fits", healpix_order=4))
    with fits.open(cat) as hdus:
        hdus.verify("exception")
        header = hdus[1].header
    t = Table.read(cat)
    assert t["ra"].unit == u.deg and t["dec"].unit == u.deg
    np.testing.assert_array_equal(t["object_id"], want["object_id"])
    np.testing.assert_array_equal(np.asarray(t["ra"]), want["ra"])
    np.testing.assert_array_equal(np.asarray(t["embedding"]), want["embedding"])
    assert t["embedding"].shape == (len(want["object_id"]), DIM)
    assert [s for s in t["source_id"]] == [f"mmu-{i:07d}" for i in want["object_id"]]
    # an order other than the survey's: computed, and equal to astropy-healpix's
    pixels = lonlat_to_healpix(want["ra"] * u.deg, want["dec"] * u.deg, 16, order="nested")
    np.testing.assert_array_equal(t["healpix"], pixels)
    assert header["HPXORDER"] == 4 and header["HPXNSIDE"] == 16 and header["HPXFROM"] == "computed"
    assert header["EMBSET"] == str(emb.resolve()) and header["CHECKPT"] == "encoder.pt"
    assert header["SURVEY"] == str(survey_dir.resolve())
    assert header["SURVCSHA"] == load_manifest(survey_dir).content_sha256
    assert header["TCOMM2"] == "the source catalogue's own id"


@pytest.fixture(scope="module")
def hats_export(mmu_like, tmp_path_factory):
    _, emb = mmu_like
    cat = tmp_path_factory.mktemp("hats") / "ssl_cat"
    export_catalogue(emb, cat, ExportOptions(format="hats"))
    assert [p.name for p in cat.parent.iterdir()] == ["ssl_cat"]  # no temporaries left
    return cat


def test_hats_collection_reads_back_every_object(mmu_like, hats_export, tmp_path):
    import lsdb

    _, emb = mmu_like
    want = the_set(emb)
    got = lsdb.read_hats(hats_export).compute().sort_values("object_id")
    np.testing.assert_array_equal(got["object_id"].to_numpy(), np.sort(want["object_id"]))
    order = np.argsort(want["object_id"])
    np.testing.assert_array_equal(np.stack(got["embedding"].to_numpy()), want["embedding"][order])
    np.testing.assert_array_equal(got["ra"].to_numpy(), want["ra"][order])
    assert is_a_catalogue(hats_export)  # --overwrite may replace it
    theirs = tmp_path / "gaia"  # a HATS collection another tool wrote: not to be replaced
    shutil.copytree(hats_export, theirs)
    for table in theirs.rglob("*.parquet"):
        pq.write_table(pq.read_table(table).replace_schema_metadata({}), table)
    assert not is_a_catalogue(theirs)
    props = (hats_export / "ssl_cat" / "hats.properties").read_text()
    assert f"ssl_hpc_embeddings={emb.resolve()}" in props


def test_hats_crossmatch_against_the_survey_positions_finds_each_object_itself(
    mmu_like, hats_export
):
    import lsdb
    import pandas as pd

    survey_dir, _ = mmu_like
    survey = Survey(survey_dir)
    positions = pd.DataFrame({k: survey.column(k) for k in ("object_id", "ra", "dec")})
    other = lsdb.from_dataframe(positions, ra_column="ra", dec_column="dec", catalog_name="pos")
    ours = lsdb.read_hats(hats_export)
    matched = ours.crossmatch(
        other, radius_arcsec=1, suffixes=("_a", "_b"), suffix_method="all_columns"
    ).compute()
    assert len(matched) == len(survey)
    np.testing.assert_array_equal(matched["object_id_a"], matched["object_id_b"])
    assert matched["_dist_arcsec"].max() < 1e-3


def test_report_and_probe_columns(plain, tmp_path):
    survey_dir, emb, root = plain
    ids = load(emb).object_ids()
    cat = tmp_path / "cat.parquet"
    done = export_catalogue(emb, cat, report=root / "report", probe=root / "old-probe")
    t = pq.read_table(cat)
    assert done["columns"] == t.column_names
    at = {int(i): r for r, i in enumerate(ids)}
    ranking = np.genfromtxt(root / "report" / "anomalies.csv", delimiter=",", names=True)
    rows = np.array([at[int(i)] for i in ranking["object_id"]])
    np.testing.assert_array_equal(t["anomaly_rank"].to_numpy()[rows], ranking["rank"])
    np.testing.assert_allclose(t["anomaly_score"].to_numpy()[rows], ranking["score"])
    np.testing.assert_allclose(t["anomaly_gmm"].to_numpy()[rows], ranking["score_gmm"])
    with np.load(root / "report" / "trust.npz") as z:
        np.testing.assert_array_equal(z["object_id"], ids)  # the report's order is the set's
        np.testing.assert_allclose(t["trust"].to_numpy(), z["trust"])
        np.testing.assert_array_equal(t["trust_labelled"].to_numpy(), z["labelled"])
    with np.load(root / "probe" / "photoz_pdfs.npz") as z:
        rows = np.array([at[int(i)] for i in z["object_id"]])
        edges, pdf, z_pred = z["bin_edges"], z["pdf"].astype(np.float64), z["z_pred"]
    photoz, err = t["photoz"].to_numpy(), t["photoz_err"].to_numpy()
    np.testing.assert_allclose(photoz[rows], z_pred, rtol=1e-12)
    others = np.setdiff1d(np.arange(len(ids)), rows)
    assert np.isnan(photoz[others]).all() and np.isnan(err[others]).all()
    centres = (edges[1:] + edges[:-1]) / 2
    for row, p in zip(rows[:5], pdf[:5]):  # the PDF's standard deviation, one by one
        p = p / p.sum()
        mean = (p * centres).sum()
        assert err[row] == pytest.approx(np.sqrt((p * (centres - mean) ** 2).sum()), rel=1e-6)
    meta = json.loads(t.schema.metadata[b"ssl_hpc"])
    assert meta["report"] == str((root / "report").resolve())
    # no partition in this survey: pixels computed at order 4 (nside 16)
    assert meta["healpix_order"] == 4 and meta["healpix_from"] == "computed"


def test_cli_writes_refuses_an_existing_catalogue_and_names_bad_inputs(plain, tmp_path, capsys):
    _, emb, root = plain
    cat = tmp_path / "cat.fits"
    args = ["export", "--embeddings", str(emb), "--out", str(cat), "--format", "fits"]
    assert main([*args, "--no-vectors", "--pca", "2"]) == 0
    assert "pca_1" in capsys.readouterr().out
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(cat) in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert main([*args, "--overwrite"]) == 0
    assert "embedding" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.fits"]  # no temporaries
    # --overwrite onto an input would move it aside and delete it: refused, input intact
    before = sorted(p.name for p in emb.iterdir())
    for target in (emb, emb.parent):
        assert main([*args[:3], "--out", str(target), "--overwrite"]) == 2
        err = capsys.readouterr().err  # neither is a catalogue, and it holds an input
        assert f"{target}: not a catalogue an export wrote" in err
    assert sorted(p.name for p in emb.iterdir()) == before
    assert main([*args[:3], "--out", str(cat / "x.parquet")]) == 2  # cat.fits is a file
    assert "a part of its directory is a file" in capsys.readouterr().err
    # a FITS name for Parquet bytes (the default format): refused, nothing written
    assert main([*args[:3], "--out", str(tmp_path / "cat2.fits")]) == 2
    assert "a fits file name, but the format is parquet" in capsys.readouterr().err
    assert not (tmp_path / "cat2.fits").exists()
    # nor a CSV name for either (a reader would take it as text)
    for fmt in ("parquet", "fits"):
        assert main([*args[:3], "--out", str(tmp_path / "cat.csv"), "--format", fmt]) == 2
        assert f"a .csv name, but export writes {fmt}" in capsys.readouterr().err
    assert not (tmp_path / "cat.csv").exists()
    # bad inputs: one line naming the file
    other = tmp_path / "other.parquet"
    bad = tmp_path / "not-a-set"
    bad.mkdir()
    assert main(["export", "--embeddings", str(bad), "--out", str(other)]) == 2
    assert str(bad) in capsys.readouterr().err
    empty = tmp_path / "empty-report"
    empty.mkdir()
    assert (
        main(["export", "--embeddings", str(emb), "--out", str(other), "--report", str(empty)]) == 2
    )
    assert str(empty / "anomalies.csv") in capsys.readouterr().err
    wrong = tmp_path / "wrong-report"
    shutil.copytree(root / "report", wrong)
    text = (wrong / "anomalies.csv").read_text().splitlines()
    first = text[1].split(",")
    text[1] = ",".join([first[0], "999999999", *first[2:]])
    (wrong / "anomalies.csv").write_text("\n".join(text) + "\n")
    assert (
        main(["export", "--embeddings", str(emb), "--out", str(other), "--report", str(wrong)]) == 2
    )
    err = capsys.readouterr().err
    assert str(wrong / "anomalies.csv") in err and "999999999" in err
    assert main(["export", "--embeddings", str(emb), "--out", str(other), "--pca", "9"]) == 2
    assert "pca.npz has 4 components" in capsys.readouterr().err
    assert not other.exists()


def test_a_failed_write_leaves_no_catalogue_and_no_temporary(tmp_path):
    def batches():
        yield {"object_id": np.arange(3)}
        raise RuntimeError("disk went away")

    table = CatalogueTable([Spec("object_id", "int64", "id")], 6, {}, batches)
    cat = tmp_path / "cat.parquet"
    with pytest.raises(RuntimeError, match="disk went away"):
        write_parquet(table, cat, ExportOptions())
    assert list(tmp_path.iterdir()) == []
    # and an old catalogue being replaced is kept as it was
    old = CatalogueTable(
        [Spec("object_id", "int64", "id")], 2, {}, lambda: iter([{"object_id": np.arange(2)}])
    )
    write_parquet(old, cat, ExportOptions())
    before = cat.read_bytes()
    with pytest.raises(RuntimeError, match="disk went away"):
        write_parquet(table, cat, ExportOptions(), overwrite=True)
    assert cat.read_bytes() == before and list(tmp_path.iterdir()) == [cat]


def test_overwrite_replaces_only_a_catalogue(plain, tmp_path, capsys):
    """--overwrite moved aside and deleted whatever --out named: a survey, a run."""
    survey, emb, _ = plain
    args = ["export", "--embeddings", str(emb), "--overwrite", "--out"]
    copy = tmp_path / "survey"
    shutil.copytree(survey, copy)
    notes = tmp_path / "NOTES"
    notes.write_text("my notes")
    for target in (copy, notes):
        before = sorted(p.name for p in tmp_path.rglob("*"))
        assert main([*args, str(target)]) == 2
        err = capsys.readouterr().err
        assert f"{target}: not a catalogue an export wrote" in err and "Traceback" not in err
        assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert notes.read_text() == "my notes"
    # a FITS image, or a Parquet table some other tool wrote: not ours to replace
    image, table = tmp_path / "image.fits", tmp_path / "theirs.parquet"
    fits.PrimaryHDU(np.zeros((4, 4), np.float32)).writeto(image)
    pq.write_table(pa.table({"x": [1, 2]}), table)
    for target in (image, table):
        fmt = ["--format", "fits"] if target.suffix == ".fits" else []
        assert main([*args, str(target), *fmt]) == 2
        assert f"{target}: not a catalogue an export wrote" in capsys.readouterr().err
    assert fits.getdata(image).shape == (4, 4) and pq.read_table(table).num_rows == 2
    # a link is replaced as a link (what it names is kept); a FIFO is not a catalogue
    link = tmp_path / "latest.parquet"
    link.symlink_to(notes)
    assert is_a_catalogue(link) and not is_a_catalogue(tmp_path / "missing")
    assert main([*args, str(link), "--no-vectors"]) == 0
    assert not link.is_symlink() and pq.read_table(link).num_rows == len(load(emb))
    assert notes.read_text() == "my notes"
    os.mkfifo(tmp_path / "pipe")
    assert not is_a_catalogue(tmp_path / "pipe")
    # what exports write is replaced: a FITS file, a directory of Parquet parts
    for target, extra in ((tmp_path / "cat.fits", ["--format", "fits"]), (tmp_path / "parts", [])):
        more = ["part_rows=100"] if not extra else []
        assert main([*args, str(target), *extra, *more, "--no-vectors"]) == 0
        assert is_a_catalogue(target) and EMBEDDING not in _columns(target)
        if target.is_dir():  # what NFS leaves of a file still open elsewhere
            (target / ".nfs000000001").write_bytes(b"")
        assert main([*args, str(target), *extra, *more]) == 0
        assert EMBEDDING in _columns(target)  # the second export, not the first, is there
    capsys.readouterr()


def _columns(catalogue: Path) -> list[str]:
    """The column names of an exported FITS file or directory of Parquet parts."""
    if catalogue.is_dir():
        return pq.read_schema(sorted(catalogue.glob("part-*.parquet"))[0]).names
    with fits.open(catalogue) as hdul:
        return list(hdul[1].columns.names)


def test_hats_refuses_objects_without_a_position(tmp_path):
    def batches():
        yield {"object_id": np.arange(2), "ra": np.array([1.0, np.nan]), "dec": np.zeros(2)}

    specs = [Spec(k, "float64", k) for k in ("ra", "dec")]
    table = CatalogueTable([Spec("object_id", "int64", "id"), *specs], 2, {}, batches)
    with pytest.raises(SslHpcError, match="object 1 has no position"):
        write_hats(table, tmp_path / "cat", ExportOptions(format="hats"))
    assert list(tmp_path.iterdir()) == []


def test_probe_heads_predict_every_object(plain, tmp_path, capsys):
    """With the probe's saved heads: photo-z and morphology for every object; on the
    probe's held-out test objects, its own stored predictions."""
    from astropy.io import fits
    from astropy.table import Table

    _, emb, root = plain
    ids = load(emb).object_ids()
    cat = tmp_path / "cat.parquet"
    export_catalogue(emb, cat, ExportOptions(vectors=False, pca=0), probe=root / "probe")
    t = pq.read_table(cat)
    answers = ["smooth", "featured", "artifact"]
    probs = [f"p_smooth_or_featured_{a}" for a in answers]
    trained = ["in_train_photoz", "in_train_smooth_or_featured"]
    heads = ["photoz", "photoz_err", trained[0], *probs, "smooth_or_featured_class", trained[1]]
    assert t.column_names[-len(heads) :] == heads and t.num_rows == len(ids)
    photoz, err = t["photoz"].to_numpy(), t["photoz_err"].to_numpy()
    assert np.isfinite(photoz).all() and (err > 0).all()
    p = np.stack([t[c].to_numpy() for c in probs], axis=1)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert t["smooth_or_featured_class"].to_pylist() == list(np.array(answers)[p.argmax(1)])
    at = {int(i): r for r, i in enumerate(ids)}
    with np.load(root / "probe" / "photoz_pdfs.npz") as z:
        rows = np.array([at[int(i)] for i in z["object_id"]])
        edges, pdf, z_pred = z["bin_edges"], z["pdf"].astype(np.float64), z["z_pred"]
    np.testing.assert_allclose(photoz[rows], z_pred, rtol=1e-6)
    centres = (edges[1:] + edges[:-1]) / 2
    std = np.sqrt((pdf * (centres - (pdf @ centres)[:, None]) ** 2).sum(1) / pdf.sum(1))
    np.testing.assert_allclose(err[rows], std, rtol=1e-4)
    in_train = t["in_train_photoz"].to_numpy()
    assert not in_train[rows].any() and in_train.sum() > len(rows)  # 70% of the labelled
    assert b"mean of the 180-bin redshift PDF" in t.schema.field("photoz").metadata[b"description"]
    # FITS: the same columns, each described (TCOMM), the answer names as strings
    fits_cat = tmp_path / "cat.fits"
    export_catalogue(
        emb, fits_cat, ExportOptions(format="fits", vectors=False, pca=0), probe=root / "probe"
    )
    with fits.open(fits_cat) as hdus:
        header = hdus[1].header
    comments = {header[f"TTYPE{i}"]: header[f"TCOMM{i}"] for i in range(1, header["TFIELDS"] + 1)}
    assert comments["photoz_err"].endswith("standard deviation of that PDF")
    assert "smooth_or_featured=featured" in comments["p_smooth_or_featured_featured"]
    back = Table.read(fits_cat)
    np.testing.assert_array_equal(back["photoz"], photoz)
    assert list(back["smooth_or_featured_class"]) == t["smooth_or_featured_class"].to_pylist()
    # a head file gone: one line naming it
    broken = tmp_path / "broken-probe"
    shutil.copytree(root / "probe", broken)
    (broken / "heads" / "photoz.pt").unlink()
    args = ["export", "--embeddings", str(emb), "--out", str(tmp_path / "x.parquet")]
    assert main([*args, "--probe", str(broken)]) == 2
    assert str(broken / "heads" / "photoz.pt") in capsys.readouterr().err


def test_a_report_or_probe_of_other_vectors_is_refused(plain, tmp_path):
    """export took anomaly scores and photo-z heads made from one embedding set and wrote
    them beside another's vectors (the ids matched): the columns meant nothing. Reports
    and probes record the set (by its shards' sha256) and encoder they were made from."""
    survey, emb, root = plain
    other = write_set(survey, tmp_path / "other", seed=2)  # the same encoder, other vectors
    for kind in ("report", "probe"):
        shutil.copytree(root / kind, tmp_path / kind)
        metrics = tmp_path / kind / "metrics.json"
        made = json.loads(metrics.read_text()) if metrics.exists() else {}
        metrics.write_text(json.dumps({**made, **load(emb).provenance()}))
    export_catalogue(emb, tmp_path / "a.parquet", report=tmp_path / "report")
    stale = tmp_path / "stale-report"  # a report of this very set, before it was re-embedded
    shutil.copytree(tmp_path / "report", stale)
    made = json.loads((stale / "metrics.json").read_text())
    (stale / "metrics.json").write_text(json.dumps({**made, "embeddings_sha256": "0" * 64}))
    with pytest.raises(SslHpcError, match=r"stale-report: made from .* before its vectors changed"):
        export_catalogue(emb, tmp_path / "b.parquet", report=stale)
    with pytest.raises(SslHpcError, match=rf"report: made from embedding set {emb.resolve()}"):
        export_catalogue(other, tmp_path / "b.parquet", report=tmp_path / "report")
    # heads apply to any set of their encoder, and to no other encoder's
    export_catalogue(other, tmp_path / "c.parquet", probe=tmp_path / "probe")
    record = json.loads((other / store.MANIFEST).read_text())
    (other / store.MANIFEST).write_text(json.dumps({**record, "checkpoint_sha256": "beef"}))
    with pytest.raises(SslHpcError, match=r"probe: made from .*\(encoder sha256 c0ffee"):
        export_catalogue(other, tmp_path / "d.parquet", probe=tmp_path / "probe")
    assert sorted(p.name for p in tmp_path.glob("*.parquet")) == ["a.parquet", "c.parquet"]
