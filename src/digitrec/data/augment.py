"""Data augmentation on in-memory image tensors: batched random affine and elastic warps, never flips.

The random parameters are drawn on the CPU from an explicit generator and then moved to the
images' device, so the same seed gives the same warps on CPU and CUDA and a training run can
save and restore the generator to resume exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["AffineAugment", "MAX_ELASTIC_SIGMA", "random_affine_matrices", "random_elastic_field", "random_affine"]

MAX_ELASTIC_SIGMA = 28.0  # largest elastic smoothness accepted, pixels (an MNIST image's side)


@dataclass(frozen=True)
class AffineAugment:
    """Ranges of a random affine warp; each value is drawn uniformly in [-range, +range]."""

    rotate: float = 0.0  # rotation, degrees
    shift: float = 0.0  # translation along each axis, pixels
    scale: float = 0.0  # relative zoom, e.g. 0.1 = 90%..110%
    shear: float = 0.0  # horizontal shear angle, degrees
    elastic: float = 0.0  # elastic distortion strength (Simard et al.'s alpha), pixels; 0 = off
    elastic_sigma: float = 4.0  # smoothness of the elastic displacement field, Gaussian sigma, pixels

    @property
    def enabled(self) -> bool:
        """False when every range is zero (the warp would be the identity)."""
        return any(v != 0 for v in (self.rotate, self.shift, self.scale, self.shear, self.elastic))

    def validate(self) -> None:
        """Raise ``ValueError`` for ranges that are negative, not finite or would flip images."""
        # Beyond about a digit's width the blur is flat anyway (and its kernel only grows).
        if not (isinstance(self.elastic_sigma, (int, float)) and not isinstance(self.elastic_sigma, bool)
                and math.isfinite(self.elastic_sigma) and 0 < self.elastic_sigma <= MAX_ELASTIC_SIGMA):
            raise ValueError(f"elastic sigma must be a number in (0, {MAX_ELASTIC_SIGMA:g}] pixels, "
                             f"got {self.elastic_sigma!r}")
        for name in ("rotate", "shift", "scale", "shear", "elastic"):
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


def _blur_matrix(size: int, sigma: float) -> torch.Tensor:
    """(size, size) matrix M with M @ v = v blurred by a Gaussian of ``sigma``, reflect borders."""
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel /= kernel.sum()
    # Reflect padding ("dcb|abcd|cba") keeps the field's strength even at the borders; folding
    # the mirrored taps back on the image makes the blur one small matrix product per axis.
    pos = torch.arange(size)[:, None] + taps.long()[None, :]  # (size, taps)
    period = 2 * (size - 1)
    pos = pos.remainder(period)
    pos = torch.where(pos >= size, period - pos, pos)
    matrix = torch.zeros(size, size)
    matrix.scatter_add_(1, pos, kernel.expand(size, -1).contiguous())
    return matrix


def random_elastic_field(n: int, size: int, alpha: float, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """(n, size, size, 2) float32 CPU displacements in ``grid_sample`` units (Simard et al. 2003).

    Uniform noise in [-1, 1] per pixel and axis, smoothed by a Gaussian of ``sigma`` pixels and
    scaled by ``alpha`` pixels: a smooth random field that bends strokes the way hands vary,
    which an affine warp cannot.
    """
    noise = torch.rand(n, size, size, 2, generator=generator) * 2 - 1  # (n, S, S, 2)
    blur = _blur_matrix(size, sigma)
    field = torch.einsum("ij,njkc,lk->nilc", blur, noise, blur)  # blurred along rows and columns
    return field * (alpha * 2 / size)


def random_affine(
    images: torch.Tensor, aug: AffineAugment, generator: torch.Generator, fill: float = 0.0
) -> torch.Tensor:
    """Warp a batch (B, C, H, W) of float images, each with its own random affine transform.

    With ``aug.elastic`` > 0, a random elastic displacement field is added to each affine
    sampling grid, so both warps cost one resampling. ``fill`` is the value of the pixels that
    come from outside the image (the background of the images as given, e.g. the normalised
    value of black). Bilinear sampling.
    """
    b, _, h, w = images.shape
    theta = random_affine_matrices(b, aug, h, generator).to(images.device)
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)  # (B, H, W, 2)
    if aug.elastic > 0:
        # Drawn only when on, so recipes without it keep their random streams (and results).
        if h != w:
            raise ValueError(f"elastic augmentation needs square images, got {h}x{w}")
        grid = grid + random_elastic_field(b, h, aug.elastic, aug.elastic_sigma, generator).to(images.device)
    # grid_sample pads with zeros; shift so that zero is the background, then shift back.
    out = F.grid_sample(images.float() - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (out + fill).to(images.dtype)
