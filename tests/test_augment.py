"""Tests for digitrec.data.augment: random affine and elastic warps of image batches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from digitrec.data.augment import (
    AffineAugment,
    _blur_matrix,
    random_affine,
    random_affine_matrices,
    random_elastic_field,
)


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
    ({"elastic": -1}, "elastic must be"), ({"elastic": 34, "elastic_sigma": 0}, "elastic sigma must be"),
    ({"elastic": 34, "elastic_sigma": 1e300}, r"elastic sigma must be a number in \(0, 28\]"),
])
def test_validate_rejects(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AffineAugment(**kwargs).validate()


# --- elastic distortion ---------------------------------------------------------------------------


@pytest.mark.parametrize("size, sigma", [(28, 4.0), (28, 1.0), (8, 4.0)])
def test_blur_matrix_is_a_reflect_padded_gaussian(size, sigma):
    v = torch.randn(3, size, generator=gen())
    radius = max(1, int(torch.tensor(3 * sigma).ceil()))
    taps = torch.arange(-radius, radius + 1.0)
    k = torch.exp(-0.5 * (taps / sigma) ** 2)
    k = k / k.sum()
    if radius < size:  # F.pad's reflect mode needs a pad smaller than the input
        ref = F.conv1d(F.pad(v[:, None], (radius, radius), mode="reflect"), k.view(1, 1, -1))[:, 0]
        torch.testing.assert_close(v @ _blur_matrix(size, sigma).T, ref, atol=1e-5, rtol=0)
    # A blur keeps a constant signal constant, whatever the border handling.
    torch.testing.assert_close(_blur_matrix(size, sigma).sum(1), torch.ones(size))


def test_elastic_field_is_smooth_seeded_and_scaled_by_alpha():
    f = random_elastic_field(64, 28, 34.0, 4.0, gen(3))
    assert f.shape == (64, 28, 28, 2)
    assert torch.equal(f, random_elastic_field(64, 28, 34.0, 4.0, gen(3)))
    px = f * 14  # grid units -> pixels
    amplitude = px.std()
    assert 1.0 < amplitude < 2.5  # Simard's alpha 34, sigma 4: displacements of a pixel or two
    step = (px[:, 1:] - px[:, :-1]).abs().mean()
    assert step < 0.25 * px.abs().mean()  # neighbours move together: smooth, not pixel noise
    torch.testing.assert_close(random_elastic_field(64, 28, 68.0, 4.0, gen(3)), 2 * f)


def test_elastic_warp_bends_the_image_and_draws_only_when_on():
    x = blob_batch(8)
    g_aff, g_el = gen(5), gen(5)
    affine = random_affine(x, AffineAugment(rotate=10), g_aff, fill=-0.5)
    bent = random_affine(x, AffineAugment(rotate=10, elastic=34), g_el, fill=-0.5)
    assert not torch.allclose(bent, affine, atol=1e-3)
    assert bent.min() >= -0.5 - 1e-5 and bent.max() <= 2.0 + 1e-5
    # The affine parameters come first from the same stream, so the warps agree up to the field's
    # local displacements (a pixel or two)...
    ink = lambda t: (t[:, 0] + 0.5).clamp(min=0)  # noqa: E731
    cx = lambda t: (ink(t).sum(1) * torch.arange(28.0)).sum(1) / ink(t).sum((1, 2))  # noqa: E731
    assert (cx(bent) - cx(affine)).abs().max() < 4
    # ...and without elastic nothing more is drawn: recipes without it keep their results.
    g_off = gen(5)
    random_affine(x, AffineAugment(rotate=10, elastic=0), g_off, fill=-0.5)
    assert torch.equal(g_off.get_state(), g_aff.get_state())
    assert not torch.equal(g_el.get_state(), g_aff.get_state())
