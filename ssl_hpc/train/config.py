"""The pretraining configuration: one frozen dataclass, YAML + ``key=value`` overrides.

Nested augmentation settings take dotted overrides: ``augment.codes=RR,JC,GN``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..augment import AugmentConfig
from ..errors import ConfigError
from ..models import ARCHS, STEMS
from ..models.resnet import NECKS, STRETCHES
from ..utils.hardware import PRECISIONS

METHODS = ("moco", "simclr")
OPTIMIZERS = ("sgd", "lars")


@dataclass(frozen=True)
class PretrainConfig:
    """How to pretrain: model, method, optimisation, data, checkpoints, monitoring."""

    # model and method (Hayat et al. 2021: MoCo v2, ResNet-50, survey stem)
    method: str = "moco"
    arch: str = "resnet50"
    stem: str = "survey"
    # pixels in: asinh(flux / (input_softening x the band's sky noise)); see models.resnet
    input_stretch: str = "asinh"
    input_softening: float = 3.0
    # features out through a BatchNorm neck, so cosine similarity compares what differs
    neck: str = "bn"
    proj_dim: int = 128
    proj_hidden: int = 2048
    queue_size: int = 65536
    momentum: float = 0.999
    temperature: float = 0.2
    shuffle_bn: bool = True
    # optimisation: lr = base_lr x global batch / 256, linear warm-up then cosine to 0
    optimizer: str = "sgd"
    base_lr: float = 0.03
    weight_decay: float = 1e-4
    sgd_momentum: float = 0.9
    warmup_steps: int = 500
    steps: int = 100000
    batch_size: int = 256  # per worker
    precision: str = "auto"  # bf16 on GPUs and on CPUs with native bf16, else fp32
    channels_last: bool = True
    compile: bool = False
    # data
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loader_workers: int = 4
    shuffle_window: int = 8192
    seed: int = 0
    # Ray Train
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    max_failures: int = 3
    # checkpoints and monitoring
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 50
    eval_every: int = 1000
    eval_objects: int = 2048
    eval_k: int = 20

    def __post_init__(self) -> None:
        choices = {
            "method": (self.method, METHODS),
            "arch": (self.arch, tuple(ARCHS)),
            "stem": (self.stem, STEMS),
            "optimizer": (self.optimizer, OPTIMIZERS),
            "precision": (self.precision, PRECISIONS),
            "input_stretch": (self.input_stretch, STRETCHES),
            "neck": (self.neck, NECKS),
        }
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise ConfigError(f"{name}={value!r}: expected one of {allowed}")
        positive = (
            "proj_dim",
            "proj_hidden",
            "queue_size",
            "steps",
            "batch_size",
            "num_workers",
            "checkpoint_every",
            "log_every",
            "eval_every",
            "eval_k",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be >= 1")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum={self.momentum}: must be in [0, 1)")
        if self.temperature <= 0 or self.base_lr <= 0 or self.input_softening <= 0:
            raise ConfigError("temperature, base_lr and input_softening must be > 0")
        if self.method == "moco" and self.queue_size % self.global_batch:
            raise ConfigError(
                f"queue_size={self.queue_size} is not a multiple of the global batch "
                f"{self.global_batch} (batch_size {self.batch_size} x num_workers "
                f"{self.num_workers}); e.g. queue_size="
                f"{max(1, self.queue_size // self.global_batch) * self.global_batch}"
            )

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.num_workers

    @property
    def peak_lr(self) -> float:
        """base_lr scaled linearly with the global batch (Goyal et al. 2017)."""
        return self.base_lr * self.global_batch / 256
