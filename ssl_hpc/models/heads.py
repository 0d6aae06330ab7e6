"""Projection heads that map a representation to the space the contrastive loss sees."""

from __future__ import annotations

from torch import nn


def projection_head(in_dim: int, hidden_dim: int = 2048, out_dim: int = 128) -> nn.Sequential:
    """MoCo v2's 2-layer MLP: Linear - ReLU - Linear (the loss normalises the output)."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)
    )
