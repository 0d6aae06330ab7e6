"""What the machine under a process can do fast: bf16 arithmetic, how many threads to use.

bf16 autocast is fast on GPUs and on CPUs with native bf16 instructions (AVX512-BF16,
AMX); elsewhere PyTorch emulates it, slower than fp32. "auto" picks per device, and the
choice is recorded beside the run so a result says what it ran at.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from ..errors import ConfigError

PRECISIONS = ("auto", "bf16", "fp32")
#: /proc/cpuinfo flags of native bf16 arithmetic (x86: AVX512-BF16, AMX; Arm: bf16)
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


@functools.lru_cache(maxsize=1)
def cpu_bf16_flags() -> tuple[str, ...]:
    """The native-bf16 flags this CPU advertises (empty where unknown, e.g. not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.partition(":")[2].split())
    return tuple(f for f in BF16_CPU_FLAGS if f in flags)


def resolve_precision(requested: str, device: torch.device) -> str:
    """ "bf16" or "fp32" for `requested` ("auto", "bf16", "fp32") on `device`: auto is bf16
    on CUDA devices that support it and on CPUs with native bf16, else fp32."""
    if requested not in PRECISIONS:
        raise ConfigError(f"precision={requested!r}: expected one of {PRECISIONS}")
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_bf16_flags() else "fp32"


def cpu_threads(cpus: float) -> int:
    """Threads for a worker granted `cpus` CPUs (at least 1, at most the machine's)."""
    return max(1, min(int(cpus), os.cpu_count() or 1))


def describe(device: torch.device, precision: str, channels_last: bool) -> dict:
    """What a run executed on, for the record written beside its outputs."""
    out = {
        "device": str(device),
        "precision": precision,
        "channels_last": channels_last,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    else:
        out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        out["cpu_bf16_flags"] = list(cpu_bf16_flags())
    return out
