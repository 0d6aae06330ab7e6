"""`Augmenter`: views of a batch, on the device the batch lives on.

    aug = Augmenter(AugmentConfig(codes=("RR", "JC", "GN", "GR", "PS")), survey_stats(survey))
    for batch in reader:                       # ShardedReader(..., columns=("ebv",))
        images = batch["image"].to("cuda", non_blocking=True)
        query, key = aug.two_views(images, batch)

Draws are made on the CPU (numpy Philox) from (seed, call count), so a run is reproducible
and resumable from `state_dict()`, whatever the device. The noise field is drawn on the
batch's device with a torch generator seeded from the same pair.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from . import reference
from .config import AugmentConfig
from .draws import BLUR_TRUNCATE, ViewDraws, ViewParams, draw_views
from .stats import FWHM_PER_SIGMA, SurveyStats

BACKENDS = ("auto", "reference", "fused")


def _fused_module():
    try:
        from . import fused  # lazy: imports triton, optional and slow to load
    except ImportError as e:  # no triton in this environment
        raise ConfigError(f"augment backend 'fused' needs triton ({e})") from e
    return fused


class Augmenter:
    """Random views of (N, bands, H, W) batches under `config`, relative to `stats`.

    `backend`: "reference" (plain torch), "fused" (Triton kernels: CUDA, or CPU under
    TRITON_INTERPRET=1), or "auto" (fused on CUDA when triton imports, else reference).
    """

    def __init__(
        self, config: AugmentConfig, stats: SurveyStats, seed: int = 0, backend: str = "auto"
    ) -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"augment backend {backend!r}: expected one of {BACKENDS}")
        physical = [c for c in ("GR", "PS") if c in config.codes]
        if physical and not stats.linear_flux:
            raise ConfigError(
                f"augmentation(s) {physical} need fluxes, but this survey holds display "
                "values (JPEG/PNG): reddening and PSF physics do not apply; drop them"
            )
        needs = {"PS": (stats.objects_without_psf, "a finite psf_fwhm in every band")}
        needs["GR"] = (stats.objects_without_ebv, "a finite E(B-V) (the 'ebv' column)")
        for code, (lacking, what) in needs.items():
            if code in config.codes and lacking:
                raise ConfigError(
                    f"augmentation {code}: {lacking} of the survey's objects lack {what}; "
                    f"drop {code} from augment.codes, or give them one"
                )
        if "GR" in config.codes:
            missing = [b for b, r in zip(stats.bands, stats.extinction) if not np.isfinite(r)]
            if missing:
                raise ConfigError(
                    f"augmentation GR: no extinction coefficient for band(s) {missing}; "
                    "give them as augment.extinction {band: A_b/E(B-V)}"
                )
        self.config, self.stats = config, stats
        self.seed, self.backend = int(seed), backend
        self.calls = 0
        self._checked_sizes: set[tuple[int, int]] = set()
        self._noise_gen: dict[str, torch.Generator] = {}

    def __repr__(self) -> str:
        return f"Augmenter({'+'.join(self.config.codes) or 'none'}, backend={self.backend})"

    # -- state, for exact resumption --------------------------------------------------------
    def state_dict(self) -> dict[str, int]:
        """What `load_state_dict` needs to continue the same sequence of draws."""
        return {"seed": self.seed, "calls": self.calls}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Continue from `state_dict()` output."""
        self.seed, self.calls = int(state["seed"]), int(state["calls"])

    # -- the public calls -------------------------------------------------------------------
    def __call__(self, images: torch.Tensor, meta: Mapping[str, Any] | None = None):
        """One view per image: (N, bands, out, out) float32 on the images' device.

        `meta` carries the images' ``psf_fwhm`` (N, bands) and ``ebv`` (N,) (a reader batch
        does), needed by PS and GR.
        """
        return self.views(images, meta, views_per_image=1)

    def two_views(self, images: torch.Tensor, meta: Mapping[str, Any] | None = None):
        """The contrastive pair: two independently drawn views of every image."""
        both = self.views(images, meta, views_per_image=2)
        return both[: len(images)], both[len(images) :]

    def views(
        self, images: torch.Tensor, meta: Mapping[str, Any] | None, views_per_image: int
    ) -> torch.Tensor:
        """`views_per_image` x N views in one launch: view k x N + i is of image i."""
        draws = self.draw(images, meta, views_per_image)
        return self.apply(images, draws)

    def draw(
        self, images: torch.Tensor, meta: Mapping[str, Any] | None, views_per_image: int = 1
    ) -> ViewDraws:
        """The next call's draws for `views_per_image` views of each image (advances state)."""
        self._check(images)
        n = images.shape[0]
        src = np.tile(np.arange(n), views_per_image)
        psf = _host(meta, "psf_fwhm", src)
        ebv = _host(meta, "ebv", src)
        draws = draw_views(self.config, self.stats, src, psf, ebv, self.seed, self.calls)
        self.calls += 1
        return draws

    def apply(self, images: torch.Tensor, draws: ViewDraws) -> torch.Tensor:
        """Apply given `draws` to `images` with this augmenter's backend."""
        device = images.device
        params = ViewParams.from_draws(draws, device, self.config.codes)
        noise = self._noise(draws, images) if params.has_noise else None
        size = self.config.out_size
        if self._use_fused(device):
            return _fused_module().apply_views(images, params, noise, size)
        return reference.apply_views(images, params, noise, size)

    # -- helpers ----------------------------------------------------------------------------
    def _use_fused(self, device: torch.device) -> bool:
        if self.backend == "reference":
            return False
        if self.backend == "fused":
            fused = _fused_module()
            if not fused.available(device):
                raise ConfigError(
                    f"augment backend 'fused' on {device}: needs CUDA, or TRITON_INTERPRET=1 "
                    "for the CPU interpreter (slow; for tests)"
                )
            return True
        if device.type != "cuda":
            return False
        try:
            _fused_module()
        except ConfigError:
            return False
        return True

    def _check(self, images: torch.Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != len(self.stats.bands):
            raise ConfigError(
                f"augment: expected images (N, {len(self.stats.bands)}, H, W) for bands "
                f"{self.stats.bands}, got shape {tuple(images.shape)}"
            )
        if not images.is_floating_point():
            raise ConfigError(f"augment: expected float images, got {images.dtype}")
        size = (int(images.shape[2]), int(images.shape[3]))
        if size not in self._checked_sizes:
            self.config.check_geometry(size)
            self._check_blur(size)
            self._checked_sizes.add(size)

    def _check_blur(self, size: tuple[int, int]) -> None:
        """Refuse cutouts the widest PS blur would not fit: the sharpest catalogued PSF
        degraded to the top of the target range, found now rather than at a random batch."""
        sharpest = self.stats.psf_fwhm_min
        if "PS" not in self.config.codes or sharpest is None:
            return
        extra2 = np.clip(np.square(self.stats.psf_fwhm_high) - np.square(sharpest), 0, None)
        sigma = float(np.sqrt(np.nanmax(extra2, initial=0.0))) / FWHM_PER_SIGMA
        radius = int(np.ceil(BLUR_TRUNCATE * sigma / self.stats.pixel_scale))
        if radius >= min(size):
            raise ConfigError(
                f"augmentation PS: blurring the sharpest PSF to the top of the target range "
                f'({max(self.stats.psf_fwhm_high):.3g}") needs a {radius} px kernel radius at '
                f'{self.stats.pixel_scale:g}"/px, beyond the {size[0]}x{size[1]} cutouts; '
                "lower augment.psf_percentiles' upper end or drop PS"
            )

    def _noise(self, draws: ViewDraws, images: torch.Tensor) -> torch.Tensor:
        device = images.device
        gen = self._noise_gen.get(str(device))
        if gen is None:
            gen = self._noise_gen[str(device)] = torch.Generator(device=device)
        gen.manual_seed((self.seed * 1_000_003 + draws.call) % (2**63))
        shape = (len(draws), images.shape[1], self.config.out_size, self.config.out_size)
        return torch.randn(shape, generator=gen, device=device, dtype=torch.float32)


def _host(meta: Mapping[str, Any] | None, key: str, src: np.ndarray) -> np.ndarray | None:
    """meta[key] as float64 numpy, one row per view; None when absent."""
    if meta is None or key not in meta:
        return None
    value = meta[key]
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, np.float64)[src]
