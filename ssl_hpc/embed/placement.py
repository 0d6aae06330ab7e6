"""Where an embedding rank runs: its device and its CPU threads."""

from __future__ import annotations

import os

import torch

from ..errors import SslHpcError


def rank_threads(ranks_on_node: int) -> int:
    """Intra-op threads for one CPU rank: the cores the launcher bound it to, or, when it
    was not bound (it sees every core of the node), an equal share of the node's cores
    among the ranks on it, so ranks do not oversubscribe each other."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cores = os.cpu_count() or 1
    if usable is not None and usable < cores:
        return usable
    return max(1, cores // max(1, ranks_on_node))


def pick_device(choice: str, rank: int) -> torch.device:
    """The device `choice` names (auto: this rank's GPU if any, else the CPU); an
    SslHpcError naming it if it is not a device, or a GPU this machine lacks."""
    if choice != "auto":
        try:
            device = torch.device(choice)
        except RuntimeError as e:
            raise SslHpcError(f"device {choice!r}: not a device (cpu, cuda, cuda:N)") from e
        if device.type == "cuda" and (
            not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()
        ):
            raise SslHpcError(f"device {choice!r}: no such GPU on this machine")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", rank % torch.cuda.device_count())
    return torch.device("cpu")
