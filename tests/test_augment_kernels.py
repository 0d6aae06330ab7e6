"""The fused Triton kernels against the torch reference, on the same draws.

On a machine without a GPU the kernels run under the Triton interpreter
(TRITON_INTERPRET=1, set here before triton is imported), with small cutouts to keep it
quick. With CUDA the same checks run compiled, at the published sizes. This file uses no
conftest fixtures, so a GPU machine can run it alone: ``pytest --noconftest <this file>``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ["TRITON_INTERPRET"] = "1"

# triton is a dependency: without it `fused` fails to import (no silent skip)
from ssl_hpc.augment import (  # noqa: E402
    AugmentConfig,
    Augmenter,
    SurveyStats,
    fused,
)
from ssl_hpc.augment import reference as ref  # noqa: E402
from ssl_hpc.augment.draws import ViewParams  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"
# (cutout, window, shift): the published sizes on a GPU, small ones for the interpreter
SIZES = (107, 64, 7) if CUDA else (37, 20, 3)
STATS = SurveyStats(
    bands=tuple("ugriz"),
    noise_sigma=(0.05, 0.02, 0.03, 0.04, 0.1),
    psf_fwhm_low=(1.1, 1.0, 1.0, 0.9, 0.9),
    psf_fwhm_high=(2.6, 2.4, 2.3, 2.2, 2.2),
    extinction=(4.239, 3.303, 2.285, 1.698, 1.263),
    pixel_scale=0.396,
)


def batch(n, dtype=torch.float32, seed=0):
    size = SIZES[0]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, size, size, generator=g).to(dtype)
    rng = np.random.default_rng(seed)
    meta = {"psf_fwhm": rng.uniform(0.9, 1.8, (n, 5)), "ebv": rng.uniform(0, 0.2, n)}
    return x.to(DEVICE), meta


def config(codes):
    return AugmentConfig(codes=codes, out_size=SIZES[1], max_shift=SIZES[2])


def both_backends(codes, x, meta, views_per_image=1, seed=0):
    aug = Augmenter(config(codes), STATS, seed=seed, backend="reference")
    draws = aug.draw(x, meta, views_per_image)
    params = ViewParams.from_draws(draws, x.device, aug.config.codes)
    noise = aug._noise(draws, x) if params.has_noise else None
    out = torch.full((len(draws), 5, SIZES[1], SIZES[1]), float("nan"), device=x.device)
    out.copy_(fused.apply_views(x, params, noise, SIZES[1]))  # poisoned first: all written
    # the reference in float64 on the same draws: the kernel's float32 error alone
    return out, ref.apply_views(x.double(), params, noise, SIZES[1]).float(), params


@pytest.mark.parametrize(
    "codes",
    ["RR,JC,GN,GR,PS", "RR,JC,GN,GR,PS,SC,PN,MK", "RF,JC", "GR", "none"],
)
def test_fused_equals_reference_on_the_same_draws(codes):
    x, meta = batch(3 if not CUDA else 64)
    fast, slow, params = both_backends(codes, x, meta, views_per_image=2, seed=11)
    assert torch.isfinite(fast).all()
    if "PS" in codes:
        assert params.blur_radius > 0
    # float32 kernels vs the float64 reference: ~1e-6 from rounding over the blur's taps
    err = (fast - slow).norm() / slow.norm()
    assert err < 1e-5, f"{codes}: relative error {err:.2e}"
    assert (fast - slow).abs().max() < 1e-4 * slow.abs().max()


def test_fused_takes_half_precision_input():
    x, meta = batch(2)
    fast, slow, _ = both_backends("RR,JC,GR,PS", x.half(), meta)
    assert fast.dtype == torch.float32
    assert (fast - slow).norm() / slow.norm() < 1e-5


def test_right_angles_are_exact_in_the_kernel_too():
    x, meta = batch(2)
    fast, slow, _ = both_backends("RF,JC", x, meta, seed=3)
    assert torch.equal(fast, slow)


def test_auto_backend_picks_fused_only_where_it_runs():
    aug = Augmenter(config("RR"), STATS, backend="auto")
    assert aug._use_fused(torch.device("cuda")) is True
    assert aug._use_fused(torch.device("cpu")) is False  # interpreter is for tests only
    assert fused.available("cpu") == (os.environ.get("TRITON_INTERPRET") == "1")
    x, meta = batch(2)
    forced = Augmenter(config("RR,JC,GR"), STATS, seed=1, backend="fused")(x, meta)
    plain = Augmenter(config("RR,JC,GR"), STATS, seed=1, backend="reference")(x, meta)
    assert (forced - plain).abs().max() < 1e-5 * plain.abs().max()
