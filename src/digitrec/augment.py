"""Data augmentation on in-memory image tensors: batched random affine warps, never flips.

The random parameters are drawn on the CPU from an explicit generator and then moved to the
images' device, so the same seed gives the same warps on CPU and CUDA and a training run can
save and restore the generator to resume exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["AffineAugment", "random_affine_matrices", "random_affine"]


@dataclass(frozen=True)
class AffineAugment:
    """Ranges of a random affine warp; each value is drawn uniformly in [-range, +range]."""

    rotate: float = 0.0  # rotation, degrees
    shift: float = 0.0  # translation along each axis, pixels
    scale: float = 0.0  # relative zoom, e.g. 0.1 = 90%..110%
    shear: float = 0.0  # horizontal shear angle, degrees

    @property
    def enabled(self) -> bool:
        """False when every range is zero (the warp would be the identity)."""
        return any(v != 0 for v in (self.rotate, self.shift, self.scale, self.shear))

    def validate(self) -> None:
        """Raise ``ValueError`` for ranges that are negative, not finite or would flip images."""
        for name in ("rotate", "shift", "scale", "shear"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"augmentation {name} must be a finite number >= 0, got {value!r}")
        if self.scale >= 1:
            raise ValueError(f"augmentation scale must be < 1 (a zoom of 0 or less would flip), got {self.scale}")
        if self.rotate > 90 or self.shear > 60:
            raise ValueError("augmentation rotate must be <= 90 and shear <= 60 degrees (digits must stay upright)")


def random_affine_matrices(n: int, aug: AffineAugment, size: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 2, 3) float32 CPU matrices for ``F.affine_grid`` (output -> input coordinates in [-1, 1])."""

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * limit

    # Always draw all four so the generator advances the same way whatever ranges are zero.
    angle = torch.deg2rad(uniform(aug.rotate))
    shear = torch.tan(torch.deg2rad(uniform(aug.shear)))
    zoom = 1 + uniform(aug.scale)
    shift = torch.stack([uniform(aug.shift), uniform(aug.shift)], dim=1) * (2 / size)  # (n, 2), grid units
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # (n, 2, 2)
    shr = torch.zeros(n, 2, 2, dtype=torch.float64)
    shr[:, 0, 0], shr[:, 0, 1], shr[:, 1, 1] = 1, shear, 1
    # Sampling the input at (rot @ shear / zoom) p shows it zoomed by `zoom`, sheared and rotated.
    linear = rot @ shr / zoom[:, None, None]  # (n, 2, 2)
    return torch.cat([linear, shift[:, :, None]], dim=2).float()  # (n, 2, 3)


def random_affine(
    images: torch.Tensor, aug: AffineAugment, generator: torch.Generator, fill: float = 0.0
) -> torch.Tensor:
    """Warp a batch (B, C, H, W) of float images, each with its own random affine transform.

    ``fill`` is the value of the pixels that come from outside the image (the background of
    the images as given, e.g. the normalised value of black). Bilinear sampling.
    """
    b, _, h, w = images.shape
    theta = random_affine_matrices(b, aug, h, generator).to(images.device)
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)  # (B, H, W, 2)
    # grid_sample pads with zeros; shift so that zero is the background, then shift back.
    out = F.grid_sample(images.float() - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (out + fill).to(images.dtype)
