"""The random draws of each view, made on the CPU so every backend applies the same ones.

Each code owns a draw function (the registry `DRAWS`) that fills its fields of `ViewDraws`;
fields of codes that are off keep their neutral value (no rotation, factor 1, no blur...).
Each code draws from its own Philox stream keyed by (seed, call, code), so switching one
code off in an ablation leaves the draws of the others unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError
from .config import CODES, AugmentConfig
from .stats import FWHM_PER_SIGMA, SurveyStats

#: Columns of the packed per-view parameter row the kernels read (then 3 x bands more:
#: band factor, blur sigma in px, additive noise sigma; then bands x (2 radius + 1) blur
#: weights).
PACKED = ("src", "m00", "m01", "m10", "m11", "shift_y", "shift_x", "shot_gain",
          "mask_y0", "mask_x0", "mask_y1", "mask_x1")  # fmt: skip
N_FIXED = len(PACKED)

#: Gaussian blur kernels are truncated at this many sigma (weights renormalised).
BLUR_TRUNCATE = 4.0


def discrete_gaussian_exact(sigma: np.ndarray, radius: int) -> np.ndarray:
    """Blur weights (..., 2 radius + 1) for px `sigma` (...): the discrete Gaussian
    exp(-s^2) I_n(s^2) (Lindeberg 1990), truncated and renormalised.

    Its variance is sigma^2 exactly (before truncation), also for sigma < 1 px where a
    sampled Gaussian falls far short: PS must add exactly the quadrature difference.
    """
    from scipy.special import ive

    taps = np.arange(-radius, radius + 1)
    var = np.asarray(sigma, np.float64)[..., None] ** 2
    w = ive(np.abs(taps), var)
    return w / w.sum(axis=-1, keepdims=True)


_TABLE_STEP = 1.0 / 256  # px of sigma between tabulated kernels


@functools.lru_cache(maxsize=16)
def _kernel_table(radius: int) -> np.ndarray:
    sigma = np.arange(0.0, radius / BLUR_TRUNCATE + 2 * _TABLE_STEP, _TABLE_STEP)
    return discrete_gaussian_exact(sigma, radius)


def discrete_gaussian(sigma: np.ndarray, radius: int) -> np.ndarray:
    """`discrete_gaussian_exact`, interpolated linearly in sigma from a table (Bessel
    functions for thousands of planes per batch would cost more than the GPU's work).

    The variance errs by at most step^2 / 4 = 4e-6 px^2; weights sum to 1. Valid for
    sigma <= radius / BLUR_TRUNCATE, which `ViewDraws.blur_radius` guarantees.
    """
    table = _kernel_table(radius)
    pos = np.asarray(sigma, np.float64) / _TABLE_STEP
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, len(table) - 2)
    frac = (pos - i0)[..., None]
    return (1.0 - frac) * table[i0] + frac * table[i0 + 1]


@dataclass
class ViewDraws:
    """Random parameters of n views (numpy, float64), one row per view.

    `src_index`: which input image each view is made from. `angle_deg`, `flip`: the output
    grid is flipped in x, then rotated by angle_deg. `shift`: (dy, dx) px of the window
    centre. `ebv_catalogue` -> `ebv`: the reddening removed and applied. `psf_target`:
    FWHM arcsec per band (NaN where PS is off), `blur_sigma` the px sigma that gets there.
    `noise_sigma`: additive Gaussian sigma per band; `shot_gain`: variance per unit flux.
    `mask_box`: (y0, x0, y1, x1) in output px, empty when y0 == y1. `call`: the
    augmenter call that drew them (it seeds the noise field).
    """

    src_index: np.ndarray
    angle_deg: np.ndarray
    flip: np.ndarray
    shift: np.ndarray
    ebv_catalogue: np.ndarray
    ebv: np.ndarray
    flux_scale: np.ndarray
    extinction: np.ndarray
    psf_target: np.ndarray
    blur_sigma: np.ndarray
    noise_sigma: np.ndarray
    shot_gain: np.ndarray
    mask_box: np.ndarray
    call: int = 0

    @classmethod
    def neutral(cls, src_index: np.ndarray, n_bands: int) -> ViewDraws:
        """Views that change nothing but the centre crop."""
        n = len(src_index)
        return cls(
            src_index=np.asarray(src_index, np.int64),
            angle_deg=np.zeros(n),
            flip=np.zeros(n, bool),
            shift=np.zeros((n, 2), np.int64),
            ebv_catalogue=np.zeros(n),
            ebv=np.zeros(n),
            flux_scale=np.ones(n),
            extinction=np.zeros(n_bands),
            psf_target=np.full((n, n_bands), np.nan),
            blur_sigma=np.zeros((n, n_bands)),
            noise_sigma=np.zeros((n, n_bands)),
            shot_gain=np.zeros(n),
            mask_box=np.zeros((n, 4), np.int64),
        )

    def __len__(self) -> int:
        return len(self.src_index)

    @property
    def band_factor(self) -> np.ndarray:
        """(n, bands) flux multiplier: reddening change x flux scale."""
        dust = 10.0 ** (-0.4 * np.outer(self.ebv - self.ebv_catalogue, self.extinction))
        return dust * self.flux_scale[:, None]

    def matrix(self) -> np.ndarray:
        """(n, 2, 2) map from output offsets (dy, dx) to input offsets.

        The angle is split into whole quarter turns (exact integer matrices) and a rest in
        [-45, 45) deg, so multiples of 90 deg resample nothing and are exact.
        """
        quarter = np.round(self.angle_deg / 90.0)
        rest = np.deg2rad(self.angle_deg - 90.0 * quarter)
        k = quarter.astype(np.int64) % 4
        qc = np.array([1, 0, -1, 0])[k]
        qs = np.array([0, 1, 0, -1])[k]
        c, s = np.cos(rest), np.sin(rest)
        # rotation (y, x) -> (c y - s x, s y + c x) composed from the rest and the quarter turns
        rc, rs = c * qc - s * qs, s * qc + c * qs
        fx = np.where(self.flip, -1.0, 1.0)
        m = np.empty((len(self), 2, 2))
        m[:, 0, 0], m[:, 0, 1] = rc, -rs * fx
        m[:, 1, 0], m[:, 1, 1] = rs, rc * fx
        return m

    def blur_radius(self) -> int:
        """Half-width in px of the blur kernels (0: no blur)."""
        top = float(self.blur_sigma.max(initial=0.0))
        return max(1, int(np.ceil(BLUR_TRUNCATE * top))) if top > 0 else 0

    def packed(self) -> np.ndarray:
        """(n, N_FIXED + 3 x bands + bands x taps) float32: the rows the kernels read."""
        m = self.matrix()
        fixed = np.column_stack(
            [
                self.src_index,
                m[:, 0, 0],
                m[:, 0, 1],
                m[:, 1, 0],
                m[:, 1, 1],
                self.shift,
                self.shot_gain,
                self.mask_box,
            ]  # fmt: skip
        )
        weights = discrete_gaussian(self.blur_sigma, self.blur_radius()).reshape(len(self), -1)
        blocks = [fixed, self.band_factor, self.blur_sigma, self.noise_sigma, weights]
        return np.hstack(blocks).astype(np.float32)


@dataclass
class ViewParams:
    """`ViewDraws` moved to a device in one copy, with host-side facts the launch needs."""

    packed: torch.Tensor
    n_bands: int
    blur_radius: int
    has_noise: bool
    has_mask: bool

    @classmethod
    def from_draws(cls, draws: ViewDraws, device, codes: tuple[str, ...]) -> ViewParams:
        """Pack `draws` and copy them to `device` (pinned, non-blocking on CUDA)."""
        host = torch.from_numpy(draws.packed())
        if torch.device(device).type == "cuda":
            host = host.pin_memory()
        return cls(
            packed=host.to(device, non_blocking=True),
            n_bands=draws.blur_sigma.shape[1],
            blur_radius=draws.blur_radius(),
            has_noise="GN" in codes or "PN" in codes,
            has_mask="MK" in codes,
        )

    def column(self, name: str, count: int = 1) -> torch.Tensor:
        """The fixed column `name` (see PACKED), or `count` columns from it as (n, count)."""
        start = PACKED.index(name)
        return self.packed[:, start] if count == 1 else self.packed[:, start : start + count]

    def matrix(self) -> torch.Tensor:
        """(n, 2, 2) output-to-input offset matrices."""
        return self.column("m00", 4).reshape(-1, 2, 2)

    def per_band(self, which: int) -> torch.Tensor:
        """(n, bands) block: 0 band factor, 1 blur sigma (px), 2 noise sigma."""
        start = N_FIXED + which * self.n_bands
        return self.packed[:, start : start + self.n_bands]

    def blur_weights(self) -> torch.Tensor:
        """(n, bands, 2 radius + 1) blur weights (see `discrete_gaussian`)."""
        start = N_FIXED + 3 * self.n_bands
        return self.packed[:, start:].reshape(len(self.packed), self.n_bands, -1)


@dataclass
class DrawContext:
    """What a draw function may read: the config, the survey facts and the source images'
    catalogue values (one row per view)."""

    config: AugmentConfig
    stats: SurveyStats
    psf_fwhm: np.ndarray | None  # (n, bands) arcsec
    ebv: np.ndarray | None  # (n,)


DrawFn = Callable[[ViewDraws, DrawContext, np.random.Generator], None]
DRAWS: dict[str, DrawFn] = {}


def register(code: str) -> Callable[[DrawFn], DrawFn]:
    """Register the draw function of augmentation `code` (one of config.CODES)."""

    def deco(fn: DrawFn) -> DrawFn:
        assert code in CODES, code
        DRAWS[code] = fn
        return fn

    return deco


@register("RR")
def _rotate(d: ViewDraws, ctx: DrawContext, rng: np.random.Generator) -> None:
    d.angle_deg = rng.uniform(0.0, 360.0, len(d))
    d.flip = rng.random(len(d)) < 0.5


@register("RF")
def _right_angles(d: ViewDraws, ctx: DrawContext, rng: np.random.Generator) -> None:
    d.angle_deg = 90.0 * rng.integers(0, 4, len(d))
    d.flip = rng.random(len(d)) < 0.5


@register("JC")
def _jitter(d: ViewDraws, ctx: DrawContext, rng: np.random.Generator) -> None:
    s = ctx.config.max_shift
    d.shift = rng.integers(-s, s + 1, (len(d), 2))


@register("GR")
def _redden(d: ViewDraws, ctx: DrawContext, rng: np.random.Generator) -> None:
    d.ebv_catalogue = np.asarray(ctx.ebv, np.float64)
    d.ebv = rng.uniform(*ctx.config.ebv, len(d))
    d.extinction = np.asarray(ctx.stats.extinction, np.float64)


@register("SC")
def _scale(d: ViewDraws, ctx: DrawContext, rng: np.random.Generator) -> None:
    lo, hi = ctx.config.scale_range
    d.flux_scale = np.exp(rng.uniform(np.log(lo), np.log(hi), len(d)))


@register("PS")
def _smooth(d: ViewDraws, ctx: DrawContext, rng: np.random.Generator) -> None:
    # One seeing draw per view sets the target in every band (the atmosphere is shared).
    u = rng.random(len(d))[:, None]
    low, high = np.array(ctx.stats.psf_fwhm_low), np.array(ctx.stats.psf_fwhm_high)
    d.psf_target = low + u * (high - low)
    own = np.asarray(ctx.psf_fwhm, np.float64)
    extra2 = np.clip(d.psf_target**2 - own**2, 0.0, None)
    d.blur_sigma = np.sqrt(extra2) / FWHM_PER_SIGMA / ctx.stats.pixel_scale


@register("GN")
def _noise(d: ViewDraws, ctx: DrawContext, rng: np.random.Generator) -> None:
    scale = rng.uniform(*ctx.config.noise_scale, len(d))
    d.noise_sigma = scale[:, None] * np.asarray(ctx.stats.noise_sigma)[None, :]


@register("PN")
def _shot(d: ViewDraws, ctx: DrawContext, rng: np.random.Generator) -> None:
    # in units of the sky: the same k adds the same noise whatever the survey's flux unit
    sky = float(np.median(ctx.stats.noise_sigma))
    d.shot_gain = rng.uniform(0.0, ctx.config.shot_noise_max, len(d)) * sky


@register("MK")
def _mask(d: ViewDraws, ctx: DrawContext, rng: np.random.Generator) -> None:
    out = ctx.config.out_size
    side = np.round(rng.uniform(*ctx.config.mask_fraction, (len(d), 2)) * out).astype(np.int64)
    y0 = rng.integers(0, out - side[:, 0] + 1)
    x0 = rng.integers(0, out - side[:, 1] + 1)
    d.mask_box = np.column_stack([y0, x0, y0 + side[:, 0], x0 + side[:, 1]])


def draw_views(
    config: AugmentConfig,
    stats: SurveyStats,
    src_index: np.ndarray,
    psf_fwhm: np.ndarray | None,
    ebv: np.ndarray | None,
    seed: int,
    call: int,
) -> ViewDraws:
    """Draws for views of images `src_index` (psf_fwhm, ebv: per view), call `call`."""
    if "PS" in config.codes and (psf_fwhm is None or not np.all(np.isfinite(psf_fwhm))):
        raise ConfigError("augmentation PS needs each image's PSF FWHM (psf_fwhm), finite")
    if "GR" in config.codes and (ebv is None or not np.all(np.isfinite(ebv))):
        raise ConfigError(
            "augmentation GR needs each image's catalogue E(B-V): read the 'ebv' column "
            "(ShardedReader(columns=('ebv',))) and pass the batch as meta"
        )
    d = ViewDraws.neutral(src_index, len(stats.bands))
    d.call = call
    ctx = DrawContext(config, stats, psf_fwhm, ebv)
    for i, code in enumerate(CODES):
        if code in config.codes:
            key = [seed & (2**64 - 1), call * len(CODES) + i]
            DRAWS[code](d, ctx, np.random.Generator(np.random.Philox(key=key)))
    return d
