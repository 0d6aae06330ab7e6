"""Reading an array input's images for one shard: blocks of rows per file, then per object
the clean-pixel mask, the noise level, the fill of bad pixels, the crop and resampling.

Bad pixels (MMU ``image_mask`` False, ``image_ivar`` 0, NaN or inf) never reach a shard:
each is replaced by the band's local sky (the median of the clean pixels in the cutout's
outer frame) plus Gaussian noise at the band's level, drawn from a generator seeded by the
object id, so a rerun fills them identically. Their count per object is stored as
``n_masked_pixels`` (inside the stored crop, all bands). The noise level stored per band
(``image_sky_sigma``) is 1/sqrt(median ivar over clean pixels), carried through the
resampling exactly; without ivar (array HDF5), the robust sky sigma of the stored cutout.
"""

from __future__ import annotations

from dataclasses import dataclass

import h5py
import numpy as np

from ..cutouts import CutoutError, area_weights, centre_crop, resample_area, sky_sigma
from .arrays import MMU_IVAR, MMU_MASK, MMU_SCALE, ArraySource
from .catalogue import Reject

READ_ROWS = 64  # rows read per block: bounds memory at a few tens of MB per worker
SCALE_TOLERANCE = 0.01
N_MASKED = "n_masked_pixels"


@dataclass
class LoadedRows:
    """A shard's images and per-band facts, with the objects that could not be read."""

    images: np.ndarray  # (n, B, S, S) float32
    sky_sigma: np.ndarray  # (n, B) float32
    psf_fwhm: np.ndarray  # (n, B) float32 arcsec
    n_masked: np.ndarray  # (n,) int64
    keep: np.ndarray  # (n,) bool
    rejects: list[Reject]


def load_rows(
    source: ArraySource, locator: np.ndarray, object_ids: np.ndarray, skip: bool, progress
) -> LoadedRows:
    """Read and prepare the rows `locator` ((n, 2): file index, row) of `source`.

    A row that cannot be used raises CutoutError (fail mode) or becomes a reject (skip);
    an unreadable block is retried row by row so only its bad rows are lost.
    """
    n, b, size = len(object_ids), len(source.band_index), source.size
    out = LoadedRows(
        images=np.zeros((n, b, size, size), np.float32),
        sky_sigma=np.zeros((n, b), np.float32),
        psf_fwhm=np.tile(np.asarray(source.psf_fwhm, np.float32), (n, 1)),
        n_masked=np.zeros(n, np.int64),
        keep=np.zeros(n, bool),
        rejects=[],
    )
    for file_index in np.unique(locator[:, 0]):
        path = source.files[int(file_index)]
        task_rows = np.flatnonzero(locator[:, 0] == file_index)
        task_rows = task_rows[np.argsort(locator[task_rows, 1], kind="stable")]
        with h5py.File(path, "r") as f:
            for lo in range(0, len(task_rows), READ_ROWS):
                block = task_rows[lo : lo + READ_ROWS]
                progress.check()
                _load_block(f, path, source, block, locator[block, 1], object_ids, skip, out)
                progress.tick(len(block))
    return out


def _load_block(f, path, source, task_rows, file_rows, object_ids, skip, out) -> None:
    try:
        arrays = read_block(f, source, file_rows)
    except (OSError, ValueError) as e:
        if len(task_rows) == 1:
            oid = int(object_ids[task_rows[0]])
            _fail(CutoutError(oid, path, f"row {file_rows[0]}: unreadable ({e})"), skip, out)
            return
        for t, r in zip(task_rows, file_rows):  # isolate the unreadable rows
            _load_block(f, path, source, np.array([t]), np.array([r]), object_ids, skip, out)
        return
    for j, t in enumerate(task_rows):
        oid = int(object_ids[t])
        try:
            image, sigma, masked = prepare(
                source, oid, path, **{k: v[j] for k, v in arrays.items()}
            )
        except CutoutError as e:
            _fail(e, skip, out)
            continue
        out.images[t], out.sky_sigma[t], out.n_masked[t], out.keep[t] = image, sigma, masked, True
        if "psf" in arrays:
            out.psf_fwhm[t] = arrays["psf"][j]


def _fail(error: CutoutError, skip: bool, out: LoadedRows) -> None:
    if not skip:
        raise error
    out.rejects.append(Reject(error.object_id, error.file, error.reason))


def read_block(f: h5py.File, source: ArraySource, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The images (and MMU's mask, ivar, scale, psf) of sorted `rows` of one file, the
    selected bands only, bands first: {"image": (n, B, H, W), ...}."""
    span = slice(int(rows[0]), int(rows[-1]) + 1)
    contiguous = len(rows) == span.stop - span.start
    bands = list(source.band_index)

    def take(name: str) -> np.ndarray:
        ds = f[name]
        data = ds[span] if contiguous else ds[rows.tolist()]
        if name == source.image_dataset and source.channels_last:
            data = np.moveaxis(data, -1, 1)
        if data.ndim >= 2 and not (name == MMU_MASK and data.ndim == 3):
            data = data if _in_order(bands, data.shape[1]) else data[:, bands]
        return data

    arrays = {"image": take(source.image_dataset).astype(np.float32, copy=False)}
    if source.kind == "mmu":
        for key, name in (
            ("ivar", MMU_IVAR),
            ("mask", MMU_MASK),
            ("scale", MMU_SCALE),
            ("psf", "image_psf_fwhm"),
        ):
            if name in f:
                arrays[key] = take(name)
        if "mask" in arrays and arrays["mask"].ndim == 3:  # one mask for every band
            arrays["mask"] = np.broadcast_to(arrays["mask"][:, None], arrays["image"].shape)
    return arrays


def _in_order(bands: list[int], planes: int) -> bool:
    """True if `bands` selects every plane in stored order (no copy needed)."""
    return bands == list(range(planes))


def prepare(
    source: ArraySource,
    object_id: int,
    path: str,
    image: np.ndarray,
    ivar: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    scale: np.ndarray | None = None,
    psf: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """One object's stored cutout (B, S, S), noise level (B,) and masked-pixel count from
    its (B, H, W) planes; CutoutError naming the object and file if it cannot be used."""
    clean = np.isfinite(image)
    if mask is not None:
        clean &= mask.astype(bool)
    if ivar is not None:
        clean &= np.isfinite(ivar) & (ivar > 0)
    elif not clean.all():
        n_bad = int((~clean).sum())
        raise CutoutError(object_id, path, f"{n_bad} NaN or inf pixels of {image.size}")
    crop = crop_of(source, object_id, path, scale)
    h, w = image.shape[1:]
    if crop > min(h, w):
        raise CutoutError(object_id, path, f"image is {h}x{w} px, smaller than its {crop} px crop")
    sigma = None
    if ivar is not None:
        sigma = noise_from_ivar(ivar, clean, object_id, path)
        image = fill_bad_pixels(image, clean, sigma, object_id)
    masked = int((~centre_crop(clean, crop, object_id, path)).sum())
    cut = centre_crop(image, crop, object_id, path)
    if crop != source.size:
        cut = resample_area(cut, source.size, conserve_flux=True)
        if sigma is not None:
            sigma = sigma * resampled_noise(crop, source.size)
    if sigma is None:
        sigma = sky_sigma(cut)
    return cut.astype(np.float32, copy=False), sigma.astype(np.float32), masked


def crop_of(source: ArraySource, object_id: int, path: str, scale: np.ndarray | None) -> int:
    """The object's crop in input px: the source's, or the field `size` x `out_scale`
    covers at the object's own ``image_scale`` when the source reads it per object."""
    if source.in_scale is not None:
        return source.crop
    if scale is None:
        raise CutoutError(object_id, path, "no image_scale; give the input pixel scale")
    s = np.asarray(scale, dtype=np.float64)
    if not (np.isfinite(s).all() and s.min() > 0):
        raise CutoutError(object_id, path, f"image_scale {s.tolist()} is not positive")
    if s.max() - s.min() > SCALE_TOLERANCE * s.min():
        raise CutoutError(object_id, path, f"bands at different pixel scales {s.tolist()}")
    if source.crop:
        expected = source.out_scale * source.size / source.crop
        if abs(s[0] - expected) > SCALE_TOLERANCE * expected:
            raise CutoutError(
                object_id,
                path,
                f"image_scale {s[0]:.4g} differs from the survey's {expected:.4g} arcsec/px; "
                "give --out-pixel-scale to resample every object to one scale",
            )
        return source.crop
    return int(round(source.size * source.out_scale / s[0]))


def noise_from_ivar(ivar: np.ndarray, clean: np.ndarray, object_id: int, path: str) -> np.ndarray:
    """(B,) per-pixel noise sigma: 1/sqrt of the median inverse variance of clean pixels."""
    sigma = np.empty(ivar.shape[0], np.float64)
    for band in range(ivar.shape[0]):
        good = ivar[band][clean[band]]
        if good.size == 0:
            raise CutoutError(object_id, path, f"band plane {band} has no clean pixel")
        sigma[band] = 1.0 / np.sqrt(float(np.median(good)))
    return sigma


def fill_bad_pixels(
    image: np.ndarray, clean: np.ndarray, sigma: np.ndarray, object_id: int
) -> np.ndarray:
    """`image` with its non-clean pixels replaced by the local sky plus noise at `sigma`
    (a copy if any are replaced). The generator is seeded by the object id alone."""
    if clean.all():
        return image
    b, h, w = image.shape
    border = max(1, min(h, w) // 8)
    frame = np.ones((h, w), bool)
    frame[border : h - border, border : w - border] = False
    word = int(object_id) % (1 << 64)
    rng = np.random.default_rng([0x6D61736B, word >> 32, word & 0xFFFFFFFF])
    out = image.copy()
    for band in range(b):
        ok = clean[band]
        if ok.all():
            continue
        sky_pixels = image[band][ok & frame]
        sky = np.median(sky_pixels if sky_pixels.size else image[band][ok])
        bad = ~ok
        out[band][bad] = sky + sigma[band] * rng.standard_normal(int(bad.sum()))
    return out


def resampled_noise(n_in: int, n_out: int) -> float:
    """Factor by which area resampling with flux summed (`resample_area`) scales white
    noise: per output pixel (n_in/n_out)^2 * |w_row| * |w_col|, median over the pixels."""
    a = np.sqrt((area_weights(n_in, n_out) ** 2).sum(axis=1))
    return float(np.median(np.outer(a, a)) * (n_in / n_out) ** 2)
