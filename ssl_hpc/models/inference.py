"""Running a trained encoder on survey cutouts: the one centre-crop convention, and batches.

Every stage that embeds a galaxy (the kNN check during training, `ssl-hpc embed`, search
by FITS cutout, the probes, fine-tuning's test set, the invariance check) looks at the
same window: `size` x `size` pixels whose centre pixel is ((H-1)//2, (W-1)//2), the pixel
the augmentations rotate and shift about, so an unshifted view and the evaluation crop are
the same pixels.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..data.survey import Survey
from ..errors import ConfigError


def window_start(length: int, size: int) -> int | None:
    """First index of the centred `size` window on an axis of `length` pixels (offsets
    [-size//2, size - size//2) about pixel (length-1)//2), or None if it does not fit."""
    start = (length - 1) // 2 - size // 2
    return start if start >= 0 and start + size <= length else None


def centre_crop(images: np.ndarray, size: int) -> np.ndarray:
    """The unshifted view window of (..., H, W) `images`: offsets [-size//2, size - size//2)
    about pixel ((H-1)//2, (W-1)//2)."""
    h, w = images.shape[-2:]
    y0, x0 = window_start(h, size), window_start(w, size)
    if y0 is None or x0 is None:
        raise ValueError(f"centre_crop: a centred {size} px window does not fit {h}x{w} images")
    return images[..., y0 : y0 + size, x0 : x0 + size]


def check_window(size: int, survey: Survey, what: str) -> None:
    """Refuse a centred `size` px window that does not fit `survey`'s cutouts, naming the
    setting (`what`) it came from."""
    h, w = survey.manifest.image_shape[-2:]
    if window_start(h, size) is None or window_start(w, size) is None:
        raise ConfigError(
            f"{what}: a centred {size} px window does not fit {survey.root}'s {h}x{w} "
            f"cutouts (at most {min(h, w) - (min(h, w) + 1) % 2} px)"
        )


def field_factor(shape: tuple[int, ...], size: int) -> int:
    """How many times coarser than its views the encoder sees a cutout's whole field:
    the largest f with f x `size` inside the cutout, or 0 when f < 2 (no field view)."""
    f = min(shape[-2:]) // size
    return f if f >= 2 else 0


def field_view(images: np.ndarray, size: int) -> np.ndarray | None:
    """The whole field of (..., H, W) `images` at the view size: the central f x `size`
    pixels binned f x f by their mean (f = `field_factor`), so the encoder sees the cutout
    at 1/f resolution, where an object anywhere in it (a satellite trail, a saturated
    star at the edge) is inside the window. None when the cutout is under 2 views wide."""
    f = field_factor(images.shape, size)
    if not f:
        return None
    side = f * size
    y0, x0 = (images.shape[-2] - side) // 2, (images.shape[-1] - side) // 2
    window = images[..., y0 : y0 + side, x0 : x0 + side]  # centred (the whole cutout, not a view)
    binned = window.reshape(*window.shape[:-2], size, f, size, f)
    return binned.mean(axis=(-3, -1), dtype=np.float64).astype(np.float32)


def centre_crops(survey: Survey, rows: np.ndarray, size: int) -> torch.Tensor:
    """(len(rows), bands, size, size) float32 centre crops of survey `rows`: what an
    encoder trained on `size` px views sees at evaluation."""
    images = centre_crop(survey.images(rows).astype(np.float32), size)
    return torch.from_numpy(np.ascontiguousarray(images))


def autocast(device: torch.device, precision: str):
    """The autocast context for `precision` ("bf16" or "fp32") on `device`."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"precision {precision!r}: expected bf16 or fp32")
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def embed(
    encoder: torch.nn.Module,
    images: torch.Tensor,
    device,
    batch: int = 256,
    precision: str = "fp32",
) -> torch.Tensor:
    """(N, D) float32 representations of (N, bands, H, W) `images`, the encoder in eval
    mode (its mode is restored afterwards), `batch` images at a time."""
    return _batched(encoder, encoder, images, device, batch, precision)


def textures(
    encoder: torch.nn.Module,
    images: torch.Tensor,
    device,
    stage: int = 1,
    batch: int = 256,
    precision: str = "fp32",
) -> torch.Tensor:
    """(N, 2 x channels) float32 textures of stage `stage` (`ResNet.with_texture`) of
    (N, bands, H, W) `images`, run as `embed` runs the encoder."""
    return _batched(
        encoder, lambda x: encoder.with_texture(x, stage)[1], images, device, batch, precision
    )


@torch.no_grad()
def _batched(encoder, fn, images: torch.Tensor, device, batch: int, precision: str):
    """`fn` over `images`, `batch` at a time, with `encoder` in eval mode meanwhile. In bf16
    the images enter channels_last (1.6x the images per second on a 2-core AMX CPU); fp32
    keeps the layout it is given, so fp32 results stay those of earlier runs to the bit
    (a resumed study's scores are compared with a clean run's)."""
    was_training = encoder.training
    encoder.eval()
    try:
        parts = []
        for i in range(0, len(images), batch):
            x = images[i : i + batch].to(device)
            if precision == "bf16":
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(torch.device(device), precision):
                parts.append(fn(x).float().cpu())
    finally:
        encoder.train(was_training)
    if not parts:
        return torch.empty(0, 0)
    return torch.cat(parts)
