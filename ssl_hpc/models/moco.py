"""MoCo v2 (He et al. 2020; Chen et al. 2020) and SimCLR around one encoder trunk.

MoCo: a query encoder + head trained by SGD, a key encoder + head that follows it by an
exponential moving average, and a queue of past keys as negatives. In data-parallel
training the keys of every rank are all-gathered before they are enqueued, so the queue is
the same on every rank. Shuffle-BN: BatchNorm of the key encoder sees a shuffled batch
across ranks, so a query and its key never share batch statistics; on one process that
needs `bn_splits` > 1, random sub-batches (the single-device form).

The queue remembers whose key each entry is: on a survey smaller than the queue (the
demo's 4,096 galaxies, a few thousand labelled cutouts) it holds an older key of the
query's own galaxy, and such a key is not a negative: it is left out of the loss.
"""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..losses.contrastive import at_least_float32, info_nce_logits, nt_xent
from .heads import projection_head


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` (N, ...) from every rank in rank order (no gradient); `x` alone when
    not distributed."""
    if not _distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def _check_temperature(temperature: float) -> None:
    if not temperature > 0 or temperature == float("inf"):  # NaN and inf refused too
        raise ConfigError(f"temperature={temperature}: must be a finite number > 0")


class MoCo(nn.Module):
    """MoCo v2: `forward(x_q, x_k)` -> (loss, stats); updates the key encoder and queue."""

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        proj_dim: int = 128,
        proj_hidden: int = 2048,
        queue_size: int = 65536,
        momentum: float = 0.999,
        temperature: float = 0.2,
        shuffle_bn: bool = True,
        bn_splits: int = 1,
    ) -> None:
        super().__init__()
        if not 0 <= momentum < 1:
            raise ConfigError(f"momentum={momentum}: must be in [0, 1)")
        _check_temperature(temperature)
        if queue_size < 1:
            raise ConfigError(f"queue_size={queue_size}: must be >= 1")
        self.encoder_q = encoder
        self.head_q = projection_head(feature_dim, proj_hidden, proj_dim)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        self.head_k = copy.deepcopy(self.head_q)
        for p in [*self.encoder_k.parameters(), *self.head_k.parameters()]:
            p.requires_grad = False
        self.momentum, self.temperature, self.shuffle_bn = momentum, temperature, shuffle_bn
        self.bn_splits = bn_splits
        g = torch.Generator().manual_seed(0)
        queue = F.normalize(torch.randn(queue_size, proj_dim, generator=g), dim=1)
        self.register_buffer("queue", queue)
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        # whose key each queue entry is (-1: none yet, or an id not given)
        self.register_buffer("queue_ids", torch.full((queue_size,), -1, dtype=torch.long))
        # a host copy of queue_ptr: reading the buffer each step would sync with the GPU
        self._ptr: int | None = None
        self.register_load_state_dict_post_hook(lambda module, keys: module._forget_ptr())

    def _forget_ptr(self) -> None:
        self._ptr = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints from before the queue kept ids: every entry's owner unknown
        state_dict.setdefault(prefix + "queue_ids", torch.full_like(self.queue_ids, -1))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def queue_size(self) -> int:
        return self.queue.shape[0]

    def check_global_batch(self, global_batch: int) -> None:
        """The queue advances by whole global batches: its size must be a multiple."""
        if self.queue_size % global_batch:
            raise ConfigError(
                f"queue_size={self.queue_size} is not a multiple of the global batch "
                f"{global_batch} (batch per worker x workers); pick e.g. "
                f"{max(1, self.queue_size // global_batch) * global_batch}"
            )

    @torch.no_grad()
    def momentum_update(self) -> None:
        """key <- m key + (1 - m) query, for encoder and head parameters."""
        q_params = [*self.encoder_q.parameters(), *self.head_q.parameters()]
        k_params = [*self.encoder_k.parameters(), *self.head_k.parameters()]
        torch._foreach_mul_(k_params, self.momentum)
        torch._foreach_add_(k_params, q_params, alpha=1 - self.momentum)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, ids: torch.Tensor | None = None) -> None:
        """Replace the oldest len(keys) entries of the queue with `keys` (already gathered)
        and their object `ids` (-1 when not given)."""
        n = keys.shape[0]
        self.check_global_batch(n)
        ptr = int(self.queue_ptr) if self._ptr is None else self._ptr
        self.queue[ptr : ptr + n] = keys.to(self.queue.dtype)
        self.queue_ids[ptr : ptr + n] = -1 if ids is None else ids
        self._ptr = (ptr + n) % self.queue_size
        self.queue_ptr.fill_(self._ptr)

    def _key(self, x_k: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head_k(self.encoder_k(x_k)), dim=1)

    @torch.no_grad()
    def keys(self, x_k: torch.Tensor) -> torch.Tensor:
        """Normalised keys of `x_k`, with shuffle-BN: across ranks when distributed, over
        `bn_splits` random sub-batches on one process."""
        if not self.shuffle_bn or (not _distributed() and self.bn_splits < 2):
            return self._key(x_k)
        if not _distributed():
            perm = torch.randperm(len(x_k), device=x_k.device)
            parts = x_k[perm].chunk(min(self.bn_splits, len(x_k)))
            shuffled = torch.cat([self._key(part) for part in parts])
            unshuffled = torch.empty_like(shuffled)
            unshuffled[perm] = shuffled
            return unshuffled
        rank = dist.get_rank()
        n = x_k.shape[0]
        everything = all_gather_rows(x_k)
        perm = torch.randperm(len(everything), device=x_k.device)
        dist.broadcast(perm, src=0)  # one permutation, so every row is keyed exactly once
        mine = perm[rank * n : (rank + 1) * n]
        k = self._key(everything[mine])
        k_all = all_gather_rows(k)
        unshuffled = torch.empty_like(k_all)
        unshuffled[perm] = k_all
        return unshuffled[rank * n : (rank + 1) * n]

    def forward(
        self, x_q: torch.Tensor, x_k: torch.Tensor, ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict]:
        """Loss of one step; also moves the key encoder and enqueues this step's keys.
        `ids`: the batch's object ids, so that a queued key of the same object is not
        taken as a negative."""
        q = self.head_q(self.encoder_q(x_q))
        self.momentum_update()
        k = self.keys(x_k)
        logits = at_least_float32(
            info_nce_logits(q, k, self.queue.clone().detach(), self.temperature)
        )
        if ids is not None:  # the negatives' columns only: the positive is never masked
            logits[:, 1:].masked_fill_(ids[:, None] == self.queue_ids[None, :], float("-inf"))
        target = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
        loss = F.cross_entropy(logits, target)
        self.enqueue(all_gather_rows(k.detach()), None if ids is None else all_gather_rows(ids))
        with torch.no_grad():
            accuracy = (logits.argmax(dim=1) == 0).float().mean()
        return loss, {"loss": loss.detach(), "top1": accuracy}


class SimCLR(nn.Module):
    """SimCLR: one encoder + head, NT-Xent over the batch's 2N views (gathered across ranks
    for the negatives would need gradients through all_gather; this one uses the local
    batch, as SimCLR on one device)."""

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        proj_dim: int = 128,
        proj_hidden: int = 2048,
        temperature: float = 0.2,
    ) -> None:
        super().__init__()
        _check_temperature(temperature)
        self.encoder_q = encoder
        self.head_q = projection_head(feature_dim, proj_hidden, proj_dim)
        self.temperature = temperature

    def forward(
        self, x_a: torch.Tensor, x_b: torch.Tensor, ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict]:
        """NT-Xent of one step (`ids` unused: the negatives are this batch's other views)."""
        z = self.head_q(self.encoder_q(torch.cat([x_a, x_b])))
        loss = nt_xent(z[: len(x_a)], z[len(x_a) :], self.temperature)
        return loss, {"loss": loss.detach()}
