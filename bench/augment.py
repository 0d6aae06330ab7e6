"""Augmentation throughput: the torch reference, the fused Triton kernels, and kornia.

All five published ops on (RR, JC, GN, GR, PS), batch 256 of 5x107x107 -> 5x64x64 float32,
on the device named. Pipelines:

- reference: `Augmenter(backend="reference")`, one view per image, draws included.
- fused: `Augmenter(backend="fused")` (CUDA), one view per image, draws included.
- fused_two_views: the contrastive pair in one call (2 x batch views).
- fused_kernels_only: the Triton kernels alone on pre-drawn parameters and noise, timed with
  CUDA events (what the GPU spends; the rest of "fused" is host-side drawing).
- kornia: the same five ops as kornia (an established GPU augmentation library) composes
  them: RandomGaussianBlur (one sigma for all bands), RandomAffine (any angle, +-7 px),
  RandomHorizontalFlip, CenterCrop, then the reddening and per-band noise in torch, as
  kornia has neither.

Throughput is measured back to back (calls queued without a sync in between, as a training
loop does) as the median over rounds; latency is the median of single synced calls.

usage: python bench/augment.py [--device cpu|cuda] [--batch 256] [--rounds 7]
                               [--out bench/results/augment-cpu.json]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from harness import machine_info, sync, write_results

from ssl_hpc.augment import AugmentConfig, Augmenter
from ssl_hpc.augment.draws import ViewParams
from ssl_hpc.augment.stats import sdss_like_stats

STATS = sdss_like_stats()


def timed(fn, device: str, calls: int, rounds: int) -> dict:
    """Median seconds per call queued back to back, and median synced single-call latency."""
    for _ in range(3):
        fn()
    sync(device)
    per_call = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        sync(device)
        per_call.append((time.perf_counter() - t) / calls)
    latency = []
    for _ in range(rounds):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        latency.append(time.perf_counter() - t)
    return {
        "s_per_call": statistics.median(per_call),
        "s_per_call_spread": [min(per_call), max(per_call)],
        "latency_s": statistics.median(latency),
    }


def event_timed(fn, calls: int, rounds: int) -> dict:
    """Median device seconds per call from CUDA events around `calls` queued calls."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    per_call = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        per_call.append(start.elapsed_time(end) / 1e3 / calls)
    return {"s_per_call": statistics.median(per_call), "latency_s": None}


class KorniaPipeline:
    """RR + JC + PS + GR + GN built from kornia's augmentations where kornia has them."""

    def __init__(self, radius: int, device: str) -> None:
        import kornia.augmentation as K

        self.blur = K.RandomGaussianBlur((2 * radius + 1,) * 2, (0.1, radius / 4.0), p=1.0)
        self.affine = K.RandomAffine(degrees=180.0, translate=(7 / 107, 7 / 107), p=1.0)
        self.flip = K.RandomHorizontalFlip(p=0.5)
        self.crop = K.CenterCrop(64)
        self.ext = torch.tensor(STATS.extinction, device=device)
        self.noise = torch.tensor(STATS.noise_sigma, device=device)

    def __call__(self, x: torch.Tensor, ebv: torch.Tensor) -> torch.Tensor:
        new = torch.rand_like(ebv) * 0.5
        x = x * 10 ** (-0.4 * (new - ebv)[:, None, None, None] * self.ext[None, :, None, None])
        x = self.crop(self.affine(self.flip(self.blur(x))))
        scale = torch.empty(len(x), 1, 1, 1, device=x.device).uniform_(1.0, 3.0)
        return x + torch.randn_like(x) * scale * self.noise[None, :, None, None]


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=0, help="calls per round (0: by device)")
    p.add_argument("--out", default=None, help="JSON (default bench/results/augment-DEV.json)")
    args = p.parse_args()
    dev = args.device
    calls = args.calls or (50 if dev == "cuda" else 2)
    rounds = args.rounds
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n = args.batch
    x = (torch.randn(n, 5, 107, 107) * 0.03).to(dev)
    meta = {"psf_fwhm": rng.uniform(1.0, 1.5, (n, 5)), "ebv": rng.uniform(0, 0.1, n)}
    ebv_dev = torch.from_numpy(meta["ebv"]).float().to(dev)
    cfg = AugmentConfig()  # RR, JC, GN, GR, PS
    machine = machine_info(dev)
    try:
        import triton

        machine["triton"] = triton.__version__
    except ImportError:
        triton = None
    results: dict = {"benchmark": "augment", "machine": machine, "config": vars(args)}
    pipes: dict = {}

    ref = Augmenter(cfg, STATS, seed=0, backend="reference")
    pipes["reference"] = (lambda: ref(x, meta), n)
    if dev == "cuda" and triton is not None:
        fast = Augmenter(cfg, STATS, seed=0, backend="fused")
        from ssl_hpc.augment import fused

        pipes["fused"] = (lambda: fast(x, meta), n)
        pipes["fused_two_views"] = (lambda: fast.two_views(x, meta), 2 * n)
        draws = fast.draw(x, meta)
        params = ViewParams.from_draws(draws, dev, cfg.codes)
        noise = fast._noise(draws, x)
        results["blur_radius_px"] = params.blur_radius
        pipes["fused_kernels_only"] = (lambda: fused.apply_views(x, params, noise, 64), n)
    try:
        kp = KorniaPipeline(radius=ref.draw(x, meta).blur_radius(), device=dev)
        pipes["kornia"] = (lambda: kp(x, ebv_dev), n)
    except ImportError as e:
        results["kornia_missing"] = str(e)

    out: dict = {}
    for name, (fn, views) in pipes.items():
        with torch.no_grad():
            if name == "fused_kernels_only":
                r = event_timed(fn, calls, rounds)
            else:
                r = timed(fn, dev, calls if name != "reference" or dev == "cuda" else 2, rounds)
        r["views_per_call"] = views
        r["views_per_s"] = views / r["s_per_call"]
        out[name] = r
        print(f"{dev:4s} {name:20s} {r['views_per_s']:12,.0f} views/s  "
              f"({r['s_per_call'] * 1e3:8.3f} ms per {views} views)", flush=True)  # fmt: skip
    if "kornia" in out:
        for name in out:
            out[name]["ratio_to_kornia"] = out[name]["views_per_s"] / out["kornia"]["views_per_s"]
    if "fused_kernels_only" in out:
        # fewest bytes the kernels move per view: the cutout read and written by each blur
        # pass, then read by the fused pass, the noise field read and the view written
        cut, view = 5 * 107 * 107 * 4, 5 * 64 * 64 * 4
        per_view = 4 * cut + cut + 2 * view
        k = out["fused_kernels_only"]
        k["bytes_per_view"] = per_view
        k["achieved_GB_per_s"] = per_view * k["views_per_s"] / 1e9
    results["pipelines"] = out
    path = write_results(results, args.out or f"bench/results/augment-{dev}.json")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
