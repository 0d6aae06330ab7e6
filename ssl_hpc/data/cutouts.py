"""Reading one object's cutout from FITS or 8-bit colour images into a (bands, H, W) array.

Supported layouts, chosen by ``CutoutSpec.format``:

- ``fits``: one file per object holding a band cube (B, H, W) in the primary HDU or the
  first image HDU with data (a 2-D image is a cube of one band).
- ``fits-per-band``: one 2-D FITS image per object and band, named by a pattern such as
  ``{id}-{band}.fits``.
- ``png`` / ``jpeg``: 8-bit colour composites. Channel i (R, G, B) becomes band i of the
  spec's band list, so the usual SDSS composite (R=i, G=r, B=g) is read with bands
  ``("i", "r", "g")``. Values are scaled to [0, 1]; grayscale is one band; palette images
  are expanded to RGB; an alpha channel is dropped only if every pixel is opaque.

Every cutout is centre-cropped to ``crop`` px and optionally resampled to ``resize`` px by
exact area averaging (each output pixel is the overlap-weighted mean of the input pixels
under it; for integer factors this is the block mean). FITS pixels are fluxes, so a
resampled FITS pixel is the *sum* over its area (total flux is conserved); 8-bit pixels are
display intensities, so they are averaged.
"""

from __future__ import annotations

import string
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from PIL import Image

try:  # astropy's tile decompressor (.fits.fz) raises its own class, a bare Exception
    from astropy.io.fits.hdu.compressed._compression import CfitsioException
except ImportError:  # another astropy layout: its errors are then caught as OSError
    CfitsioException = OSError

from ..errors import IngestError

IMAGE_FORMATS = ("fits", "fits-per-band", "png", "jpeg")

#: File extension (lower case, from the first dot) -> single-file image format.
EXTENSIONS = {
    ".fits": "fits",
    ".fit": "fits",
    ".fts": "fits",
    ".fits.gz": "fits",
    ".fits.fz": "fits",
    ".png": "png",
    ".jpeg": "jpeg",
    ".jpg": "jpeg",
}

_IMAGE_HDUS = (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)
#: pixels (all bands) a cutout file may hold; checked from its header before decoding, so a
#: compressed or forged file cannot make ingest allocate gigabytes (cutouts are ~10^5)
MAX_CUTOUT_PIXELS = 1 << 26
#: what astropy raises on a damaged file; zlib and CFITSIO's: a damaged .fits.gz / .fits.fz
_FITS_ERRORS = (
    OSError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    EOFError,
    zlib.error,
    CfitsioException,
)
_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class CutoutError(IngestError):
    """One object's cutout cannot be ingested: names the object, the file and the reason."""

    def __init__(self, object_id: int, file: str, reason: str) -> None:
        # all three in args, so the error survives pickling out of a worker process
        super().__init__(object_id, file, reason)
        self.object_id = object_id
        self.file = file
        self.reason = reason

    def __str__(self) -> str:
        return f"object {self.object_id} ({self.file}): {self.reason}"


@dataclass(frozen=True)
class CutoutSpec:
    """Where an object's image files are and how to turn them into a cutout.

    `pattern` is a ``str.format`` template relative to `images_dir` with ``{id}`` (the
    object id) and, for ``fits-per-band``, ``{band}``. `crop` and `resize` are in pixels.
    """

    images_dir: str
    format: str
    pattern: str
    bands: tuple[str, ...]
    crop: int
    resize: int | None = None

    def __post_init__(self) -> None:
        if self.format not in IMAGE_FORMATS:
            raise IngestError(f"image format {self.format!r}: expected one of {IMAGE_FORMATS}")
        fields = pattern_fields(self.pattern)
        if "id" not in fields or fields - {"id", "band"}:
            raise IngestError(
                f"pattern {self.pattern!r}: must contain {{id}}, and no field but {{id}}, {{band}}"
            )
        if (self.format == "fits-per-band") != ("band" in fields):
            raise IngestError(
                f"pattern {self.pattern!r}: {{band}} is required for fits-per-band "
                "and not allowed for single-file formats"
            )
        try:  # a format spec or conversion the integer ids cannot take fails here, once
            self.pattern.format(id=0, band=self.bands[0] if self.bands else "g")
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
            raise IngestError(f"pattern {self.pattern!r}: cannot name a file ({e})") from e

    @property
    def size(self) -> int:
        """Side of the stored cutout in pixels."""
        return self.resize or self.crop

    @property
    def conserve_flux(self) -> bool:
        """Whether resampling sums flux (FITS) rather than averaging intensity (8-bit)."""
        return self.format.startswith("fits")

    def paths(self, object_id: int) -> list[Path]:
        """The file(s) holding `object_id`: one, or one per band for fits-per-band."""
        root = Path(self.images_dir)
        if self.format == "fits-per-band":
            return [root / self.pattern.format(id=object_id, band=b) for b in self.bands]
        return [root / self.pattern.format(id=object_id)]


def pattern_fields(pattern: str) -> set[str]:
    """Names of the ``{field}`` placeholders in a filename pattern."""
    try:
        return {name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None}
    except ValueError as e:
        raise IngestError(f"pattern {pattern!r}: {e}") from e


def format_of(path: str) -> str | None:
    """The single-file image format a file name's extension implies, or None."""
    name = Path(path).name.lower()
    dot = name.find(".")
    return EXTENSIONS.get(name[dot:]) if dot >= 0 else None


def load_cutout(spec: CutoutSpec, object_id: int) -> np.ndarray:
    """One object's cutout as float32 (B, size, size): read, check, centre-crop, resample.

    Raises CutoutError naming the object and file for a missing or unreadable file, a band
    count that differs from ``spec.bands``, an image smaller than the crop, or NaN/inf
    pixels inside the crop (pixels outside it are never stored, so they do not matter).
    """
    paths = spec.paths(object_id)
    file = str(Path(spec.images_dir) / spec.pattern.format(id=object_id, band="{band}"))
    for path in paths:
        if not path.is_file():
            raise CutoutError(object_id, str(path), "missing file")
    if spec.format == "fits":
        image = read_fits_image(paths[0], object_id)
    elif spec.format == "fits-per-band":
        image = stack_bands(
            [read_fits_image(p, object_id) for p in paths], spec.bands, object_id, file
        )
    else:
        image = read_8bit_image(paths[0], object_id)
    check_band_count(image, spec.bands, object_id, file, spec.format)
    image = centre_crop(image, spec.crop, object_id, file)
    check_finite(image, object_id, file)
    if spec.resize and spec.resize != spec.crop:
        image = resample_area(image, spec.resize, conserve_flux=spec.conserve_flux)
    return image


def read_fits_image(path: Path, object_id: int) -> np.ndarray:
    """The first image HDU with data in a FITS file, as float32 (B, H, W) (2-D -> B = 1)."""
    try:
        with fits.open(path, memmap=False) as hdul:
            images = (h for h in hdul if isinstance(h, _IMAGE_HDUS) and h.shape)
            hdu = next(images, None)
            if hdu is None:
                raise CutoutError(object_id, str(path), "FITS file has no image HDU with data")
            pixels = int(np.prod(hdu.shape))  # from the header: before anything expands
            if pixels > MAX_CUTOUT_PIXELS:
                shape = "x".join(map(str, hdu.shape))
                raise CutoutError(
                    object_id,
                    str(path),
                    f"FITS image is {shape} = {pixels} pixels, over the limit of "
                    f"{MAX_CUTOUT_PIXELS} for a cutout",
                )
            data = np.asarray(hdu.data, dtype=np.float32)
    except _FITS_ERRORS as e:
        raise CutoutError(object_id, str(path), f"unreadable FITS ({e})") from e
    while data.ndim > 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise CutoutError(
            object_id, str(path), f"FITS image has shape {data.shape}; expected 2-D or 3-D"
        )
    return data


def stack_bands(
    images: list[np.ndarray], bands: tuple[str, ...], object_id: int, file: str
) -> np.ndarray:
    """Per-band (1, H, W) images stacked into (B, H, W); all bands must share one shape."""
    for band, image in zip(bands, images):
        if image.shape[0] != 1:
            raise CutoutError(
                object_id, file, f"band {band} file holds {image.shape[0]} planes; expected 1"
            )
        if image.shape != images[0].shape:
            raise CutoutError(
                object_id,
                file,
                f"band {band} is {image.shape[1]}x{image.shape[2]} px, band {bands[0]} is "
                f"{images[0].shape[1]}x{images[0].shape[2]} px",
            )
    return np.concatenate(images, axis=0)


def read_8bit_image(path: Path, object_id: int) -> np.ndarray:
    """A PNG/JPEG as float32 (C, H, W) in [0, 1]: C = 3 for colour, 1 for grayscale."""
    try:
        with Image.open(path) as im:
            width, height = im.size  # from the header: before anything is decoded
            if width * height > MAX_CUTOUT_PIXELS:
                raise CutoutError(
                    object_id,
                    str(path),
                    f"image is {width}x{height} pixels, over the limit of {MAX_CUTOUT_PIXELS} "
                    "for a cutout",
                )
            im.load()
            pixels = _to_rgb_or_gray(im, object_id, path)
    except _IMAGE_ERRORS as e:
        raise CutoutError(object_id, str(path), f"unreadable image ({e})") from e
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32) / np.float32(255)


def _to_rgb_or_gray(im: Image.Image, object_id: int, path: Path) -> np.ndarray:
    """Pixels of an 8-bit image as uint8 (H, W, 3) or (H, W); alpha only if fully opaque."""
    if im.mode in ("RGB", "L"):
        return np.asarray(im)
    if im.mode in ("RGBA", "LA", "PA", "P"):
        im = im.convert("LA" if im.mode == "LA" else "RGBA")
        pixels = np.asarray(im)
        if (pixels[..., -1] != 255).any():
            raise CutoutError(
                object_id, str(path), f"{im.mode} image has transparent pixels; no sky value there"
            )
        pixels = pixels[..., :-1]
        return pixels[..., 0] if pixels.shape[-1] == 1 else pixels
    if im.mode in ("1", "CMYK", "YCbCr"):
        return np.asarray(im.convert("L" if im.mode == "1" else "RGB"))
    raise CutoutError(
        object_id, str(path), f"image mode {im.mode!r} is not 8-bit gray or colour; use FITS"
    )


def check_band_count(
    image: np.ndarray, bands: tuple[str, ...], object_id: int, file: str, image_format: str
) -> None:
    """CutoutError unless the image has one plane per requested band."""
    if image.shape[0] != len(bands):
        what = "channels" if image_format in ("png", "jpeg") else "bands"
        raise CutoutError(
            object_id,
            file,
            f"wrong number of bands: image has {image.shape[0]} {what}, "
            f"{len(bands)} bands requested ({','.join(bands)})",
        )


def centre_crop(image: np.ndarray, size: int, object_id: int, file: str) -> np.ndarray:
    """The central (B, size, size) of a (B, H, W) image.

    The crop's centre pixel (size // 2) is the image's centre pixel (H // 2, W // 2), the
    convention of cutout services that put the target at pixel H // 2.
    """
    _, h, w = image.shape
    if h < size or w < size:
        raise CutoutError(object_id, file, f"image is {h}x{w} px, smaller than the {size} px crop")
    y0 = h // 2 - size // 2
    x0 = w // 2 - size // 2
    return image[:, y0 : y0 + size, x0 : x0 + size]


def check_finite(image: np.ndarray, object_id: int, file: str) -> None:
    """CutoutError counting NaN and inf pixels, if there are any."""
    n_nan = int(np.isnan(image).sum())
    n_inf = int(np.isinf(image).sum())
    if n_nan or n_inf:
        raise CutoutError(
            object_id, file, f"{n_nan} NaN and {n_inf} inf pixels of {image.size} in the crop"
        )


def area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of exact area resampling along one axis; rows sum to 1.

    Output pixel i covers input coordinates [i, i + 1) * n_in / n_out; its weight on input
    pixel j is the length of the overlap with [j, j + 1), normalised.
    """
    edges = np.arange(n_out + 1) * (n_in / n_out)
    left = np.maximum(edges[:-1, None], np.arange(n_in)[None, :])
    right = np.minimum(edges[1:, None], np.arange(1, n_in + 1)[None, :])
    overlap = np.clip(right - left, 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def resample_area(image: np.ndarray, size: int, conserve_flux: bool) -> np.ndarray:
    """A square (B, N, N) image resampled to (B, size, size) float32 by area averaging.

    With `conserve_flux` each output pixel holds the flux summed over its area (the mean
    times (N / size)^2), so the image's total is unchanged; otherwise it holds the mean.
    """
    n = image.shape[-1]
    w = area_weights(n, size)
    out = w @ image.astype(np.float64) @ w.T  # separable: rows, then columns, per band
    if conserve_flux:
        out *= (n / size) ** 2
    return out.astype(np.float32)


def sky_sigma(image: np.ndarray, border: int | None = None) -> np.ndarray:
    """Robust per-band sky noise of a (B, H, W) image as float32 (B,), in its pixel units.

    1.4826 * MAD (the Gaussian-equivalent sigma) of the pixels in the outer frame of width
    `border` px (default max(1, min(H, W) // 8)), where the sky dominates a centred cutout;
    the median absolute deviation subtracts the frame's median first, so a sky level offset
    does not matter, and a neighbour in the frame barely does.
    """
    _, h, w = image.shape
    border = border or max(1, min(h, w) // 8)
    frame = np.ones((h, w), dtype=bool)
    frame[border : h - border, border : w - border] = False
    pixels = image[:, frame].astype(np.float64)
    med = np.median(pixels, axis=1, keepdims=True)
    return (1.4826 * np.median(np.abs(pixels - med), axis=1)).astype(np.float32)
