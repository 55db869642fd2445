"""Tests for reading whole numbers (digitrec.read.segment, Recogniser.read) and the synthetic sets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import requires_mnist
from PIL import Image, ImageDraw

from digitrec.data.preprocess import ink_map
from digitrec.data.synthetic import digit_line, letter_image, photographed_digit, scribble_image
from digitrec.infer.recogniser import load
from digitrec.read.segment import (
    NumberReading,
    _best_reading,
    _bridge,
    _cut_path,
    _join_slivers,
    _score,
    _split_along,
    segment,
)


@pytest.fixture(scope="module")
def seed():
    """The segmenter (with the bundled piece verifier): reading by cutting digits apart, as before the grey reader."""
    return load("seed", line_reader="none")


def draw_number(underline: bool = False, speck: bool = False, broken: bool = False) -> Image.Image:
    """Black "1 0 7" on a light grey page (optionally with an underline, a speck, a broken 7)."""
    img = Image.new("L", (400, 160), 235)
    d = ImageDraw.Draw(img)
    d.line([(50, 30), (50, 120)], fill=20, width=8)
    d.ellipse([100, 30, 170, 120], outline=20, width=8)
    if broken:  # the 7's bar drawn apart from its stem
        d.line([(220, 30), (290, 30)], fill=20, width=8)
        d.line([(285, 42), (250, 120)], fill=20, width=8)
    else:
        d.line([(220, 30), (290, 30), (250, 120)], fill=20, width=8)
    if underline:
        d.line([(30, 145), (330, 145)], fill=20, width=4)
    if speck:
        d.ellipse([360, 20, 364, 24], fill=20)
    return img


@pytest.mark.parametrize("kwargs", [{}, {"underline": True}, {"speck": True}, {"broken": True}],
                         ids=["plain", "underline", "speck", "broken-stroke"])
def test_read_drawn_number(seed, kwargs):
    reading = seed.read(draw_number(**kwargs))
    assert reading.number == "107"
    assert [d.digit for d in reading.digits] == [1, 0, 7]
    xs = [d.box[0] for d in reading.digits]
    assert xs == sorted(xs)
    x, y, w, h = reading.digits[1].box  # the 0 was drawn in [100, 170] x [30, 120]
    assert abs(x - 98) <= 6 and abs(y - 28) <= 6 and abs(w - 74) <= 8 and abs(h - 94) <= 8
    assert reading.confidence == pytest.approx(np.prod([d.confidence for d in reading.digits]))


def test_read_keeps_leading_zeros(seed):
    img = Image.new("L", (300, 140), 255)
    d = ImageDraw.Draw(img)
    d.ellipse([30, 20, 95, 115], outline=0, width=8)
    d.line([(170, 20), (170, 115)], fill=0, width=8)
    reading = seed.read(img)
    assert reading.number == "01"


def test_read_touching_rings_are_a_known_limit_of_cutting(seed):
    # Two touching rings have no column-projection minimum at the joint, and least-ink cut
    # paths go through the rings' insides: the segmenter reads "22" here. The grey line
    # reader, which needs no cut, reads them (test_linereader).
    img = Image.new("L", (260, 140), 255)
    d = ImageDraw.Draw(img)
    d.ellipse([30, 20, 100, 115], outline=0, width=8)
    d.ellipse([96, 20, 166, 115], outline=0, width=8)  # touches the first 0
    assert seed.read(img).number != "00"


def test_read_boxes_are_in_input_pixels_for_large_images(seed):
    big = draw_number().resize((2400, 960), Image.Resampling.BILINEAR)  # shrunk internally
    reading = seed.read(big)
    assert reading.number == "107"
    x, y, w, h = reading.digits[1].box
    assert abs(x - 600) <= 40 and abs(w - 444) <= 50 and abs(h - 564) <= 50


def test_read_blank_is_no_digit(seed):
    reading = seed.read(Image.new("L", (200, 100), 255))
    assert reading.number is None and reading.digits == () and reading.confidence == 0.0 and reading.unsure
    assert reading.to_dict() == {"number": None, "confidence": 0.0, "unsure": True, "digits": []}


def test_reading_to_dict_is_json_ready(seed):
    d = seed.read(draw_number()).to_dict()
    assert set(d) == {"number", "confidence", "unsure", "digits"}
    assert set(d["digits"][0]) == {"digit", "confidence", "box", "unsure"}
    assert json.loads(json.dumps(d)) == d


def test_min_confidence_flags_unsure(seed):
    strict = load("seed", min_confidence=1.0)
    reading = strict.read(draw_number())
    assert reading.unsure and all(d.unsure for d in reading.digits)
    assert not load("seed", min_confidence=0.0).read(draw_number()).unsure
    assert isinstance(reading, NumberReading)


def confidences(rec):
    """The classifier ``segment`` takes: prepared inputs -> confidence of the best class."""
    return lambda x: np.array([p.confidence for p in rec.predict_arrays(x)])


def test_a_ruled_line_alone_is_no_number(seed):
    # Cut by line heights, a 6 px bar once read as an 18-digit number.
    img = Image.new("L", (400, 60), 255)
    ImageDraw.Draw(img).rectangle([20, 27, 380, 32], fill=0)
    assert seed.read(img).number is None


def test_segment_survives_a_classifier_answering_nan(seed):
    pieces = segment(ink_map(draw_number()), lambda x: np.full(len(x), np.nan))
    assert all(p.input.shape == (28, 28) for p in pieces)  # returns: no endless backtrack


def test_segment_drops_underline_and_speck(seed):
    pieces = segment(ink_map(draw_number(underline=True, speck=True)), confidences(seed))
    assert len(pieces) == 3
    assert all(p.input.shape == (28, 28) for p in pieces)


def test_cut_path_follows_a_slanted_gap():
    # Ink everywhere except a diagonal channel: the cheapest top-to-bottom path is the channel,
    # which no straight column could follow.
    glyph = np.ones((40, 40), np.float32)
    channel = [10 + r // 2 for r in range(40)]
    for r, c in enumerate(channel):
        glyph[r, c] = 0.0
    path = _cut_path(glyph, column=20, reach=15)
    np.testing.assert_array_equal(path, channel)
    assert _cut_path(np.zeros((10, 9), np.float32), column=4, reach=3).tolist() == [4] * 10  # blank: straight


def test_split_along_partitions_the_ink():
    glyph = np.random.default_rng(0).random((12, 20)).astype(np.float32)
    parts = _split_along(glyph, [np.full(12, 6), np.full(12, 13)])
    assert len(parts) == 3
    np.testing.assert_allclose(sum(parts), glyph)
    assert parts[0][:, 7:].sum() == 0 and parts[2][:, :14].sum() == 0


def test_join_slivers_gives_a_sliver_to_its_neighbour():
    big, sliver = np.ones((10, 10), np.float32), np.zeros((10, 10), np.float32)
    sliver[0, 0] = 1.0  # 1% of the ink
    joined = _join_slivers([big, sliver, big.copy()], [0.5, 0.25])
    assert [(p.sum(), cut) for p, cut in joined] == [(100, 0.0), (101, 0.5)]  # the sliver's cut is kept
    assert [p.sum() for p, _ in _join_slivers([big, big.copy(), sliver], [0.5, 0.25])] == [100, 101]
    assert len(_join_slivers([sliver], [])) == 1  # all ink is kept, even if it is all sliver


def test_bridge_closes_a_thin_break_only():
    stroke = np.zeros((40, 9), np.float32)
    stroke[5:35, 3:6] = 1.0
    broken = stroke.copy()
    broken[20:22] = 0.0  # a 2-row break in a 30-row stroke
    np.testing.assert_array_equal(_bridge(broken, height=40), stroke)  # 0.06 * 40: gaps up to 2 rows
    wide_gap = stroke.copy()
    wide_gap[15:25] = 0.0  # 10 rows: two strokes, not a break
    np.testing.assert_array_equal(_bridge(wide_gap, height=40), wide_gap)
    assert _bridge(broken, height=10) is broken  # too small a line to bridge anything


def test_best_reading_maximises_the_total_score():
    # Atoms 0..2: one digit (score -3) and three digits (-0.1 - 0.5 - 1.0) lose to "0" then
    # "1..2" (-0.1 + -0.2); a better candidate for "0" (-0.05) then wins with the same "1..2".
    candidates = [(0, 3, -3.0), (0, 1, -0.1), (1, 3, -0.2), (0, 2, -1.0), (2, 3, -1.0), (1, 2, -0.5)]
    assert _best_reading(candidates, 3) == [1, 2]
    candidates.append((0, 1, -0.05))
    assert _best_reading(candidates, 3) == [6, 2]


def test_score_prefers_confident_tall_pieces_of_digit_width():
    from digitrec.read.segment import _Atom

    def piece(w, h):
        return _Atom(0, 0, w, h, np.ones((h, w), np.float32))

    assert _score(0.99, piece(20, 30), 30) > _score(0.5, piece(20, 30), 30)
    assert _score(0.99, piece(20, 30), 30) > _score(0.99, piece(45, 30), 30)  # 1.5 line heights wide
    assert _score(0.99, piece(20, 30), 30) > _score(0.99, piece(20, 10), 30)  # a stub
    # Relative to the line's best piece: a model whose confidences top out at 0.9 scores alike.
    assert _score(0.9, piece(20, 30), 30, reference=0.9) == pytest.approx(_score(1.0, piece(20, 30), 30))


def test_generators_are_deterministic(real_mnist):
    digits = real_mnist.test_images[:3]
    np.testing.assert_array_equal(photographed_digit(digits[0], 5), photographed_digit(digits[0], 5))
    np.testing.assert_array_equal(digit_line(digits, 5), digit_line(digits, 5))
    assert not np.array_equal(digit_line(digits, 5), digit_line(digits, 6))
    np.testing.assert_array_equal(scribble_image(3), scribble_image(3))
    np.testing.assert_array_equal(letter_image("A", None, 1), letter_image("A", None, 1))


@requires_mnist
def test_photographed_digits_are_read(seed, real_mnist):
    """A small sample of the bench's photographed set (test digits); the bench measures the rest."""
    n = 40
    preds = seed.predict([photographed_digit(real_mnist.test_images[i], 1_000_000 + i) for i in range(n)])
    correct = sum(p.digit == y for p, y in zip(preds, real_mnist.test_labels[:n]))
    assert correct >= n - 2


def lines_read(rec, images, labels, count: int, rng_seed: int, first_line: int, touching: float) -> int:
    """How many of ``count`` generated 3-digit lines ``rec`` reads exactly."""
    rng = np.random.default_rng(rng_seed)
    ok = 0
    for i in range(count):
        idx = rng.choice(len(images), 3, replace=False)
        truth = "".join(str(int(labels[j])) for j in idx)
        ok += rec.read(digit_line([images[j] for j in idx], first_line + i, touching=touching)).number == truth
    return ok


@requires_mnist
def test_spaced_lines_are_read(seed, real_mnist):
    assert lines_read(seed, real_mnist.test_images, real_mnist.test_labels, 10, 0, 0, touching=0.0) >= 7


@requires_mnist
def test_touching_lines_from_training_digits_are_read(seed, real_mnist):
    """Every gap touching (the hardest case), digits from the training split."""
    ok = lines_read(seed, real_mnist.train_images, real_mnist.train_labels, 30, 1, 100, touching=1.0)
    # Cutting at column-projection minima alone read 12 of these 30; least-ink paths and
    # recognition-based merging read 22.
    assert ok >= 17
