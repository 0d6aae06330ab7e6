"""What every benchmark records about its machine, and how it writes its JSON.

Benchmarks run as scripts (``python bench/NAME.py``), so this sits beside them and is
imported as ``harness``.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch


def machine_info(device: str | torch.device = "cpu") -> dict:
    """Host, cores, Python/torch versions, torch threads and the device's name."""
    gpu = torch.device(device).type == "cuda"
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if gpu else platform.processor(),
    }


def sync(device: str | torch.device) -> None:
    """Wait for queued device work (timing on CUDA is asynchronous)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def write_results(results: dict, path: str | os.PathLike) -> Path:
    """Write `results` as indented JSON at `path` (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path
