"""The augmentations as Triton kernels: a separable blur (two passes) and one fused pass
for rotation + crop + flux factor + noise + mask.

Same arithmetic as `reference.apply_views`, on the same `ViewParams`, so the two agree to
float32 rounding. On CUDA tensors they compile for the GPU; on CPU tensors they run under
``TRITON_INTERPRET=1`` (how the tests check them on machines without a GPU).

Each program handles BLOCK pixels of one (view, band) plane; the parameter row of its view
is read once per program. Bytes per view (5x107x107 -> 5x64x64, float32): the fused pass
reads the cutout and the noise field and writes the view (~0.4 MB); each blur pass reads and
writes one cutout (~0.46 MB).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .draws import N_FIXED, ViewParams

_FIXED = tl.constexpr(N_FIXED)  # kernels may only read constexpr globals


@triton.jit
def _plane_of_program(plane, params_ptr, n_params, n_bands, FROM_SOURCE: tl.constexpr):
    """(band, parameter row of the view, input plane index) of program `plane`."""
    band = plane % n_bands
    row = params_ptr + (plane // n_bands) * n_params
    if FROM_SOURCE:  # noqa: SIM108 (Triton: a plain branch on a constexpr)
        src_plane = tl.load(row).to(tl.int64) * n_bands + band
    else:
        src_plane = plane.to(tl.int64)
    return band, row, src_plane


@triton.jit
def _mirror(q, n):
    """Index q reflected into [0, n) about the edge pixels (torch's "reflect" padding)."""
    q = tl.where(q < 0, -q, q)
    return tl.where(q > n - 1, 2 * (n - 1) - q, q)


@triton.jit
def _blur_pass_kernel(
    src_ptr,
    dst_ptr,
    params_ptr,
    n_params,
    n_bands,
    H,
    W,
    radius,
    FROM_SOURCE: tl.constexpr,
    ALONG_X: tl.constexpr,
    BLOCK: tl.constexpr,
):
    plane = tl.program_id(0)
    band, row, src_plane = _plane_of_program(plane, params_ptr, n_params, n_bands, FROM_SOURCE)
    taps = row + _FIXED + 3 * n_bands + band * (2 * radius + 1) + radius
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < H * W
    y = offs // W
    x = offs % W
    base = src_ptr + src_plane * H * W
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for t in range(-radius, radius + 1):
        weight = tl.load(taps + t)
        if ALONG_X:  # noqa: SIM108  (a constexpr branch: Triton compiles one side)
            idx = y * W + _mirror(x + t, W)
        else:
            idx = _mirror(y + t, H) * W + x
        acc += weight * tl.load(base + idx, mask=inside, other=0.0).to(tl.float32)
    tl.store(dst_ptr + plane.to(tl.int64) * H * W + offs, acc, mask=inside)


@triton.jit
def _view_kernel(
    src_ptr,
    out_ptr,
    noise_ptr,
    params_ptr,
    n_params,
    n_bands,
    H,
    W,
    OUT: tl.constexpr,
    FROM_SOURCE: tl.constexpr,
    HAS_NOISE: tl.constexpr,
    HAS_MASK: tl.constexpr,
    BLOCK: tl.constexpr,
):
    plane = tl.program_id(0)
    band, row, src_plane = _plane_of_program(plane, params_ptr, n_params, n_bands, FROM_SOURCE)
    m00 = tl.load(row + 1)
    m01 = tl.load(row + 2)
    m10 = tl.load(row + 3)
    m11 = tl.load(row + 4)
    cy = ((H - 1) // 2).to(tl.float32) + tl.load(row + 5)
    cx = ((W - 1) // 2).to(tl.float32) + tl.load(row + 6)
    factor = tl.load(row + _FIXED + band)

    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < OUT * OUT
    oy = offs // OUT
    ox = offs % OUT
    dy = (oy - OUT // 2).to(tl.float32)
    dx = (ox - OUT // 2).to(tl.float32)
    y = cy + m00 * dy + m01 * dx
    x = cx + m10 * dy + m11 * dx
    y0f = tl.floor(y)
    x0f = tl.floor(x)
    fy = y - y0f
    fx = x - x0f
    y0 = tl.minimum(tl.maximum(y0f.to(tl.int32), 0), H - 1)
    x0 = tl.minimum(tl.maximum(x0f.to(tl.int32), 0), W - 1)
    y1 = tl.minimum(y0 + 1, H - 1)
    x1 = tl.minimum(x0 + 1, W - 1)
    base = src_ptr + src_plane * H * W
    v00 = tl.load(base + y0 * W + x0, mask=inside, other=0.0).to(tl.float32)
    v01 = tl.load(base + y0 * W + x1, mask=inside, other=0.0).to(tl.float32)
    v10 = tl.load(base + y1 * W + x0, mask=inside, other=0.0).to(tl.float32)
    v11 = tl.load(base + y1 * W + x1, mask=inside, other=0.0).to(tl.float32)
    top = (1 - fx) * v00 + fx * v01
    bottom = (1 - fx) * v10 + fx * v11
    v = ((1 - fy) * top + fy * bottom) * factor

    out_offs = plane.to(tl.int64) * OUT * OUT + offs
    if HAS_NOISE:
        sigma = tl.load(row + _FIXED + 2 * n_bands + band)
        gain = tl.load(row + 7)
        z = tl.load(noise_ptr + out_offs, mask=inside, other=0.0)
        v = v + z * tl.sqrt(sigma * sigma + gain * tl.maximum(v, 0.0))
    if HAS_MASK:
        in_box = (
            (oy >= tl.load(row + 8))
            & (oy < tl.load(row + 10))
            & (ox >= tl.load(row + 9))
            & (ox < tl.load(row + 11))
        )
        v = tl.where(in_box, 0.0, v)
    tl.store(out_ptr + out_offs, v, mask=inside)


def available(device: torch.device | str) -> bool:
    """Whether the kernels can run on `device`: CUDA, or CPU under TRITON_INTERPRET=1."""
    kind = torch.device(device).type
    if kind == "cuda":
        return True
    return kind == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"


def apply_views(
    images: torch.Tensor, params: ViewParams, noise: torch.Tensor | None, out_size: int
) -> torch.Tensor:
    """Views (n, B, out, out) float32 of `images` (N, B, H, W): see `reference.apply_views`."""
    if images.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"fused augmentations take float32/16 images, got {images.dtype}")
    images = images.contiguous()
    n_src, b, h, w = images.shape
    n = params.packed.shape[0]
    packed = params.packed.contiguous()
    n_params = packed.shape[1]
    radius = params.blur_radius
    source, from_source = images, True
    if radius > 0:
        if radius >= min(h, w):
            raise ValueError(f"blur radius {radius} px does not fit a {h}x{w} cutout")
        grid = (n * b, triton.cdiv(h * w, 1024))
        across = torch.empty((n, b, h, w), device=images.device, dtype=torch.float32)
        _blur_pass_kernel[grid](images, across, packed, n_params, b, h, w, radius,
                                FROM_SOURCE=True, ALONG_X=True, BLOCK=1024)  # fmt: skip
        blurred = torch.empty_like(across)
        _blur_pass_kernel[grid](across, blurred, packed, n_params, b, h, w, radius,
                                FROM_SOURCE=False, ALONG_X=False, BLOCK=1024)  # fmt: skip
        source, from_source = blurred, False
    out = torch.empty((n, b, out_size, out_size), device=images.device, dtype=torch.float32)
    noise_arg = noise.contiguous() if params.has_noise else out
    block = min(1024, triton.next_power_of_2(out_size * out_size))
    grid = (n * b, triton.cdiv(out_size * out_size, block))
    _view_kernel[grid](source, out, noise_arg, packed, n_params, b, h, w, OUT=out_size,
                       FROM_SOURCE=from_source, HAS_NOISE=params.has_noise,
                       HAS_MASK=params.has_mask, BLOCK=block)  # fmt: skip
    return out
