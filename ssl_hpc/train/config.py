"""The pretraining configuration: one frozen dataclass, YAML + ``key=value`` overrides.

Nested augmentation settings take dotted overrides: ``augment.codes=RR,JC,GN``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..augment import AugmentConfig, Augmenter, survey_stats
from ..config import check_ranges
from ..data.reader import ShardedReader
from ..data.survey import Survey
from ..errors import ConfigError
from ..models import ARCHS, STEMS
from ..models.inference import check_window
from ..models.resnet import NECKS, STRETCHES
from ..utils.hardware import PRECISIONS

METHODS = ("moco", "simclr")
OPTIMIZERS = ("sgd", "lars")


def require_full_batch(reader: ShardedReader) -> None:
    """ConfigError unless every rank of `reader` gets at least one full batch per epoch."""
    if reader.batches_per_epoch(0) < 1:
        raise ConfigError(
            f"{reader.survey.root}: too few objects for batch_size {reader.batch_size} on "
            f"{reader.world_size} worker(s) (each needs at least one full batch per epoch)"
        )


@dataclass(frozen=True)
class PretrainConfig:
    """How to pretrain: model, method, optimisation, data, checkpoints, monitoring."""

    # model and method (Hayat et al. 2021: MoCo v2, ResNet-50, survey stem)
    method: str = "moco"
    """moco (MoCo v2) or simclr"""
    arch: str = "resnet50"
    """resnet18, resnet34 or resnet50"""
    stem: str = "survey"
    """survey (7x7 stride 1, no max-pool: Hayat et al.) or standard (ImageNet's)"""
    # pixels in: asinh(flux / (input_softening x the band's sky noise)); see models.resnet
    input_stretch: str = "asinh"
    """how pixels enter: asinh(flux / scale), flux / scale (linear) or none"""
    input_softening: float = 3.0
    """the per-band scale, in units of the band's typical sky noise"""
    # features out through a BatchNorm neck, so cosine similarity compares what differs
    neck: str = "bn"
    """bn: a BatchNorm on the pooled features (cosine similarity then compares what
    differs); none"""
    proj_dim: int = 128
    """projection head output dimension"""
    proj_hidden: int = 2048
    """projection head hidden width"""
    queue_size: int = 65536
    """MoCo: negatives kept (a multiple of the global batch)"""
    momentum: float = 0.999
    """MoCo: key encoder <- momentum x key + (1 - momentum) x query"""
    temperature: float = 0.2
    """InfoNCE / NT-Xent temperature"""
    shuffle_bn: bool = True
    """MoCo: the key encoder's BatchNorm sees a shuffled batch across ranks (with one
    worker it has no effect: see bn_splits)"""
    bn_splits: int = 1
    """MoCo on one worker: the key encoder runs over this many random sub-batches, so its
    BatchNorm statistics are not the query batch's (shuffle-BN's single-device form); 1: off"""
    # optimisation: lr = base_lr x global batch / 256, linear warm-up then cosine to 0
    optimizer: str = "sgd"
    """sgd or lars"""
    base_lr: float = 0.03
    """peak learning rate per 256 of global batch (peak = base_lr x global batch / 256)"""
    weight_decay: float = 1e-4
    """weight decay"""
    sgd_momentum: float = 0.9
    """optimiser momentum"""
    warmup_steps: int = 500
    """linear warm-up steps before the cosine decay"""
    steps: int = 100000
    """optimisation steps in all"""
    batch_size: int = 256  # per worker
    precision: str = "auto"  # bf16 on GPUs and on CPUs with native bf16, else fp32
    channels_last: bool = True
    """channels_last memory format"""
    compile: bool = False
    """torch.compile the encoders (GPU)"""
    # data
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    embed_size: int = 0
    """the centred window (px) every later stage embeds a cutout through; 0: the view size
    (augment.out_size). Larger where a galaxy spills out of the views (docs/representation.md)"""
    loader_workers: int = 4
    """DataLoader worker processes per training worker (0: read in the training process;
    1: the worker and the training process read every other batch each)"""
    shuffle_window: int = 8192
    """objects shuffled together by the reader"""
    seed: int = 0
    """weights, data order and views follow from it"""
    # Ray Train
    num_workers: int = 1
    """Ray Train workers (one per GPU on GPU nodes)"""
    use_gpu: bool = False
    """train on GPUs"""
    cpus_per_worker: float = 1.0
    """CPUs Ray grants each worker (its torch threads)"""
    max_failures: int = 3
    """worker deaths Ray Train restarts from the latest checkpoint"""
    # checkpoints and monitoring
    checkpoint_every: int = 1000
    """steps between checkpoints"""
    keep_checkpoints: int = 2
    """checkpoints kept on disk"""
    log_every: int = 50
    """steps between metrics.csv rows"""
    eval_every: int = 1000
    """steps between kNN evaluations on labelled objects"""
    eval_objects: int = 2048
    """labelled objects in the kNN evaluation"""
    eval_k: int = 20
    """neighbours in the kNN evaluation"""

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
        counts = ("proj_dim", "proj_hidden", "queue_size", "steps", "num_workers", "bn_splits")
        counts += ("checkpoint_every", "keep_checkpoints", "log_every", "eval_every", "eval_k")
        optional = ("warmup_steps", "loader_workers", "eval_objects", "shuffle_window")
        check_ranges(
            self,
            at_least=dict.fromkeys(counts, 1) | dict.fromkeys((*optional, "max_failures"), 0),
            positive=("temperature", "base_lr", "input_softening", "cpus_per_worker"),
            non_negative=("weight_decay",),
        )
        if self.batch_size < 2:
            raise ConfigError(
                f"batch_size={self.batch_size}: must be >= 2 (the other views are the "
                "negatives, and the BatchNorm neck needs two rows)"
            )
        if self.embed_size < 0:
            raise ConfigError(f"embed_size={self.embed_size}: a window in px (0: the view)")
        for name in ("momentum", "sgd_momentum"):
            if not 0 <= getattr(self, name) < 1:  # NaN fails every comparison: refused too
                raise ConfigError(f"{name}={getattr(self, name)}: must be in [0, 1)")
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

    def check_fits(self, survey: Survey) -> None:
        """Refuse a survey whose cutouts are too small for the views or the embedding
        window, that cannot support the augmentations (PS, GR), or too few for one full
        batch per worker: found here, before Ray starts, not in a worker that Ray restarts
        four times (a worker's Pretrainer meets the last two as it builds its parts)."""
        self.check_geometry(survey)
        # PS and GR need a PSF and E(B-V) for every object, and fluxes, not display values
        Augmenter(
            self.augment,
            survey_stats(survey, self.augment.psf_percentiles, self.augment.extinction),
        )
        require_full_batch(
            ShardedReader(
                survey, self.batch_size, world_size=self.num_workers, seed=self.seed, even=True
            )
        )

    def check_geometry(self, survey: Survey) -> None:
        """Refuse a survey whose cutouts are too small for the views or the embedding window."""
        self.augment.check_geometry(survey.manifest.image_shape[1:])
        check_window(self.embed_window, survey, f"embed_size={self.embed_size}")

    @property
    def embed_window(self) -> int:
        """The window (px) the encoder embeds whole cutouts through: embed_size, else the view."""
        return self.embed_size or self.augment.out_size

    @property
    def peak_lr(self) -> float:
        """base_lr scaled linearly with the global batch (Goyal et al. 2017)."""
        return self.base_lr * self.global_batch / 256
