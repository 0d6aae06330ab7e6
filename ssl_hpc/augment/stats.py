"""Survey facts the augmentations are drawn relative to: noise level, PSF range, extinction."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..data import format as fmt
from ..errors import ConfigError

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # 2.3548


@dataclass(frozen=True)
class SurveyStats:
    """Per-band facts of one survey, each a tuple over its bands.

    `noise_sigma`: typical per-pixel sky noise (flux units). `psf_fwhm_range`: (low, high)
    arcsec per band, the seeing a PS target is drawn in. `extinction`: A_b / E(B-V).
    `linear_flux`: False for display-stretched images (JPEG/PNG), where reddening and
    PSF physics do not apply. The last three let PS and GR be refused before training
    rather than at the first batch that holds an object they cannot draw for.
    """

    bands: tuple[str, ...]
    noise_sigma: tuple[float, ...]
    psf_fwhm_low: tuple[float, ...]
    psf_fwhm_high: tuple[float, ...]
    extinction: tuple[float, ...]
    pixel_scale: float
    linear_flux: bool = True
    #: the sharpest catalogued PSF FWHM per band (arcsec): what PS blurs most; None unknown
    psf_fwhm_min: tuple[float, ...] | None = None
    #: objects PS and GR cannot draw for: no finite PSF FWHM in some band, no finite E(B-V)
    objects_without_psf: int = 0
    objects_without_ebv: int = 0

    def __post_init__(self) -> None:
        n = len(self.bands)
        for name in ("noise_sigma", "psf_fwhm_low", "psf_fwhm_high", "extinction"):
            if len(getattr(self, name)) != n:
                raise ConfigError(f"SurveyStats.{name}: expected {n} values, one per band")


def sdss_like_stats() -> SurveyStats:
    """Typical SDSS ugriz facts (the synthetic survey's noise and seeing), for benchmarks
    and examples that run without a survey on disk."""
    return SurveyStats(
        bands=tuple("ugriz"),
        noise_sigma=(0.035, 0.012, 0.017, 0.027, 0.08),
        psf_fwhm_low=(1.15, 1.1, 1.05, 1.0, 1.0),
        psf_fwhm_high=(1.95, 1.85, 1.75, 1.7, 1.7),
        extinction=extinction_for(tuple("ugriz")),
        pixel_scale=fmt.SDSS_PIXEL_SCALE,
    )


def extinction_for(bands: Sequence[str], override: Mapping[str, float] | None = None) -> tuple:
    """A_b / E(B-V) per band: `override` first, else SDSS ugriz; NaN for an unknown band."""
    override = dict(override or {})
    unknown = sorted(set(override) - set(bands))
    if unknown:
        raise ConfigError(f"augment.extinction names band(s) {unknown} not in {list(bands)}")
    return tuple(float(override.get(b, fmt.SDSS_EXTINCTION.get(b, math.nan))) for b in bands)


def robust_noise(images: np.ndarray) -> np.ndarray:
    """Per-band noise sigma of (n, B, H, W) images: 1.4826 x MAD over each image, median
    over images. The galaxy covers a small part of a cutout, so the MAD sees mostly sky."""
    flat = np.asarray(images, np.float64).reshape(images.shape[0], images.shape[1], -1)
    med = np.median(flat, axis=-1, keepdims=True)
    mad = 1.4826 * np.median(np.abs(flat - med), axis=-1)
    return np.median(mad, axis=0)


def survey_stats(
    survey, percentiles: tuple[float, float] = (5.0, 95.0), extinction=None, n_sample: int = 256
) -> SurveyStats:
    """`SurveyStats` of a `Survey`: the median catalogued sky sigma per band (measured from
    up to `n_sample` images where the survey has none) and PSF FWHM percentiles."""
    m = survey.manifest
    sky = survey.per_band(fmt.SKY_SIGMA).astype(np.float64)
    noise = np.nanmedian(np.where(np.isfinite(sky), sky, np.nan), axis=0) if len(sky) else None
    if noise is None or not np.all(np.isfinite(noise)):
        rows = np.linspace(0, len(survey) - 1, min(n_sample, len(survey))).astype(np.int64)
        measured = robust_noise(survey.images(np.unique(rows)))
        noise = measured if noise is None else np.where(np.isfinite(noise), noise, measured)
    psf = survey.per_band(fmt.PSF_FWHM).astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN band: PSF unknown
        low, high = np.nanpercentile(psf, percentiles, axis=0)
        sharpest = np.nanmin(psf, axis=0)
    ebv = survey.column("ebv").astype(np.float64) if "ebv" in m.columns else None
    return SurveyStats(
        bands=tuple(m.bands),
        noise_sigma=tuple(float(v) for v in noise),
        psf_fwhm_low=tuple(float(v) for v in low),
        psf_fwhm_high=tuple(float(v) for v in high),
        extinction=extinction_for(m.bands, extinction),
        pixel_scale=float(m.pixel_scale_arcsec),
        linear_flux=not m.flux_unit.startswith("display"),
        psf_fwhm_min=tuple(float(v) for v in sharpest),
        objects_without_psf=int((~np.isfinite(psf).all(axis=1)).sum()),
        objects_without_ebv=len(survey) if ebv is None else int((~np.isfinite(ebv)).sum()),
    )


def view_meta(survey, rows: np.ndarray) -> dict:
    """What PS and GR need of the objects at `rows`: their ``psf_fwhm`` (n, bands) and
    ``ebv`` (n,) (zero where the survey has no E(B-V) column), as tensors."""
    import torch

    rows = np.asarray(rows, dtype=np.int64)
    cols = survey.manifest.columns
    ebv = survey.column("ebv")[rows] if "ebv" in cols else np.zeros(len(rows))
    return {
        "psf_fwhm": torch.from_numpy(survey.per_band(fmt.PSF_FWHM)[rows]),
        "ebv": torch.from_numpy(np.asarray(ebv, dtype=np.float32)),
    }
