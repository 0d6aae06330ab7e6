"""One optimisation step of a contrastive model, and how the model is laid out for speed."""

from __future__ import annotations

import torch
from torch import nn

from ..models.inference import autocast


def prepare_model(
    model: nn.Module, device: torch.device, channels_last: bool = False, compile: bool = False
) -> nn.Module:
    """Move `model` to `device`; channels_last memory format; torch.compile the encoder
    trunks (the bulk of the work; queue and momentum bookkeeping stay eager)."""
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        for name in ("encoder_q", "encoder_k"):
            if hasattr(model, name):
                setattr(model, name, torch.compile(getattr(model, name)))
    return model


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x_q: torch.Tensor,
    x_k: torch.Tensor,
    precision: str = "fp32",
    channels_last: bool = False,
    ids: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Forward, backward and update on one pair of view batches of the objects `ids`;
    returns the step's stats (device tensors: reading them syncs, so log them every few
    steps)."""
    if channels_last:
        x_q = x_q.contiguous(memory_format=torch.channels_last)
        x_k = x_k.contiguous(memory_format=torch.channels_last)
    with autocast(x_q.device, precision):
        loss, stats = model(x_q, x_k, ids)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return stats
