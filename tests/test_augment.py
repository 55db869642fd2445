"""Tests for digitrec.augment: random affine warps of image batches."""

from __future__ import annotations

import pytest
import torch

from digitrec.augment import AffineAugment, random_affine, random_affine_matrices


def blob_batch(n: int = 6) -> torch.Tensor:
    """(n, 1, 28, 28) images: a bright 6x6 square right of centre on a background of -0.5."""
    x = torch.full((n, 1, 28, 28), -0.5)
    x[:, :, 11:17, 15:21] = 2.0
    return x


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_identity_when_all_ranges_are_zero():
    aug = AffineAugment()
    assert not aug.enabled
    x = blob_batch()
    torch.testing.assert_close(random_affine(x, aug, gen(), fill=-0.5), x, atol=1e-5, rtol=0)


def test_fill_is_the_background_and_shapes_are_kept():
    x = blob_batch(8)
    out = random_affine(x, AffineAugment(rotate=30, shift=4, scale=0.2, shear=15), gen(), fill=-0.5)
    assert out.shape == x.shape and out.dtype == x.dtype
    # Pixels pulled in from outside the image get the background, never 0.
    assert out.min() >= -0.5 - 1e-5 and out.max() <= 2.0 + 1e-5
    assert torch.isclose(out[:, :, 0, 0], torch.tensor(-0.5)).all()


def test_seeded_and_each_image_differs():
    aug = AffineAugment(rotate=15, shift=3, scale=0.1, shear=10)
    x = blob_batch(4)
    a, b = random_affine(x, aug, gen(1), fill=-0.5), random_affine(x, aug, gen(1), fill=-0.5)
    assert torch.equal(a, b)
    assert not torch.equal(a, random_affine(x, aug, gen(2), fill=-0.5))
    assert not torch.equal(a[0], a[1])  # one transform per image, not per batch


def test_shift_moves_ink_by_at_most_the_range():
    x = blob_batch(32)
    out = random_affine(x, AffineAugment(shift=3), gen(), fill=-0.5)
    cols = torch.arange(28.0)
    ink = (out[:, 0] + 0.5).clamp(min=0)  # (32, 28, 28) ink above the background
    cx = (ink.sum(1) * cols).sum(1) / ink.sum((1, 2))
    moved = cx - 17.5  # the square's centre column before the shift
    assert moved.abs().max() <= 3 + 0.05
    assert moved.abs().max() > 1  # it does move


def test_never_flips():
    # A pure rotation of +-10 degrees keeps the ink right of centre: no mirror images.
    x = blob_batch(64)
    out = random_affine(x, AffineAugment(rotate=10, scale=0.1, shear=10), gen(), fill=-0.5)
    ink = (out[:, 0] + 0.5).clamp(min=0)
    cx = (ink.sum(1) * torch.arange(28.0)).sum(1) / ink.sum((1, 2))
    assert (cx > 14).all()
    m = random_affine_matrices(256, AffineAugment(rotate=90, scale=0.9, shear=60), 28, gen())
    assert (torch.linalg.det(m[:, :, :2]) > 0).all()  # orientation-preserving


def test_matrices_do_not_depend_on_which_ranges_are_set():
    # All four parameters are always drawn, so the generator advances the same way.
    g1, g2 = gen(), gen()
    random_affine_matrices(5, AffineAugment(rotate=10), 28, g1)
    random_affine_matrices(5, AffineAugment(shift=2, shear=3), 28, g2)
    assert torch.equal(g1.get_state(), g2.get_state())


@pytest.mark.parametrize("kwargs, message", [
    ({"rotate": -1}, "rotate must be"), ({"shift": float("nan")}, "shift must be"),
    ({"scale": 1.0}, "scale must be < 1"), ({"shear": 70}, "shear <= 60"), ({"rotate": True}, "rotate must be"),
])
def test_validate_rejects(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AffineAugment(**kwargs).validate()
