"""Tests for digitrec.plots: every figure is written whole, in the format its suffix names."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image
from torch import nn

from digitrec import plots
from digitrec.errors import ConfigError
from digitrec.infer.recogniser import Prediction
from digitrec.models.registry import create_model
from digitrec.plots import (
    plot_confusion,
    plot_history,
    plot_misclassified,
    plot_model_diagram,
    plot_prediction,
    plot_samples,
)
from digitrec.train.engine import EpochRecord

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG file, after checking its signature and decoding all of it."""
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    with Image.open(path) as img:
        img.load()  # a truncated file fails here, not only at the header
        return img.size


def assert_png(path: Path, written: Path, min_side: int = 200, max_side: int = 4000) -> tuple[int, int]:
    """The function returned ``path`` and left a decodable PNG of plausible size there."""
    assert written == path
    width, height = png_size(path)
    assert min_side <= width <= max_side and min_side <= height <= max_side, (width, height)
    return width, height


@pytest.fixture
def saved(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """Every figure the module saves, in order, so tests can inspect what was drawn."""
    figures: list[Figure] = []
    real_save = plots._save

    def recording_save(fig: Figure, path):
        figures.append(fig)
        return real_save(fig, path)

    monkeypatch.setattr(plots, "_save", recording_save)
    return figures


def texts(fig: Figure) -> list[str]:
    """All strings drawn in ``fig``: titles, annotations, tick labels, legends."""
    return [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")) if t.get_text()]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def images(rng: np.random.Generator) -> np.ndarray:
    """30 random uint8 28x28 images."""
    return rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)


@pytest.fixture
def labels() -> np.ndarray:
    """Labels 0..9, three times over, for ``images``."""
    return np.arange(30) % 10


def make_history(epochs: int, validation: bool = True) -> list[EpochRecord]:
    return [
        EpochRecord(
            epoch=e,
            loss=0.5 / e,
            accuracy=1 - 0.1 / e,
            val_loss=0.4 / e if validation else None,
            val_accuracy=1 - 0.08 / e if validation else None,
            seconds=2.0,
            images_per_s=30_000.0,
        )
        for e in range(1, epochs + 1)
    ]


def make_prediction(probabilities: np.ndarray) -> Prediction:
    probs = tuple(float(p) for p in probabilities / probabilities.sum())
    ranked = sorted(enumerate(probs), key=lambda dp: -dp[1])
    digit, confidence = ranked[0]
    return Prediction(digit, confidence, probs, tuple(ranked[:3]), np.zeros((28, 28), np.float32))


# --- the shared suffix check and atomic save -------------------------------------------------


def tiny_model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))


# Each public function, called with valid data on (images, labels, path).
CALLS = {
    "samples": lambda im, lb, p: plot_samples(im, lb, p),
    "history": lambda im, lb, p: plot_history(make_history(2), p),
    "confusion": lambda im, lb, p: plot_confusion(np.eye(10, dtype=np.int64) * 5, p),
    "misclassified": lambda im, lb, p: plot_misclassified(im, lb, (lb + 1) % 10, np.full(len(lb), 0.5), p),
    "prediction": lambda im, lb, p: plot_prediction(im[0], make_prediction(np.arange(1.0, 11.0)), p),
    "diagram": lambda im, lb, p: plot_model_diagram(tiny_model(), p),
}


@pytest.mark.parametrize("name", CALLS)
def test_unsupported_suffix_fails_before_drawing_and_leaves_no_file(
    name: str, images: np.ndarray, labels: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_drawing(*args: object, **kwargs: object) -> None:
        raise AssertionError("a figure was created before the suffix was checked")

    monkeypatch.setattr(plots, "Figure", no_drawing)
    with pytest.raises(ConfigError, match=r"unsupported plot format '\.jpg' \(use \.png, \.svg or \.pdf\)"):
        CALLS[name](images, labels, tmp_path / "plot.jpg")
    assert list(tmp_path.iterdir()) == []


def test_missing_suffix_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no suffix"):
        plot_history(make_history(1), tmp_path / "plot")
    assert list(tmp_path.iterdir()) == []


def test_failed_save_leaves_neither_file_nor_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def half_write(self: Figure, fh, **kwargs: object) -> None:
        fh.write(PNG_SIGNATURE)
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", half_write)
    with pytest.raises(RuntimeError, match="disk full"):
        plot_history(make_history(2), tmp_path / "history.png")
    assert list(tmp_path.iterdir()) == []


def test_save_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "history.png"
    path.write_bytes(b"old")
    assert_png(path, plot_history(make_history(2), path))


@pytest.mark.parametrize(
    ("name", "magic"), [("plot.svg", b"<svg"), ("plot.PDF", b"%PDF"), ("plot.Png", PNG_SIGNATURE)]
)
def test_format_follows_suffix_case_insensitively(tmp_path: Path, name: str, magic: bytes) -> None:
    path = plot_model_diagram(tiny_model(), tmp_path / name)
    assert path == tmp_path / name
    data = path.read_bytes()
    assert (magic in data[:500]) if magic == b"<svg" else data.startswith(magic)


# --- plot_samples -----------------------------------------------------------------------------


def test_plot_samples(images: np.ndarray, labels: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "samples.png"
    width, height = assert_png(path, plot_samples(images, labels, path))
    assert width > height  # 2 rows x 5 columns


def test_plot_samples_needs_every_digit(images: np.ndarray, labels: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="digit 7"):
        plot_samples(images, np.where(labels == 7, 1, labels), tmp_path / "samples.png")
    assert list(tmp_path.iterdir()) == []


# --- plot_history -----------------------------------------------------------------------------


def test_plot_history(tmp_path: Path) -> None:
    width, height = assert_png(tmp_path / "h.png", plot_history(make_history(10), tmp_path / "h.png"))
    assert width > height  # two panels side by side


def test_plot_history_single_epoch_without_validation(tmp_path: Path, saved: list[Figure]) -> None:
    path = plot_history(make_history(1, validation=False), tmp_path / "h.svg")
    assert b"<svg" in path.read_bytes()
    (fig,) = saved
    for ax in fig.axes:
        (line,) = ax.get_lines()  # train only: no validation was recorded
        assert line.get_marker() == "o"  # one point must still be visible
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train"]
        assert [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]] == [1]


def test_plot_history_draws_validation_where_recorded(tmp_path: Path, saved: list[Figure]) -> None:
    history = make_history(4)
    history[1] = dataclasses.replace(history[1], val_loss=None, val_accuracy=None)
    plot_history(history, tmp_path / "h.png")
    loss_ax = saved[0].axes[0]
    train, val = loss_ax.get_lines()
    assert list(train.get_xdata()) == [1, 2, 3, 4]
    assert list(val.get_xdata()) == [1, 3, 4]


def test_plot_history_empty_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="empty"):
        plot_history([], tmp_path / "h.png")
    assert list(tmp_path.iterdir()) == []


# --- plot_confusion ---------------------------------------------------------------------------


def test_plot_confusion(rng: np.random.Generator, tmp_path: Path) -> None:
    confusion = rng.integers(0, 5, (10, 10)) + np.diag(rng.integers(900, 1100, 10))
    assert_png(tmp_path / "c.png", plot_confusion(confusion, tmp_path / "c.png", title="test set"))


def test_plot_confusion_annotates_every_cell(tmp_path: Path, saved: list[Figure]) -> None:
    confusion = np.arange(100).reshape(10, 10) * 20  # 0, 20, ..., 1,980: zero, light and dark cells
    plot_confusion(confusion, tmp_path / "c.png", title="my title")
    ax = saved[0].axes[0]
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
    assert len(cells) == 100
    assert all(cells[rc].get_text() == f"{confusion[rc]:,}" for rc in cells)
    # Readable on its background: the biggest count is on the darkest cell, so its text is light.
    assert cells[(9, 9)].get_color() == "white" and cells[(0, 1)].get_color() == "black"
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("Predicted", "True", "my title")
    assert len(saved[0].axes) == 2  # the matrix and its colourbar


def test_plot_confusion_all_zero_and_non_square(tmp_path: Path) -> None:
    assert_png(tmp_path / "zero.png", plot_confusion(np.zeros((10, 10), np.int64), tmp_path / "zero.png"))
    with pytest.raises(ConfigError, match="square"):
        plot_confusion(np.zeros((10, 9)), tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


# --- plot_misclassified -----------------------------------------------------------------------


def test_plot_misclassified_grows_with_the_number_shown(
    rng: np.random.Generator, images: np.ndarray, labels: np.ndarray, tmp_path: Path
) -> None:
    preds = (labels + 1) % 10  # every image wrong
    conf = rng.uniform(0.3, 1.0, len(labels))
    many, few = tmp_path / "many.png", tmp_path / "few.png"
    _, tall = assert_png(many, plot_misclassified(images, labels, preds, conf, many, max_images=20))
    _, short = assert_png(
        few, plot_misclassified(images, labels, preds, conf, few, max_images=5), min_side=100
    )
    assert tall > short  # two rows of ten against one row of five


def test_plot_misclassified_orders_and_titles(
    images: np.ndarray, labels: np.ndarray, tmp_path: Path, saved: list[Figure]
) -> None:
    preds = labels.copy()
    conf = np.full(len(labels), 0.99)
    preds[[3, 7, 12]] = [5, 1, 0]  # true 3->5, 7->1, 2->0
    conf[[3, 7, 12]] = [0.60, 0.91, 0.75]
    plot_misclassified(images, labels, preds, conf, tmp_path / "m.png", max_images=2)
    fig = saved[0]
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["7→1 91%", "2→0 75%"]  # most confident mistakes first, capped at max_images
    assert fig.get_suptitle() == "Misclassified: 3 of 30 (showing 2)\ntrue→predicted, confidence"


def test_plot_misclassified_without_mistakes(
    images: np.ndarray, labels: np.ndarray, tmp_path: Path, saved: list[Figure]
) -> None:
    path = tmp_path / "none.svg"
    assert plot_misclassified(images, labels, labels.copy(), np.ones(len(labels)), path) == path
    assert b"<svg" in path.read_bytes()
    png = tmp_path / "none.png"
    assert_png(png, plot_misclassified(images, labels, labels, np.ones(len(labels)), png), min_side=100)
    assert "No misclassified images" in texts(saved[-1])
    assert saved[-1].get_suptitle() == "Misclassified: 0 of 30 (showing 0)"


def test_plot_misclassified_rejects_bad_arguments(
    images: np.ndarray, labels: np.ndarray, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="same length"):
        plot_misclassified(images, labels[:-1], labels[:-1], np.ones(29), tmp_path / "m.png")
    with pytest.raises(ConfigError, match="at least 1"):
        plot_misclassified(images, labels, labels, np.ones(30), tmp_path / "m.png", columns=0)
    assert list(tmp_path.iterdir()) == []


# --- plot_prediction --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("true_label", "title", "red_bar"),
    [(None, "Predicted: 9 (18.2%)", None), (9, "True: 9 | Predicted: 9 (18.2%)", None),
     (0, "True: 0 | Predicted: 9 (18.2%)", 0)],
)
def test_plot_prediction(
    images: np.ndarray, tmp_path: Path, saved: list[Figure], true_label: int | None, title: str,
    red_bar: int | None,
) -> None:
    prediction = make_prediction(np.arange(1.0, 11.0))  # predicts 9 with 10/55
    width, height = assert_png(
        tmp_path / "p.png", plot_prediction(images[0], prediction, tmp_path / "p.png", true_label=true_label)
    )
    assert width > height  # image and bar chart side by side
    image_ax, bar_ax = saved[0].axes
    assert image_ax.get_title() == title
    bars = bar_ax.patches
    assert len(bars) == 10 and bars[9].get_height() == pytest.approx(10 / 55)
    colours = {tuple(b.get_facecolor()) for b in bars}
    assert len(colours) == (3 if red_bar is not None else 2)  # grey, predicted, and maybe true
    if red_bar is not None:
        assert bars[red_bar].get_facecolor() not in (bars[9].get_facecolor(), bars[1].get_facecolor())


def test_plot_prediction_of_a_preprocessed_float_image(tmp_path: Path) -> None:
    prediction = make_prediction(np.eye(10)[3] + 1e-3)
    image = np.linspace(0, 1, 28 * 28, dtype=np.float32).reshape(28, 28)
    assert_png(tmp_path / "p.png", plot_prediction(image, prediction, tmp_path / "p.png", true_label=3))


# --- plot_model_diagram -----------------------------------------------------------------------


def test_plot_model_diagram_height_scales_with_layers(tmp_path: Path, saved: list[Figure]) -> None:
    seed = create_model("seed")
    _, tall = assert_png(tmp_path / "seed.png", plot_model_diagram(seed, tmp_path / "seed.png", name="seed"))
    drawn = texts(saved[0])
    assert "seed" in drawn and "225,034 parameters (225,034 trainable)" in drawn
    assert "features.0 (Conv2d)" in drawn and "input (Input)" in drawn
    assert "output: (None, 32, 26, 26)   params: 320" in drawn
    assert "shape: (None, 1, 28, 28)" in drawn
    tiny = tiny_model()
    _, short = assert_png(tmp_path / "tiny.png", plot_model_diagram(tiny, tmp_path / "tiny.png"))
    assert tall > 2 * short  # 11 boxes (input + 10 layers) against 3


def test_plot_model_diagram_text_fits_its_boxes(tmp_path: Path, saved: list[Figure]) -> None:
    model = create_model("seed")
    model.add_module("a_very_long_layer_name_that_needs_a_wider_box", nn.Identity())
    model.forward = lambda x: model.a_very_long_layer_name_that_needs_a_wider_box(
        model.classifier(model.features(x))
    )
    narrow_width, _ = png_size(plot_model_diagram(tiny_model(), tmp_path / "n.png"))
    wide_width, _ = png_size(plot_model_diagram(model, tmp_path / "w.png"))
    assert wide_width > narrow_width  # the box grew to fit the long name

    fig = saved[-1]
    fig.draw_without_rendering()  # lay the text out again at the figure's own dpi before measuring
    (ax,) = fig.axes
    boxes = [patch.get_window_extent() for patch in ax.patches]
    labels = [t for t in ax.texts if t.get_text()]
    assert len(boxes) == 12 and len(labels) == 2 + 2 * 12  # title, subtitle, two lines per box
    for text in labels:
        extent = text.get_window_extent()
        assert fig.bbox.contains(extent.x0, extent.y0) and fig.bbox.contains(extent.x1, extent.y1)
    for box, head, detail in zip(boxes, labels[2::2], labels[3::2]):
        for text in (head, detail):
            extent = text.get_window_extent()
            assert box.x0 < extent.x0 and extent.x1 < box.x1 and box.y0 < extent.y0 and extent.y1 < box.y1
        assert detail.get_window_extent().y1 <= head.get_window_extent().y0  # the two lines do not overlap


def test_plot_history_accuracy_axis_is_logit_unless_an_accuracy_is_0_or_1(tmp_path: Path, saved: list[Figure]) -> None:
    plot_history(make_history(10), tmp_path / "a.png")
    perfect = [dataclasses.replace(r, accuracy=1.0) for r in make_history(3)]
    plot_history(perfect, tmp_path / "b.png")
    (loss_a, acc_a), (loss_b, acc_b) = (fig.axes for fig in saved)
    # 99% and 99.9% are far apart on a logit axis; 1.0 cannot be drawn on one.
    assert acc_a.get_yscale() == "logit" and loss_a.get_yscale() == "linear"
    assert acc_b.get_yscale() == "linear"


def test_plot_history_logit_ticks_are_distinct_and_a_single_value_stays_visible(tmp_path: Path,
                                                                                saved: list[Figure]) -> None:
    from digitrec.plots import _is_half, _logit_percent

    assert [_is_half(v) for v in (0.5, 0.95, 0.995, 0.05, 0.9, 0.99, 0.996, 1.0)] == [True] * 4 + [False] * 4

    assert [_logit_percent(v) for v in (0.1, 0.9, 0.99, 0.995, 0.999, 0.9999)] == \
        ["10%", "90%", "99%", "99.5%", "99.9%", "99.99%"]
    one = [dataclasses.replace(r, accuracy=0.9935, val_accuracy=None) for r in make_history(1)]
    plot_history(one, tmp_path / "one.png")
    acc = saved[0].axes[1]
    low, high = acc.get_ylim()
    assert low < 0.9935 < high  # a flat logit range would be padded off the only point
