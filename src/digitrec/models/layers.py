"""Building blocks the architectures share: a conv-BN-ReLU stack and the probe for a dense head's input size."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["flat_size", "conv_bn"]


def flat_size(features: nn.Module, in_channels: int, image_size: int) -> int:
    """Values per image that ``features`` hands to the dense head (one probe image, eval mode)."""
    was_training = features.training
    with torch.no_grad():
        flat = features.eval()(torch.zeros(1, in_channels, image_size, image_size)).numel()
    features.train(was_training)
    return flat


def conv_bn(cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1, padding: int = 0) -> list[nn.Module]:
    # No conv bias: the BatchNorm shift that follows makes it redundant.
    return [nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
