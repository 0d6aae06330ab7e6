"""Encoders (ResNets for any number of bands) and projection heads."""

from .heads import projection_head
from .resnet import ARCHS, STEMS, ResNet, build_encoder

__all__ = ["ARCHS", "STEMS", "ResNet", "build_encoder", "projection_head"]
