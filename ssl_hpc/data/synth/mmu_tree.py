"""A survey rewritten as a Multimodal Universe (MMU) tree, to test and show the MMU reader.

Layout: ``<root>/<dataset>/<config>/healpix=<N>/001-of-001.hdf5``, one file per non-empty
HEALPix pixel N (nside 16, NESTED) of the objects' (ra, dec), rows in survey order. Each
file holds one dataset per column, row i one object:

==================  ====================  ================================================
dataset             shape, dtype          meaning
==================  ====================  ================================================
object_id           (N,) bytes            b"1000017" (decimal) or b"SYN J150.11230+02.20512"
ra, dec             (N,) float64          degrees
healpix             (N,) int64            the nside-16 nested pixel
image_band          (N, B) bytes          b"<prefix>-<band>", e.g. b"sdss-g"
image_array         (N, B, H, W) float32  the survey's pixels; garbage where masked
image_ivar          (N, B, H, W) float32  1/sigma^2 with a smooth +-5% gradient; 0 where masked
image_mask          (N, B, H, W) or       True = clean pixel
                    (N, H, W) bool
image_psf_fwhm      (N, B) float32        arcsec
image_scale         (N, B) float32        arcsec / px
Z, EBV, MAG_G, ...  (N,)                  catalogue and label columns, upper-case (z_spec -> Z);
FLUX_G, ...                               nanomaggies from MAG_G, ... where the survey has
                                          no flux; ``truth_*``: truth columns, if asked
==================  ====================  ================================================

The ivar gradient is rescaled so that its median over each object-band's clean pixels is
exactly 1/sigma^2 (sigma: the survey's ``image_sky_sigma``), which a reader can be tested
against. Bad pixels follow :func:`draw_defects`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ...errors import ConfigError, SslHpcError, SurveyError
from ...utils.atomic import atomic_path
from ...utils.h5write import new_h5_file
from .. import format as fmt
from .. import healpix
from ..survey import Survey

NSIDE = 2**healpix.MMU_ORDER
FILE_NAME = "001-of-001.hdf5"
ID_STYLES = ("decimal", "name")
MASK_SHAPES = ("per-band", "shared")
COMPRESSIONS = ("gzip", "lzf", None)
RENAMES = {"z_spec": "Z"}  # MMU catalogues call the spectroscopic redshift Z

#: defect codes drawn per pixel, and the garbage written over the pixel for each: a cosmic
#: ray blanked by the pipeline (NaN), a dead column after bias subtraction, a saturated core
CLEAN, COSMIC_RAY, BAD_COLUMN, SATURATED = 0, 1, 2, 3
GARBAGE = np.array([0.0, np.nan, -1.0e4, 1.0e5], dtype=np.float32)
#: defect rates at bad_pixels=1: cosmic-ray hits per pixel of each band's exposure (SDSS
#: frames, 54 s, collect a few hundred), P(bad column in one band), P(saturated star core)
CR_PER_PIXEL, P_COLUMN, P_STAR = 2e-4, 0.3, 0.25
IVAR_GRADIENT = 0.05
ROWS_PER_CHUNK = 4096  # catalogue chunks; images: 16 objects a chunk


@dataclass(frozen=True)
class MmuParams:
    """What a tree was written with (pixel_scale: the one written, from the manifest or given)."""

    dataset: str
    config: str
    band_prefix: str
    id_style: str
    mask_shape: str
    compression: str | None
    bad_pixels: float
    include_truth: bool
    seed: int
    pixel_scale: float


@dataclass
class MmuTree:
    """A written tree: each file with its rows, and the masked pixels of every object."""

    root: Path  # <root>/<dataset>/<config>
    files: dict[Path, int]
    n_objects: int
    masked_pixels: dict[int, int]  # survey object_id -> False entries of its image_mask
    params: MmuParams
    columns: dict[str, str] = field(default_factory=dict)  # MMU name -> survey column


def mmu_object_ids(
    object_id: np.ndarray, ra: np.ndarray, dec: np.ndarray, style: str
) -> np.ndarray:
    """(N,) bytes ids: the integer as text ("decimal") or an IAU-like "SYN J<ra><dec>" name."""
    if style == "decimal":
        return np.array([str(int(i)).encode() for i in object_id], dtype="S")
    if style != "name":
        raise ConfigError(f"id_style {style!r}: expected one of {ID_STYLES}")
    names = np.array([f"SYN J{r:09.5f}{d:+09.5f}".encode() for r, d in zip(ra, dec)], dtype="S")
    uniq, counts = np.unique(names, return_counts=True)
    if (counts > 1).any():
        raise SurveyError(f"two objects share the name {uniq[counts > 1][0].decode()!r}")
    return names


def column_names(survey: Survey, include_truth: bool) -> dict[str, str]:
    """MMU name -> survey column: upper-case (z_spec -> Z), truth columns as truth_<name>
    if `include_truth`, else left out."""
    out: dict[str, str] = {}
    for name, info in survey.manifest.columns.items():
        if info.role == "truth" and not include_truth:
            continue
        mmu = f"truth_{name}" if info.role == "truth" else RENAMES.get(name, name.upper())
        if mmu in out:
            raise SurveyError(f"columns {out[mmu]!r} and {name!r} both become {mmu!r}")
        out[mmu] = name
    return out


def draw_defects(rng: np.random.Generator, shape: tuple[int, int, int], rate: float) -> np.ndarray:
    """Bad pixels of one object as int8 codes (B, H, W): CLEAN, COSMIC_RAY, BAD_COLUMN,
    SATURATED (a later kind overwrites an earlier one).

    `rate` scales every expected count (0: none). Cosmic rays hit one band's exposure:
    Poisson(2e-4 H W rate) per band, each a 1-6 pixel random-walk blob. A dead column (full
    height, 1-2 px wide) in one band with probability 0.3 rate. A saturated star core (disc
    of radius 1.5-3.5 px with a vertical bleed trail) in every band with probability
    0.25 rate, centred at least a quarter of the cutout from its centre, off the galaxy.
    """
    b, h, w = shape
    codes = np.zeros(shape, dtype=np.int8)
    for band in range(b):
        for _ in range(rng.poisson(CR_PER_PIXEL * h * w * rate)):
            steps = rng.integers(-1, 2, size=(int(rng.integers(0, 6)), 2))
            walk = np.cumsum(np.vstack([[rng.integers(h), rng.integers(w)], steps]), axis=0)
            codes[band, walk[:, 0].clip(0, h - 1), walk[:, 1].clip(0, w - 1)] = COSMIC_RAY
    if rng.random() < P_COLUMN * rate:
        x = int(rng.integers(w))
        codes[rng.integers(b), :, x : x + (2 if rng.random() < 0.2 else 1)] = BAD_COLUMN
    if rng.random() < P_STAR * rate:
        angle = rng.uniform(0, 2 * np.pi)
        dist = rng.uniform(0.25, 0.42) * min(h, w)
        cy, cx = (h - 1) / 2 + dist * np.sin(angle), (w - 1) / 2 + dist * np.cos(angle)
        radius = rng.uniform(1.5, 3.5)
        yy, xx = np.mgrid[0:h, 0:w]
        core = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        bleed = int(rng.integers(2, 5) * radius)  # saturated charge spills along the column
        core |= (np.abs(xx - round(cx)) < 1) & (np.abs(yy - cy) <= bleed)
        codes[:, core] = SATURATED
    return codes


def ivar_planes(rng: np.random.Generator, sigma: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """(B, H, W) float32 inverse variance: 1/sigma^2 times a linear gradient of +-5% in a
    random direction per band, rescaled so its median over `clean` pixels is 1/sigma^2
    exactly; 0 where not clean. `sigma`: (B,) per-pixel noise; `clean`: (B, H, W) bool."""
    b, h, w = clean.shape
    y, x = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    out = np.zeros(clean.shape, dtype=np.float32)
    for band in range(b):
        angle = rng.uniform(0, 2 * np.pi)
        cy, cx = np.sin(angle), np.cos(angle)
        ramp = 1 + IVAR_GRADIENT * (cy * y + cx * x) / (abs(cy) + abs(cx))
        ok = clean[band]
        ramp /= np.median(ramp[ok]) if ok.any() else 1.0
        out[band] = np.where(ok, ramp / float(sigma[band]) ** 2, 0.0)
    return out


def _objects(survey: Survey) -> dict[str, np.ndarray]:
    """Every 1-D and per-band column of the survey, in global row order."""
    cat = survey.catalogue()
    cat[fmt.PSF_FWHM] = survey.per_band(fmt.PSF_FWHM)
    cat[fmt.SKY_SIGMA] = survey.per_band(fmt.SKY_SIGMA)
    bad = ~(np.isfinite(cat[fmt.RA]) & np.isfinite(cat[fmt.DEC]))
    if bad.any():
        raise SurveyError(
            f"{survey.root}: {int(bad.sum())} objects without ra/dec (first object_id "
            f"{int(cat[fmt.OBJECT_ID][bad][0])}); MMU files are partitioned by position"
        )
    sigma = cat[fmt.SKY_SIGMA]
    if not (np.isfinite(sigma) & (sigma > 0)).all():
        raise SurveyError(f"{survey.root}: image_sky_sigma must be > 0 to give an ivar")
    return cat


def _pixel_file(survey: Survey, cat: dict, rows: np.ndarray, p: MmuParams) -> tuple[dict, dict]:
    """The datasets of one HEALPix file (`rows`: global rows, survey order) and the masked
    pixel count of each of its objects."""
    images = survey.images(rows)  # (n, B, H, W) float32
    n, b = images.shape[:2]
    ivar = np.empty_like(images)
    shared = p.mask_shape == "shared"
    masks = np.empty((n, *images.shape[2:]) if shared else images.shape, dtype=bool)
    masked = {}
    for i, row in enumerate(rows):
        oid = int(cat[fmt.OBJECT_ID][row])
        seq = np.random.SeedSequence([p.seed, oid & 0xFFFF_FFFF_FFFF_FFFF])
        defect_rng, ivar_rng = (np.random.default_rng(s) for s in seq.spawn(2))
        codes = draw_defects(defect_rng, images.shape[1:], p.bad_pixels)
        if shared:  # a pixel bad in any band is bad in all
            codes = np.broadcast_to(codes.max(axis=0), codes.shape)
        bad = codes > CLEAN
        images[i][bad] = GARBAGE[codes[bad]]
        ivar[i] = ivar_planes(ivar_rng, cat[fmt.SKY_SIGMA][row], ~bad)
        masks[i] = ~bad[0] if shared else ~bad
        masked[oid] = int((~masks[i]).sum())
    ra, dec = cat[fmt.RA][rows], cat[fmt.DEC][rows]
    bands = [f"{p.band_prefix}-{band}".encode() for band in survey.bands]
    data = {
        "object_id": mmu_object_ids(cat[fmt.OBJECT_ID][rows], ra, dec, p.id_style),
        "ra": ra.astype(np.float64),
        "dec": dec.astype(np.float64),
        "healpix": healpix.pixels(ra, dec, healpix.MMU_ORDER),
        "image_band": np.tile(np.array(bands, dtype="S"), (n, 1)),
        "image_array": images,
        "image_ivar": ivar,
        "image_mask": masks,
        "image_psf_fwhm": cat[fmt.PSF_FWHM][rows].astype(np.float32),
        "image_scale": np.full((n, b), p.pixel_scale, dtype=np.float32),
    }
    return data, masked


def _catalogue(cat: dict, rows: np.ndarray, names: dict[str, str], truth: bool) -> dict:
    """Catalogue columns of `rows` under their MMU names, plus FLUX_<B> from MAG_<B> where
    the survey has no flux, and truth_object_id (the survey's integer id) with the truth."""
    out = {}
    for mmu, name in names.items():
        values = cat[name][rows]
        out[mmu] = values.astype("S") if values.dtype.kind in "OU" else values
    for mmu in list(out):
        flux = "FLUX_" + mmu[4:]
        if mmu.startswith("MAG_") and flux not in out:
            out[flux] = fmt.mag_to_nmgy(out[mmu]).astype(np.float32)
    if truth:
        out["truth_object_id"] = cat[fmt.OBJECT_ID][rows].astype(np.int64)
    return out


def _write(path: Path, data: dict[str, np.ndarray], p: MmuParams, survey: str) -> None:
    """One MMU file, written under a temporary name and renamed; every dataset chunked by
    rows and compressed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, new_h5_file(tmp) as f:
        f.attrs["source_survey"] = survey
        f.attrs["healpix_nside"] = NSIDE
        f.attrs["healpix_order"] = "nested"
        for name, values in data.items():
            per_chunk = 16 if values.ndim >= 3 else ROWS_PER_CHUNK
            f.create_dataset(
                name,
                data=values,
                chunks=(min(len(values), per_chunk), *values.shape[1:]),
                compression=p.compression,
                shuffle=p.compression is not None,
            )


def _claim(tree: Path, overwrite: bool) -> list[Path]:
    """The MMU files already in `tree`; SurveyError if it holds anything and not `overwrite`."""
    if tree.exists() and any(tree.iterdir()) and not overwrite:
        raise SurveyError(f"{tree}: exists and is not empty; pass overwrite=True (--overwrite)")
    return sorted(tree.glob(f"healpix=*/{FILE_NAME}")) if tree.exists() else []


def write_mmu_tree(
    survey_dir: str | os.PathLike,
    root: str | os.PathLike,
    dataset: str = "ssl-synth",
    config: str = "default",
    band_prefix: str = "sdss",
    id_style: str = "decimal",
    mask_shape: str = "per-band",
    compression: str | None = "gzip",
    bad_pixels: float = 1.0,
    include_truth: bool = False,
    seed: int = 0,
    pixel_scale: float | None = None,
    overwrite: bool = False,
) -> MmuTree:
    """Write the survey at `survey_dir` as the MMU tree ``<root>/<dataset>/<config>``.

    `bad_pixels` scales the defect rates of :func:`draw_defects` (False/0: every mask
    clean, True/1: the defaults); defects and ivar gradients follow from (`seed`,
    object_id) alone. `pixel_scale` (arcsec/px) overrides the manifest's. `overwrite`
    replaces an earlier tree, removing its files for pixels no longer written.
    """
    if id_style not in ID_STYLES:
        raise ConfigError(f"id_style {id_style!r}: expected one of {ID_STYLES}")
    if mask_shape not in MASK_SHAPES:
        raise ConfigError(f"mask_shape {mask_shape!r}: expected one of {MASK_SHAPES}")
    if compression not in COMPRESSIONS:
        raise ConfigError(f"compression {compression!r}: expected one of {COMPRESSIONS}")
    if not float(bad_pixels) >= 0:
        raise ConfigError(f"bad_pixels {bad_pixels!r}: expected a rate >= 0")
    if pixel_scale is not None and not pixel_scale > 0:
        raise ConfigError(f"pixel_scale {pixel_scale!r}: expected arcsec/px > 0")
    survey = Survey(survey_dir)
    scale = float(survey.manifest.pixel_scale_arcsec if pixel_scale is None else pixel_scale)
    params = MmuParams(dataset, config, band_prefix, id_style, mask_shape, compression,
                       float(bad_pixels), bool(include_truth), int(seed), scale)  # fmt: skip
    tree = Path(root) / dataset / config
    before = _claim(tree, overwrite)
    cat = _objects(survey)
    names = column_names(survey, params.include_truth)
    pixels = healpix.pixels(cat[fmt.RA], cat[fmt.DEC], healpix.MMU_ORDER)
    files: dict[Path, int] = {}
    masked: dict[int, int] = {}
    order = np.argsort(pixels, kind="stable")  # stable: survey order within each pixel
    starts = np.flatnonzero(np.diff(pixels[order], prepend=-1))
    for rows in np.split(order, starts[1:]) if len(order) else []:
        pix = pixels[rows[0]]
        data, counts = _pixel_file(survey, cat, rows, params)
        data.update(_catalogue(cat, rows, names, params.include_truth))
        path = tree / f"healpix={int(pix)}" / FILE_NAME
        _write(path, data, params, survey.manifest.survey)
        files[path] = len(rows)
        masked.update(counts)
    for stale in set(before) - set(files):
        stale.unlink()
        if not any(stale.parent.iterdir()):
            stale.parent.rmdir()
    return MmuTree(tree, files, len(cat[fmt.OBJECT_ID]), masked, params, names)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ssl_hpc.data.synth.mmu_tree",
        description="Rewrite an ssl-hpc survey as a Multimodal Universe HEALPix tree.",
    )
    p.add_argument("--survey", required=True, help="ssl-hpc survey directory (manifest.json)")
    p.add_argument("--out", required=True, help="MMU root; writes OUT/DATASET/CONFIG/healpix=N")
    p.add_argument("--dataset", default="ssl-synth")
    p.add_argument("--config", default="default")
    p.add_argument("--band-prefix", default="sdss", help="image_band is b'PREFIX-<band>'")
    p.add_argument("--id-style", choices=ID_STYLES, default="decimal")
    p.add_argument("--mask-shape", choices=MASK_SHAPES, default="per-band")
    p.add_argument("--compression", choices=["gzip", "lzf", "none"], default="gzip")
    p.add_argument("--bad-pixels", type=float, default=1.0, help="defect rate scale (0: none)")
    p.add_argument("--include-truth", action="store_true", help="add truth_* columns")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pixel-scale", type=float, default=None, help="arcsec/px override")
    p.add_argument("--overwrite", action="store_true", help="replace an existing tree")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write the tree and print what was written; exit 2 on a bad input."""
    a = _parser().parse_args(argv)
    try:
        t = write_mmu_tree(
            a.survey, a.out, a.dataset, a.config, a.band_prefix, a.id_style, a.mask_shape,
            None if a.compression == "none" else a.compression, a.bad_pixels,
            a.include_truth, a.seed, a.pixel_scale, a.overwrite,
        )  # fmt: skip
    except SslHpcError as e:
        print(f"mmu_tree: error: {e}", file=sys.stderr)
        return 2
    counts = np.array(list(t.masked_pixels.values()) or [0])
    rows = np.array(list(t.files.values()) or [0])
    print(
        f"{t.root}: {len(t.files)} files (nside {NSIDE} nested, {rows.min()}-{rows.max()} rows "
        f"each), {t.n_objects} objects; masked pixels per object: median "
        f"{np.median(counts):.0f}, max {counts.max()}, none in {int((counts == 0).sum())}"
    )
    print(f"params: {asdict(t.params)}")
    print(f"columns: {', '.join(t.columns)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
