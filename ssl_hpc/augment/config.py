"""What the augmentations do, by code, and the knobs each one has.

Codes (the ablation of Hayat et al. 2021 names the first five):

====  ===============================================================================
RR    rotation by any angle in [0, 360) deg plus a random flip (bilinear resampling)
JC    jitter-crop: the output window's centre moves by up to +-max_shift px
GN    Gaussian noise per band: sigma = s x the survey's noise level, s ~ U(noise_scale)
GR    galactic reddening: de-redden with the catalogue E(B-V), redden with E(B-V) ~ U(ebv)
PS    PSF smoothing: blur each band to a target FWHM drawn in the survey's PSF range,
      applying only the quadrature difference from the image's own PSF
RF    right-angle rotations and flips only (exact, no resampling); exclusive with RR
SC    flux scaling by one factor for all bands, log-uniform in scale_range (colour kept)
PN    signal-dependent (shot) noise: variance += k x sky sigma x flux, k ~ U(0, shot_noise_max)
MK    masking: one random box per view set to zero (sky level), side ~ U(mask_fraction)
====  ===============================================================================

Without JC the window is centred; either way every view is `out_size` square. The window
never leaves the cutout: `AugmentConfig.check_geometry` refuses sizes where it could.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import ConfigError

#: Every code, in the order the pipeline applies its effect, with a one-line description.
CODES: dict[str, str] = {
    "GR": "galactic reddening with a random E(B-V)",
    "SC": "flux scaling (all bands alike)",
    "PS": "PSF smoothing to a random seeing",
    "RR": "rotation by any angle, plus flips",
    "RF": "right-angle rotations and flips (exact)",
    "JC": "jitter-crop (window centre moved by up to +-max_shift px)",
    "GN": "Gaussian noise at the survey's per-band noise level",
    "PN": "signal-dependent (shot) noise",
    "MK": "masking of one random box",
}

#: The published set (Hayat et al. 2021 + PSF smoothing of Stein et al.).
DEFAULT_CODES = ("RR", "JC", "GN", "GR", "PS")


def parse_codes(codes: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"RR,JC+GN"`` or ``["RR", "JC"]`` -> ``("RR", "JC", "GN")``; clear error on a bad code.

    ``"none"`` or ``""`` is the empty set (centre crop only). Order and case don't matter.
    """
    if isinstance(codes, str):
        parts = codes.replace("+", ",").replace(" ", ",").split(",")
    else:
        parts = list(codes)
    out: list[str] = []
    for part in parts:
        code = str(part).strip().upper()
        if code in ("", "NONE"):
            continue
        if code not in CODES:
            raise ConfigError(
                f"augmentation code {part!r} unknown; known: {', '.join(CODES)} (or 'none')"
            )
        if code not in out:
            out.append(code)
    if "RR" in out and "RF" in out:
        raise ConfigError("augmentation codes RR and RF exclude each other: RR includes flips")
    return tuple(c for c in CODES if c in out)


@dataclass(frozen=True)
class AugmentConfig:
    """Parameters of the augmentation pipeline (see the module docstring for the codes)."""

    codes: tuple[str, ...] = DEFAULT_CODES
    """augmentation codes to apply (RR JC GN GR PS; generic RF SC PN MK), or none"""
    out_size: int = 64
    """side of every view, px"""
    max_shift: int = 7
    """JC: the view centre moves by up to this many px"""
    # Amplitudes of the survey itself: extra noise up to its sky level (the depth a
    # shallower pass would give), E(B-V) over SDSS's high-latitude range. The published
    # (1, 3) and (0, 0.5) (Hayat et al. 2021; jobs/configs/pretrain.yaml) drown faint
    # galaxies and shift colours as much as redshift does: docs/representation.md.
    ebv: tuple[float, float] = (0.0, 0.1)
    """GR: the new E(B-V) is drawn uniformly in this range (published: 0, 0.5)"""
    noise_scale: tuple[float, float] = (0.0, 1.0)
    """GN: added noise sigma = U(this range) x the band's sky noise (published: 1, 3)"""
    #: Percentiles of the survey's PSF FWHM per band that bound the PS target seeing.
    psf_percentiles: tuple[float, float] = (5.0, 95.0)
    #: A_b / E(B-V) per band; bands not named here use the SDSS values when known.
    extinction: dict[str, float] = field(default_factory=dict)
    scale_range: tuple[float, float] = (0.8, 1.25)
    """SC: one flux factor for all bands, log-uniform in this range"""
    shot_noise_max: float = 0.35
    """PN: variance += k x sky sigma x flux, k uniform up to this (unitless: a pixel 1/k
    sky sigmas bright gains one sky variance; the survey's median sky sigma over bands).
    0.35: the old absolute 0.02 on the demo survey (median sky sigma 0.058 nanomaggies)"""
    mask_fraction: tuple[float, float] = (0.1, 0.3)
    """MK: the masked box's side as a fraction of the view, uniform in this range"""

    def __post_init__(self) -> None:
        object.__setattr__(self, "codes", parse_codes(self.codes))
        for name in ("ebv", "noise_scale", "psf_percentiles", "scale_range", "mask_fraction"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or not lo_hi[0] <= lo_hi[1]:
                raise ConfigError(f"augment.{name}={lo_hi}: expected (low, high) with low <= high")
        checks = {
            "out_size": self.out_size >= 1,
            "max_shift": self.max_shift >= 0,
            "ebv": self.ebv[0] >= 0,
            "noise_scale": self.noise_scale[0] >= 0,
            "psf_percentiles": self.psf_percentiles[0] >= 0 and self.psf_percentiles[1] <= 100,
            "scale_range": self.scale_range[0] > 0,
            "shot_noise_max": self.shot_noise_max >= 0,
            "mask_fraction": self.mask_fraction[0] >= 0 and self.mask_fraction[1] <= 1,
            "ebv_upper": math.isfinite(self.ebv[1]),
            "noise_scale_upper": math.isfinite(self.noise_scale[1]),
            "scale_range_upper": math.isfinite(self.scale_range[1]),
            "extinction": all(math.isfinite(v) and v >= 0 for v in self.extinction.values()),
        }
        for check, ok in checks.items():
            if not ok:
                name = check.removesuffix("_upper")
                raise ConfigError(f"augment.{name}={getattr(self, name)}: out of range")

    def check_geometry(self, in_size: tuple[int, int]) -> None:
        """Refuse an input size from which some view would sample outside the cutout."""
        h, w = in_size
        reach = self.reach()
        room = min((h - 1) // 2, h - 1 - (h - 1) // 2, (w - 1) // 2, w - 1 - (w - 1) // 2)
        if reach > room:
            what = "rotated " if "RR" in self.codes else ""
            raise ConfigError(
                f"augment: a {what}{self.out_size}x{self.out_size} window"
                + (f" moved by up to {self.max_shift} px" if "JC" in self.codes else "")
                + f" reaches {reach:.2f} px from the centre, outside a {h}x{w} cutout "
                f"({room} px); lower out_size or max_shift, or use larger cutouts"
            )

    def reach(self) -> float:
        """Farthest distance (px, per axis) from the cutout centre that a view samples."""
        half = self.out_size // 2  # output offsets run over [-half, out_size - 1 - half]
        corner = half * math.sqrt(2.0) if "RR" in self.codes else float(half)
        shift = self.max_shift if "JC" in self.codes else 0
        return corner + shift
