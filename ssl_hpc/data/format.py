"""The survey shard format: names, dtypes and roles every stage agrees on.

A survey is a directory holding ``manifest.json`` and HDF5 shards ``shard-00000.h5``, ...
Each shard holds N objects as root-level datasets (Multimodal Universe conventions):

==================  ================  =========================================================
dataset             shape, dtype      meaning
==================  ================  =========================================================
object_id           (N,) int64        unique survey-wide id
ra, dec             (N,) float64      J2000 degrees; NaN if unknown
image_array         (N, B, H, W)      sky-subtracted flux per pixel (``flux_unit``), float16/32
image_band          (B,) bytes        band names, e.g. b"u" ... b"z"
image_psf_fwhm      (N, B) float32    PSF FWHM per band in arcsec; NaN if unknown
image_sky_sigma     (N, B) float32    per-pixel sky noise sigma per band, in ``flux_unit``
<column>            (N,)              catalogue columns: ebv, z_spec (NaN = no spectrum),
                                      gz2_* vote fractions (NaN = not classified), ...
healpix             (N,) int64        partitioned surveys: NESTED HEALPix pixel at the
                                      manifest's ``partition.order``; one pixel per shard
==================  ================  =========================================================

Every column's role is in the manifest: ``label`` (a target for downstream tasks, NaN where
unknown), ``catalogue`` (known for every object), ``truth`` (synthetic ground truth, never a
training input). The file attributes repeat the survey-level facts so a lone shard is
self-describing.
"""

from __future__ import annotations

import numpy as np

#: 2: optional HEALPix partition (manifest ``partition``, shard ``healpix``). Version 1
#: manifests are read as unpartitioned.
SCHEMA_VERSION = 2
MANIFEST_NAME = "manifest.json"
SHARD_PATTERN = "shard-{index:05d}.h5"

IMAGE = "image_array"
BANDS = "image_band"
PSF_FWHM = "image_psf_fwhm"
SKY_SIGMA = "image_sky_sigma"
OBJECT_ID = "object_id"
RA = "ra"
DEC = "dec"
HEALPIX = "healpix"  # catalogue column of partitioned surveys: NESTED pixel at their order
SOURCE_ID = "source_id"  # an ingested survey's own (string) object ids

#: Datasets every shard has; any other root 1-D dataset of length N is a catalogue column.
CORE_DATASETS = (OBJECT_ID, RA, DEC, IMAGE, BANDS, PSF_FWHM, SKY_SIGMA)
PER_BAND_DATASETS = (PSF_FWHM, SKY_SIGMA)

ROLES = ("catalogue", "label", "truth")
IMAGE_DTYPES = ("float16", "float32")
COMPRESSIONS = (None, "lzf", "gzip")

#: SDSS extinction coefficients A_b / E(B-V) (Schlafly & Finkbeiner 2011 via Hayat et al.).
SDSS_EXTINCTION = {"u": 4.239, "g": 3.303, "r": 2.285, "i": 1.698, "z": 1.263}
SDSS_PIXEL_SCALE = 0.396  # arcsec / px
FLUX_UNIT = "nanomaggy"  # 1 nmgy = 3.631 microJy; m = 22.5 - 2.5 log10(f)

#: Wavelength order of common optical bands, for picking the RGB of a colour composite.
BAND_ORDER = ("u", "g", "r", "i", "z", "y")


def default_role(name: str) -> str:
    """The role a column gets unless its writer says otherwise."""
    if name == "z_spec" or name.startswith("gz2_") or name.startswith("label_"):
        return "label"
    return "catalogue"


def valid_count(values: np.ndarray) -> int:
    """Rows with a known value: finite for floats, all rows for ints, bools and strings."""
    if values.dtype.kind == "f":
        return int(np.isfinite(values).sum())
    return int(values.shape[0])


def nmgy_to_mag(flux: np.ndarray) -> np.ndarray:
    """AB magnitude of a flux in nanomaggies (NaN for non-positive flux)."""
    flux = np.asarray(flux, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, 22.5 - 2.5 * np.log10(flux), np.nan)


def mag_to_nmgy(mag: np.ndarray) -> np.ndarray:
    """Flux in nanomaggies of an AB magnitude."""
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=np.float64) - 22.5))
