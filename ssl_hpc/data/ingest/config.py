"""What ``ssl-hpc ingest`` reads and how it writes the survey: `IngestConfig`."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ...errors import ConfigError
from .. import format as fmt
from ..cutouts import IMAGE_FORMATS

ON_ERROR = ("fail", "skip")
#: Inputs that are arrays in HDF5 files rather than a catalogue plus a file per object.
ARRAY_FORMATS = ("mmu", "hdf5")
AXIS_ORDERS = ("auto", "NCHW", "NHWC")

#: Per-format image_dtype and flux_unit where the config says "auto" / None (else FITS's).
DEFAULT_DTYPE = {"png": "float16", "jpeg": "float16"}  # 8 bits fit float16's 11-bit mantissa
DEFAULT_FLUX_UNIT = {"png": "display (8-bit / 255)", "jpeg": "display (8-bit / 255)"}


@dataclass(frozen=True)
class IngestConfig:
    """What ``ssl-hpc ingest`` reads and how it writes the survey.

    Two kinds of input: a catalogue plus an image file per object (fits, fits-per-band,
    png, jpeg), or arrays in HDF5 files that hold the catalogue too (mmu: a Multimodal
    Universe tree; hdf5: files with an (N, bands, H, W) or (N, H, W, bands) dataset).
    Column options: None auto-detects a common spelling (see SPELLINGS), "" means the
    catalogue has no such column. `crop` and `resize` are in pixels. `pixel_scale_arcsec`
    is the input images' scale (default: MMU's image_scale, else SDSS's); the survey's is
    larger by crop / resize, or `out_pixel_scale` when given.
    `psf_fwhm` (arcsec) is one value for every band or one per band; empty means unknown
    (NaN). `image_dtype` "auto" is float16 for 8-bit images and float32 for FITS;
    `flux_unit` None is "display (8-bit / 255)" for 8-bit images and "unknown" for FITS.
    """

    images: str
    """directory holding the image files; for mmu the tree's root (or one dataset's
    directory, or one file); for hdf5 one file or a directory of .h5/.hdf5 files"""
    out: str
    """survey directory to create (or resume)"""
    catalog: str = ""
    """catalogue, a row per object (fits, png, jpeg inputs; mmu and hdf5 files carry their
    own): CSV, TSV, ECSV, whitespace text (.txt, .dat; any of them gzipped) or a FITS
    table"""
    id_column: str = ""
    """column of unique integer object ids; mmu: object_id (strings, see stable_ids);
    hdf5: found by common spellings (object_id, objid, id) unless named"""
    bands: tuple[str, ...] = ()
    """comma-separated band names in the order of the cube's planes or the image's R,G,B
    channels (e.g. i,r,g for SDSS composites); mmu: a subset and order of image_band's
    names, with or without their survey prefix (g or hsc-g); empty: all, in file order"""
    crop: int = 0
    """side of the centre crop, input px; 0 (mmu, hdf5): the whole image"""
    resize: int | None = None
    """resample the crop to this many px by area averaging (FITS and mmu flux is summed,
    so conserved); none: keep the crop (or as out_pixel_scale implies)"""
    pixel_scale_arcsec: float | None = None
    """input pixel scale in arcsec/px (SDSS 0.396, HSC 0.168); none: mmu's image_scale,
    else SDSS's"""
    out_pixel_scale: float | None = None
    """resample to this many arcsec/px, from each object's own input scale (mmu:
    image_scale); none: the survey's scale is the input's times crop/resize"""
    ra_column: str | None = None
    """right ascension in degrees (J2000); none: found by common spellings; '': there is
    none"""
    dec_column: str | None = None
    """declination in degrees (J2000); none: found by common spellings; '': there is none"""
    ebv_column: str | None = None
    """Galactic reddening E(B-V) in mag; none: found by common spellings; '': none"""
    z_column: str | None = None
    """spectroscopic redshift, stored as z_spec (a label); none: found by spelling; '':
    none"""
    label_columns: tuple[str, ...] = ()
    """comma-separated columns to mark as labels (targets of downstream tasks); z_spec
    and gz2_* columns are labels anyway"""
    image_format: str = "auto"
    """auto (mmu or hdf5 without a catalogue, else from the extension of the <id>.*
    files), mmu (Multimodal Universe HDF5 tree), hdf5 (array files), fits (a band cube
    per object), fits-per-band (a FITS file per object and band), png or jpeg (8-bit
    colour composites)"""
    image_dataset: str = ""
    """hdf5: the image dataset's name; empty: the one of images, image_array, image,
    cutouts present"""
    axis_order: str = "auto"
    """hdf5: NCHW or NHWC (bands first or last); auto: from which axis has len(bands)"""
    pattern: str | None = None
    """file name under images with {id} and, for fits-per-band, {band}; none: {id}.<ext>
    as found ({id}-{band}.fits for fits-per-band)"""
    psf_fwhm: tuple[float, ...] = ()
    """PSF FWHM in arcsec: one value for all bands or one per band; empty: unknown (NaN)"""
    image_dtype: str = "auto"
    """stored pixel type: auto (float16 for 8-bit images, float32 for FITS), float16
    (overflows above 65504) or float32"""
    flux_unit: str | None = None
    """unit of the pixel values; none: 'display (8-bit / 255)' for PNG/JPEG, 'unknown'
    for FITS"""
    rows_per_shard: int = 512
    """catalogue rows per shard"""
    healpix_order: int | None = None
    """partition the shards by sky area: each holds rows of one NESTED HEALPix pixel at
    this order (4 = Multimodal Universe's nside 16); none: shards in input order"""
    workers: int = 1
    """processes reading images in parallel, a shard each (1: in this process)"""
    on_error: str = "fail"
    """fail: stop at the first bad object; skip: leave bad objects out and list them in
    OUT/rejects.csv"""
    survey: str | None = None
    """the survey's name in the manifest; none: the out directory's name"""

    def __post_init__(self) -> None:
        for name in ("images", "out", "catalog"):
            object.__setattr__(self, name, os.fspath(getattr(self, name)))
        for name in ("bands", "label_columns"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "psf_fwhm", tuple(float(x) for x in self.psf_fwhm))
        self._validate()

    @property
    def input_pixel_scale(self) -> float:
        """The cutouts' input scale in arcsec/px: as given, else SDSS's."""
        return self.pixel_scale_arcsec or fmt.SDSS_PIXEL_SCALE

    @property
    def arrays(self) -> bool:
        """True if the input is HDF5 arrays (mmu or hdf5), not a file per object."""
        return self.image_format in ARRAY_FORMATS or (
            self.image_format == "auto" and not self.catalog
        )

    def _validate(self) -> None:
        bands = len(self.bands)
        formats = (*ARRAY_FORMATS, *IMAGE_FORMATS)
        _require(
            self.image_format in ("auto", *formats),
            f"image_format {self.image_format!r}: expected auto or one of {formats}",
        )
        _require(self.images != "", "images: required")
        _require(self.out != "", "out: required")
        _require(
            self.axis_order in AXIS_ORDERS,
            f"axis_order {self.axis_order!r}: expected one of {AXIS_ORDERS}",
        )
        if not self.arrays:
            _require(self.catalog != "", f"catalog: required for {self.image_format} images")
            _require(self.id_column != "", "id_column: required")
            _require(bands > 0, "bands: at least one band is required")
            _require(
                self.crop > 0,
                f"crop {self.crop}: cutout files need --crop, the side of the centre crop in "
                "px (0, the whole image, is for mmu and hdf5 arrays, all one size)",
            )
        if self.image_format == "hdf5":
            _require(bands > 0, "bands: required for hdf5 (one name per image plane)")
        _require(
            self.image_dtype in ("auto", *fmt.IMAGE_DTYPES),
            f"image_dtype {self.image_dtype!r}: expected auto or one of {fmt.IMAGE_DTYPES}",
        )
        _require(
            self.on_error in ON_ERROR, f"on_error {self.on_error!r}: expected one of {ON_ERROR}"
        )
        _require(len(set(self.bands)) == bands, f"bands {list(self.bands)}: a band is repeated")
        _require(self.crop >= 0, f"crop {self.crop}: must be a number of pixels (0: all)")
        _require(self.resize is None or self.resize > 0, f"resize {self.resize}: must be positive")
        for name in ("pixel_scale_arcsec", "out_pixel_scale"):
            value = getattr(self, name)
            _require(value is None or value > 0, f"{name} {value}: must be > 0 arcsec/px")
        _require(
            self.healpix_order is None or 0 <= self.healpix_order <= 29,
            f"healpix_order {self.healpix_order}: expected 0..29 (nside = 2**order)",
        )
        _require(
            len(self.psf_fwhm) in (0, 1, bands),
            f"psf_fwhm: {len(self.psf_fwhm)} values for {bands} bands; give 1 or one per band",
        )
        _require(self.rows_per_shard > 0, f"rows_per_shard {self.rows_per_shard}: must be positive")
        _require(self.workers > 0, f"workers {self.workers}: must be positive")


def resampled_size(crop: int, in_scale: float, out_scale: float) -> int:
    """Pixels across a `crop`-px window at `in_scale` arcsec/px once resampled to
    `out_scale` arcsec/px; a ConfigError naming out_pixel_scale when that is under 1 px."""
    size = round(crop * in_scale / out_scale)
    _require(
        size >= 1,
        f"out_pixel_scale {out_scale}: coarser than the whole {crop} px crop at "
        f'{in_scale}"/px (under 1 px)',
    )
    return size


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)
