"""ResNets for any number of bands, written out (no torchvision).

The survey stem (Hayat et al. 2021): a 7x7 stride-1 convolution and no max-pool, so a
64x64 cutout keeps its resolution into the first stage (64 -> 64 -> 32 -> 16 -> 8). The
standard ImageNet stem (7x7 stride 2 + max-pool) is an option for large cutouts.
The network returns the pooled representation (512-d ResNet-18, 2048-d ResNet-50).
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


class ResNet(nn.Module):
    """A ResNet trunk: (N, in_channels, H, W) -> (N, feature_dim) representation."""

    def __init__(self, arch: str = "resnet50", in_channels: int = 5, stem: str = "survey"):
        super().__init__()
        if arch not in ARCHS:
            raise ConfigError(f"model arch {arch!r}: expected one of {sorted(ARCHS)}")
        if stem not in STEMS:
            raise ConfigError(f"model stem {stem!r}: expected one of {STEMS}")
        if in_channels < 1:
            raise ConfigError(f"model in_channels={in_channels}: must be >= 1")
        block, counts = ARCHS[arch]
        self.arch, self.stem_kind, self.in_channels = arch, stem, in_channels
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
        return torch.flatten(self.pool(self.stages(self.stem(x))), 1)


def build_encoder(arch: str, in_channels: int, stem: str = "survey") -> ResNet:
    """The encoder trunk named by `arch` (resnet18, resnet34, resnet50)."""
    return ResNet(arch, in_channels, stem)
