"""ResNets for any number of bands, written out (no torchvision).

The survey stem (Hayat et al. 2021): a 7x7 stride-1 convolution and no max-pool, so a
64x64 cutout keeps its resolution into the first stage (64 -> 64 -> 32 -> 16 -> 8). The
standard ImageNet stem (7x7 stride 2 + max-pool) is an option for large cutouts.
The network returns the pooled representation (512-d ResNet-18, 2048-d ResNet-50).

Pixels enter through `InputScaling`: survey fluxes span five decades (sky noise of 0.01
nmgy, galaxy cores and stars of 100), so each band is divided by its own scale (a few
times the band's sky noise, set from the survey before training and saved with the
weights) and, by default, compressed with asinh: linear in the noise, logarithmic on
bright cores, as astronomers display images (Lupton et al. 1999).

The pooled features leave through a BatchNorm "neck" (Luo et al. 2019's BNNeck) by
default: after ReLU and average pooling every feature is positive and most of a faint
galaxy's vector is the sky all galaxies share, so raw cosine similarities bunch near 1;
standardising each feature by its running statistics makes cosine similarity, which the
search, the kNN checks and the anomaly scores use, measure what differs between galaxies.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1, self.bn1 = _conv3x3(cin, width, stride), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = _conv3x3(width, cout), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(cin, cout, stride)
        self.last_bn = self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, as torchvision's v1.5), 1x1 expand x4."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1, self.bn1 = _conv1x1(cin, width), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = _conv3x3(width, width, stride), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = _conv1x1(width, cout), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(cin, cout, stride)
        self.last_bn = self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(_conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))


#: depth -> (block, blocks per stage)
ARCHS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}
STEMS = ("survey", "standard")
STRETCHES = ("asinh", "linear", "none")
NECKS = ("bn", "none")


class InputScaling(nn.Module):
    """Per-band input transform: asinh(x / scale_b), x / scale_b, or nothing.

    `scale` (bands,) is a buffer: set it with `set_scale` from the survey's noise, and it
    travels in the state dict, so every stage that loads the encoder sees the same input.
    """

    def __init__(self, in_channels: int, stretch: str = "asinh") -> None:
        super().__init__()
        if stretch not in STRETCHES:
            raise ConfigError(f"input stretch {stretch!r}: expected one of {STRETCHES}")
        self.stretch = stretch
        self.register_buffer("scale", torch.ones(in_channels))

    def set_scale(self, scale) -> None:
        """Per-band divisors (flux units); each must be finite and > 0."""
        value = torch.as_tensor(scale, dtype=self.scale.dtype).reshape(-1)
        if value.shape != self.scale.shape or not bool(torch.all(torch.isfinite(value))):
            raise ConfigError(f"input scale {value.tolist()}: expected {len(self.scale)} values")
        if not bool(torch.all(value > 0)):
            raise ConfigError(f"input scale {value.tolist()}: every band's must be > 0")
        self.scale.copy_(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stretch == "none":
            return x
        x = x / self.scale.to(x.dtype).view(1, -1, 1, 1)
        return torch.asinh(x) if self.stretch == "asinh" else x

    def extra_repr(self) -> str:
        return f"stretch={self.stretch}"


class ResNet(nn.Module):
    """A ResNet trunk: (N, in_channels, H, W) -> (N, feature_dim) representation."""

    def __init__(
        self,
        arch: str = "resnet50",
        in_channels: int = 5,
        stem: str = "survey",
        input_stretch: str = "none",
        neck: str = "none",
    ):
        super().__init__()
        if arch not in ARCHS:
            raise ConfigError(f"model arch {arch!r}: expected one of {sorted(ARCHS)}")
        if stem not in STEMS:
            raise ConfigError(f"model stem {stem!r}: expected one of {STEMS}")
        if in_channels < 1:
            raise ConfigError(f"model in_channels={in_channels}: must be >= 1")
        if neck not in NECKS:
            raise ConfigError(f"model neck {neck!r}: expected one of {NECKS}")
        block, counts = ARCHS[arch]
        self.arch, self.stem_kind, self.in_channels = arch, stem, in_channels
        self.input = InputScaling(in_channels, input_stretch)
        stride = 1 if stem == "survey" else 2
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, 64, 7, stride=stride, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
        ]
        if stem == "standard":
            layers.append(nn.MaxPool2d(3, stride=2, padding=1))
        self.stem = nn.Sequential(*layers)
        stages, cin = [], 64
        for i, (width, n) in enumerate(zip((64, 128, 256, 512), counts)):
            blocks = []
            for j in range(n):
                blocks.append(block(cin, width, stride=2 if (i > 0 and j == 0) else 1))
                cin = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = cin
        self.neck_kind = neck
        self.neck = nn.BatchNorm1d(cin) if neck == "bn" else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # each residual branch starts as the identity (Goyal et al. 2017): stabler at large batch
        for m in self.modules():
            if isinstance(m, (BasicBlock, Bottleneck)):
                nn.init.zeros_(m.last_bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.pooled(x))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The average-pooled features before the neck, (N, feature_dim)."""
        return torch.flatten(self.pool(self.stages(self.stem(self.input(x)))), 1)

    def with_texture(self, x: torch.Tensor, stage: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(forward's representation, the texture of stage `stage`, 1-4), in one pass.

        The texture is each channel's mean and standard deviation over the stage's
        feature map, (N, 2 x channels), in float32: statistics of local structure (a
        ring's edges, an arc's curvature) that the final average pool mixes with the
        galaxy's overall light (Gatys et al. 2016 read style from such statistics)."""
        if not 1 <= stage <= len(self.stages):
            raise ConfigError(f"texture stage {stage}: expected 1 to {len(self.stages)}")
        h = self.stem(self.input(x))
        texture = None
        for i, block in enumerate(self.stages, 1):
            h = block(h)
            if i == stage:
                maps = h.float().flatten(2)
                texture = torch.cat([maps.mean(2), maps.std(2)], dim=1)
        return self.neck(torch.flatten(self.pool(h), 1)), texture


def build_encoder(
    arch: str,
    in_channels: int,
    stem: str = "survey",
    input_stretch: str = "none",
    neck: str = "none",
) -> ResNet:
    """The encoder trunk named by `arch` (resnet18, resnet34, resnet50); its input scale
    is 1 until `encoder.input.set_scale` sets it."""
    return ResNet(arch, in_channels, stem, input_stretch, neck)
