"""Tests for digitrec.data.strokes: digits drawn from pen-stroke templates."""

from __future__ import annotations

import numpy as np
import pytest

from digitrec.data.strokes import TEMPLATES, _spline, stroke_glyph, writer


def test_every_digit_has_templates_inside_the_unit_box():
    assert sorted(TEMPLATES) == list(range(10))
    for label, templates in TEMPLATES.items():
        assert templates, label
        for strokes in templates:
            pts = np.array([p for stroke in strokes for p in stroke])
            assert pts.min() >= -0.06 and pts.max() <= 1.06, (label, pts.min(), pts.max())


def test_spline_passes_through_its_control_points():
    pts = np.array([[0.0, 0.0], [1.0, 2.0], [3.0, 1.0], [4.0, 4.0]])
    curve = _spline(pts, per_segment=5)
    for p in pts:
        assert np.min(np.linalg.norm(curve - p, axis=1)) < 1e-9
    np.testing.assert_array_equal(_spline(pts[:2]), pts[:2])  # a straight stroke stays as it is


@pytest.mark.parametrize("label", range(10))
def test_glyph_is_cropped_ink_of_about_the_asked_height(label):
    rng = np.random.default_rng(label)
    for template in range(len(TEMPLATES[label])):
        g = stroke_glyph(label, 40, 4.0, rng, {label: template})
        assert g.dtype == np.float32 and g.min() >= 0.0 and g.max() <= 1.0
        assert 34 <= g.shape[0] <= 54, g.shape  # 90-105% of 40 px, plus the pen and the jitter
        assert g[0].max() > 0.1 and g[-1].max() > 0.1 and g[:, 0].max() > 0.1 and g[:, -1].max() > 0.1
        assert (g > 0.5).mean() > 0.05  # visible strokes
        if label != 1:  # a plain "1" is little wider than its pen
            assert (g > 0.5).mean() < 0.6  # strokes, not a blot


def test_writer_is_seeded_and_fixes_each_digits_template():
    a, b = writer(np.random.default_rng(3)), writer(np.random.default_rng(3))
    assert a == b and sorted(a) == list(range(10))
    assert all(0 <= a[d] < len(TEMPLATES[d]) for d in a)
    styles = {tuple(writer(np.random.default_rng(s)).values()) for s in range(20)}
    assert len(styles) > 10  # writers differ


def test_stroke_writers_draw_the_digits_mnist_left_blank(monkeypatch):
    """With blank MNIST digits, lines leave digit ink only where a stroke writer draws them."""
    import digitrec.data.paper as paper
    from digitrec.read.lineprep import line_input

    blank, labels = np.zeros((4, 28, 28), np.uint8), np.array([4, 9, 2, 1])

    def ink(share: float) -> float:
        monkeypatch.setattr(paper, "STROKE_WRITERS", share)
        return float(np.median([(line_input(paper.render_line(blank, labels, np.random.default_rng(s))).image
                                 > 0.5).mean() for s in range(40)]))
    assert ink(1.0) > 1.3 * ink(0.0)
