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
    assert ink(4) > 1.3 * ink(0)  # thin pens (about half the lines lose 1-2 px of stroke) leave less ink


def test_joined_digits_get_a_stroke_between_them():
    """A ligature runs from the right edge of one digit's ink to the left edge of the next one."""
    from digitrec.data.paper import _join

    glyph = np.zeros((40, 12), np.float32)
    glyph[:, 4:8] = 1.0  # a bar 4 px wide
    canvas = np.zeros((120, 100), np.float32)
    canvas[40:80, 14:18] = 1.0
    canvas[40:80, 64:68] = 1.0
    before = canvas.copy()
    joined = False
    for seed in range(10):
        canvas = before.copy()
        _join(canvas, [(glyph, 40, 10), (glyph, 40, 60)], pen=2, rng=np.random.default_rng(seed))
        gap = canvas[:, 19:63]
        assert (canvas >= before).all()  # it only adds ink
        joined |= bool((gap > 0.5).any(axis=0).all())  # ink in every column of the gap: one stroke across
    assert joined


def test_thinner_pen_keeps_strokes():
    from digitrec.data.paper import _thinner

    canvas = np.zeros((60, 60), np.float32)
    canvas[10:50, 20:27] = 1.0  # a 7 px stroke loses one or two pixels
    hair = np.zeros((60, 60), np.float32)
    hair[10:50, 40:42] = 1.0  # a 2 px one cannot lose two: the pen falls back to one
    for seed in range(6):
        thin = _thinner(canvas, np.random.default_rng(seed))
        assert (thin <= canvas).all()
        assert 5 <= int((thin[30] > 0.5).sum()) <= 6
        assert int((_thinner(hair, np.random.default_rng(seed))[30] > 0.5).sum()) == 1


def test_line_digits_make_round_numbers_and_repeats_as_often_as_set():
    from digitrec.data import paper

    rng = np.random.default_rng(3)
    numbers = ["".join(map(str, paper.line_digits(5, rng))) for _ in range(4000)]
    assert all(len(n) == 5 for n in numbers)
    round_ = [n for n in numbers if n.endswith("0") and n.rstrip("0")[-1:] != ""]
    # A uniform number ends in 0 one time in ten: the round ones come on top of those.
    assert 0.3 + 0.7 * 0.1 - 0.04 < len(round_) / len(numbers) < 0.3 + 0.7 * 0.1 + 0.04
    assert sum("000" in n for n in numbers) / len(numbers) > 0.1  # uniform digits: about 0.3%
    assert {len(set(n)) for n in numbers} >= {1, 2, 5}  # "11111", "70000", "12345"
    assert [paper.line_digits(0, rng).size, paper.line_digits(1, rng).size] == [0, 1]


def test_grey_training_batches_take_their_numbers_from_line_digits():
    from digitrec.train.lines import _batch

    images, labels = digits(40)
    by_class = [np.flatnonzero(labels == d) for d in range(10)]
    rng = np.random.default_rng(0)
    for _ in range(3):
        x, targets, lengths, frames = _batch(images, labels, rng, 8, 5, (0.0,), "paper", by_class)
        assert x.shape[0] == 8 and int(lengths.sum()) == targets.numel()
        assert targets.min() >= 1 and targets.max() <= 10  # digits 0-9 after the blank
    # The same stream of round numbers and repeats: many more zeros than a uniform tenth.
    drawn = np.concatenate([_batch(images, labels, rng, 16, 6, (0.0,), "paper", by_class)[1].numpy()
                            for _ in range(8)])
    assert np.mean(drawn == 1) > 0.15  # target 1 is the digit 0
