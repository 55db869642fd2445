"""Tests for digitrec.read.lineprep: polarity, paper flattening, scaling to the line height, locating a line."""

from __future__ import annotations

import numpy as np
import pytest

from digitrec.models.registry import LINE_HEIGHT, LINE_STRIDE
from digitrec.read.lineprep import MAX_LINE_WIDTH, READ_WHOLE, flatten_paper, ink_is_dark, line_input, locate


def stroke_on_paper(h: int = 40, w: int = 120, paper: float = 0.8, ink: float = 0.2) -> np.ndarray:
    img = np.full((h, w), paper, np.float32)
    img[h // 4 : 3 * h // 4, w // 2 : w // 2 + 3] = ink  # one vertical stroke
    return img


def test_polarity_is_told_from_the_extremes_around_the_paper():
    light = stroke_on_paper()  # a thin stroke: 1.25% of the pixels
    assert ink_is_dark(light) and not ink_is_dark(1.0 - light)
    assert line_input(light).inverted and not line_input(1.0 - light).inverted
    np.testing.assert_allclose(line_input(light).image, line_input(1.0 - light).image, atol=1e-6)  # same input


def test_flatten_paper_removes_uneven_light_and_stretches_ink():
    ramp = np.linspace(0.0, 0.5, 128, dtype=np.float32)[None, :].repeat(32, axis=0)  # light across
    ink = ramp.copy()
    ink[8:24, 60:63] += 0.3  # a faint stroke on it
    flat = flatten_paper(ink)
    assert flat[8:24, 60:63].min() > 0.9  # the faint stroke at full strength
    assert flat[:, :50].max() < 0.1 and flat[:, 70:].max() < 0.1  # the ramp is gone (unflattened: up to 1)


def test_flatten_paper_keeps_blank_paper_faint():
    noise = np.random.default_rng(0).normal(0.5, 0.01, (32, 100)).astype(np.float32)
    assert flatten_paper(noise).max() < 0.5


def test_line_input_scales_to_the_line_height():
    img = stroke_on_paper(h=60, w=150)
    view = line_input(img)
    assert view.image.shape[0] == LINE_HEIGHT and view.image.shape[1] % LINE_STRIDE == 0
    assert view.box == (0, 0, 150, 60) and view.scale == pytest.approx(round(150 * 32 / 60) / 150)
    cols = np.flatnonzero(view.image.max(axis=0) > 0.5)
    assert abs(cols.mean() / view.scale - 76) < 3  # the stroke where it was, in input pixels
    crop = line_input(img, (60, 10, 40, 40))
    assert crop.box == (60, 10, 40, 40) and crop.image.shape[0] == LINE_HEIGHT


def test_line_input_caps_very_wide_strips():
    view = line_input(np.full((10, 5000), 0.9, np.float32))
    assert view.image.shape[1] <= MAX_LINE_WIDTH


def test_locate_reads_small_pictures_whole_and_crops_large_ones():
    assert locate(np.zeros((READ_WHOLE, 400)), None) == (0, 0, 400, READ_WHOLE)
    big = np.zeros((2000, 3000))
    assert locate(big, None) is None
    x, y, w, h = locate(big, (1000, 900, 600, 100))
    assert x < 1000 and y < 900 and x + w > 1600 and y + h > 1000  # margins around the ink
    assert (y, h) == (900 - 36, 100 + 72)
    edge = locate(big, (0, 0, 300, 100))
    assert edge[:2] == (0, 0)


def test_locate_reads_the_band_of_a_number_written_small_on_a_small_card():
    """A 120-px card with a 30-px number: read around the number, or its digits shrink to 8 px."""
    card = np.zeros((120, 300))
    x, y, w, h = locate(card, (100, 40, 120, 30))
    assert h < 60 and y <= 40 and y + h >= 70 and x <= 100 and x + w >= 220
    # A band filling most of the picture (a cut-out cheque amount): read whole.
    assert locate(card, (10, 10, 280, 90)) == (0, 0, 300, 120)
