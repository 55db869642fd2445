"""Tests for digitrec.data.paper: the generated grey number lines the grey line reader trains on."""

from __future__ import annotations

import numpy as np
import pytest

from digitrec.data.paper import render_line
from digitrec.read.lineprep import line_input


def digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` blocky made-up 28x28 digits (a bar each), uint8, and their labels (1s and 7s among them)."""
    out = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        out[i, 4:24, 10 : 13 + (i + seed) % 5] = 255
    return out, (np.arange(n) * 3 + seed) % 10


def test_render_line_is_seeded_and_in_range():
    a = render_line(*digits(4), np.random.default_rng(7))
    b = render_line(*digits(4), np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    c = render_line(*digits(4), np.random.default_rng(8))
    assert a.shape != c.shape or not np.array_equal(a, c)
    for seed in range(30):
        img = render_line(*digits(1 + seed % 6), np.random.default_rng(seed))
        assert img.dtype == np.float32 and img.ndim == 2
        assert 14 <= img.shape[0] <= 72 and img.shape[1] >= 4
        assert img.min() >= 0.0 and img.max() <= 1.0


def test_longer_numbers_make_wider_lines():
    rng = np.random.default_rng(0)
    ratio = {n: np.median([(lambda im: im.shape[1] / im.shape[0])(render_line(*digits(n), rng)) for _ in range(25)])
             for n in (1, 6)}
    assert ratio[6] > 2.5 * ratio[1]


@pytest.mark.parametrize("n", [0, 3])
def test_lines_with_and_without_digits_render(n):
    for seed in range(10):
        img = render_line(*digits(n), np.random.default_rng(seed))
        assert np.isfinite(img).all() and img.size > 0


def test_digits_leave_ink_that_the_prepared_line_shows():
    """With digits there is clearly more bright ink after preparation than on a line without any."""
    def ink(n: int) -> float:
        return float(np.median([(line_input(render_line(*digits(n), np.random.default_rng(s))).image > 0.5).mean()
                                for s in range(40)]))
    assert ink(4) > 1.4 * ink(0)
