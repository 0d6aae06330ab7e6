"""A pretraining checkpoint: everything an exact continuation needs, from every rank.

Rank 0 saves the whole `Pretrainer.state_dict()` (``trainer.pt``); every other rank only
what differs per rank (``rank-N.pt``: its BatchNorm statistics, shuffle-BN makes them
differ, and its RNG states). The MoCo queue is identical on every rank and kept once.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .pretrainer import Pretrainer

TRAINER_FILE = "trainer.pt"  # rank 0: the whole state
RANK_FILE = "rank-{rank}.pt"  # other ranks: what differs per rank (BN statistics, RNG)
SHARED_BUFFERS = ("queue", "queue_ptr")  # identical on every rank: kept once, in rank 0's


def save_checkpoint(directory: Path, trainer: Pretrainer) -> None:
    """This rank's part of a checkpoint into `directory`."""
    state = trainer.state_dict()
    if trainer.rank == 0:
        torch.save(state, directory / TRAINER_FILE)
        return
    names = {k for k, _ in trainer.bare.named_buffers() if k.split(".")[-1] not in SHARED_BUFFERS}
    buffers = {k: v for k, v in trainer.bare.state_dict().items() if k in names}
    torch.save(
        {"buffers": buffers, "rng_cpu": state["rng_cpu"], "rng_cuda": state["rng_cuda"]},
        directory / RANK_FILE.format(rank=trainer.rank),
    )


def load_checkpoint(directory: Path, trainer: Pretrainer) -> None:
    """Rank 0's whole state, then this rank's own BN statistics and RNG states."""
    state = torch.load(directory / TRAINER_FILE, map_location=trainer.device, weights_only=True)
    own = directory / RANK_FILE.format(rank=trainer.rank)
    if trainer.rank > 0 and own.exists():
        mine = torch.load(own, map_location=trainer.device, weights_only=True)
        state["model"].update(mine["buffers"])
        state["rng_cpu"], state["rng_cuda"] = mine["rng_cpu"], mine["rng_cuda"]
    state["rng_cpu"] = state["rng_cpu"].cpu()
    state["rng_cuda"] = state["rng_cuda"].cpu()
    trainer.load_state_dict(state)


def load_trainer_state(directory: Path) -> dict:
    """Rank 0's saved state from a checkpoint directory (on the CPU)."""
    return torch.load(directory / TRAINER_FILE, map_location="cpu", weights_only=True)
