"""The augmentations in plain torch: readable, any device, any float dtype.

This is the definition the fused kernels are tested against, and the CPU path. Order:
PSF smoothing on the full cutout (so the window has real neighbours), then rotation and
crop by bilinear resampling, then the per-band flux factor (reddening, scaling), then noise
at the output resolution (white, as a detector's), then the mask.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from .draws import ViewParams


@contextlib.contextmanager
def _no_tf32(active: bool):
    saved = torch.backends.cudnn.allow_tf32
    if active:
        torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved


def gaussian_blur(
    images: torch.Tensor, sigma: torch.Tensor, weights: torch.Tensor, inplace: bool = False
) -> torch.Tensor:
    """Blur (n, B, H, W) `images` separably (x then y) with per-(image, band) `weights`
    (n, B, K) (see `draws.discrete_gaussian`), mirror borders.

    Planes with `sigma` 0 keep their values (their kernel is a delta). The result is a new
    tensor, or `images` itself, overwritten, when `inplace`.
    """
    n, b, h, w = images.shape
    radius = (weights.shape[-1] - 1) // 2
    blurred = torch.nonzero(sigma.reshape(-1) > 0).squeeze(1)
    if radius == 0 or len(blurred) == 0:
        return images
    if radius >= min(h, w):
        raise ValueError(f"blur radius {radius} px does not fit a {h}x{w} cutout")
    k = len(blurred)
    taps = weights.reshape(n * b, -1)[blurred].to(images.dtype)
    planes = images.reshape(n * b, h, w)[blurred].reshape(1, k, h, w)
    with _no_tf32(images.is_cuda):  # the reference is full float32 on CUDA too
        planes = F.pad(planes, (radius, radius, 0, 0), mode="reflect")
        planes = F.conv2d(planes, taps.reshape(k, 1, 1, -1), groups=k)
        planes = F.pad(planes, (0, 0, radius, radius), mode="reflect")
        planes = F.conv2d(planes, taps.reshape(k, 1, -1, 1), groups=k)
    out = images.reshape(n * b, h, w)
    out = out if inplace else out.clone()
    out[blurred] = planes.reshape(k, h, w)
    return out.reshape(n, b, h, w)


def sample_coordinates(
    matrix: torch.Tensor, shift: torch.Tensor, in_size: tuple[int, int], out_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input (y, x) in px, each (n, out, out), that every output pixel of each view samples.

    Output pixel (i, j) sits at offset (i - out//2, j - out//2) from the window centre; the
    view's matrix turns that into an input offset from the cutout centre plus its shift.
    """
    h, w = in_size
    offsets = torch.arange(out_size, dtype=matrix.dtype, device=matrix.device) - out_size // 2
    dy, dx = offsets[None, :, None], offsets[None, None, :]
    m = matrix[:, :, :, None, None]
    y = ((h - 1) // 2 + shift[:, 0, None, None]) + m[:, 0, 0] * dy + m[:, 0, 1] * dx
    x = ((w - 1) // 2 + shift[:, 1, None, None]) + m[:, 1, 0] * dy + m[:, 1, 1] * dx
    return y, x


def bilinear(images: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Sample (n, B, H, W) `images` at (n, out, out) positions (y, x) by bilinear
    interpolation; at whole-pixel positions the result is the pixel value, exactly."""
    n, b, h, w = images.shape
    y0f, x0f = torch.floor(y), torch.floor(x)
    fy, fx = (y - y0f)[:, None], (x - x0f)[:, None]
    y0 = y0f.long().clamp(0, h - 1)
    x0 = x0f.long().clamp(0, w - 1)
    y1, x1 = (y0 + 1).clamp(max=h - 1), (x0 + 1).clamp(max=w - 1)
    flat = images.reshape(n, b, h * w)

    def at(yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        index = (yi * w + xi).reshape(n, 1, -1).expand(n, b, -1)
        return flat.gather(2, index).reshape(n, b, *y.shape[1:])

    top = (1 - fx) * at(y0, x0) + fx * at(y0, x1)
    bottom = (1 - fx) * at(y1, x0) + fx * at(y1, x1)
    return (1 - fy) * top + fy * bottom


def add_noise(
    views: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor, shot_gain: torch.Tensor
) -> torch.Tensor:
    """views + noise x sqrt(sigma^2 + shot_gain x max(views, 0)); noise is N(0, 1)."""
    var = sigma[:, :, None, None] ** 2 + shot_gain[:, None, None, None] * views.clamp(min=0)
    return views + noise * torch.sqrt(var)


def apply_mask(views: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Zero each view inside its (y0, x0, y1, x1) box."""
    size = views.shape[-1]
    idx = torch.arange(size, device=views.device, dtype=box.dtype)
    rows = (idx[None, :] >= box[:, 0:1]) & (idx[None, :] < box[:, 2:3])
    cols = (idx[None, :] >= box[:, 1:2]) & (idx[None, :] < box[:, 3:4])
    inside = rows[:, :, None] & cols[:, None, :]
    return views.masked_fill(inside[:, None], 0.0)


def apply_views(
    images: torch.Tensor, params: ViewParams, noise: torch.Tensor | None, out_size: int
) -> torch.Tensor:
    """Views (n, B, out, out) of `images` (N, B, H, W) under `params` (one row per view).

    Computes in float64 for float64 input, else float32.
    """
    dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
    src = images[params.column("src").long()].to(dtype)  # a copy: blurred in place
    src = gaussian_blur(src, params.per_band(1), params.blur_weights(), inplace=True)
    matrix, shift = params.matrix().to(dtype), params.column("shift_y", 2).to(dtype)
    y, x = sample_coordinates(matrix, shift, tuple(images.shape[-2:]), out_size)
    views = bilinear(src, y, x) * params.per_band(0).to(dtype)[:, :, None, None]
    if params.has_noise:
        sigma, gain = params.per_band(2).to(dtype), params.column("shot_gain").to(dtype)
        views = add_noise(views, noise.to(dtype), sigma, gain)
    if params.has_mask:
        views = apply_mask(views, params.column("mask_y0", 4))
    return views
