"""Contrastive losses as pure functions of embeddings (no state, no communication)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce_logits(
    q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, temperature: float
) -> torch.Tensor:
    """(N, 1 + K) logits: column 0 the positive sim(q_i, k_i), then sim(q_i, negative_j).

    sim(a, b) = a.b / (|a| |b| temperature); `negatives` (K, D) are used as given (MoCo
    keeps its queue normalised).
    """
    q = F.normalize(q, dim=1)
    k = F.normalize(k, dim=1)
    positive = (q * k).sum(dim=1, keepdim=True)
    negative = q @ negatives.to(q.dtype).T
    return torch.cat([positive, negative], dim=1) / temperature


def info_nce(
    q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, temperature: float
) -> torch.Tensor:
    """MoCo's InfoNCE: mean over i of -log softmax(logits_i)[positive]."""
    logits = info_nce_logits(q, k, negatives, temperature)
    target = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
    return F.cross_entropy(at_least_float32(logits), target)


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 logits are promoted for the softmax; float64 stays float64."""
    return x if x.dtype == torch.float64 else x.float()


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent over the 2N views of a batch: each view's positive is its pair,
    the other 2N - 2 views are its negatives; mean over all 2N views."""
    z = at_least_float32(F.normalize(torch.cat([z1, z2]), dim=1))
    n = len(z1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)
