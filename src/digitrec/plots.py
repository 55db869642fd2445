"""Figures: sample digits, training curves, confusion matrix, mistakes, one prediction, layer diagram.

Only matplotlib's object-oriented API is used (``Figure``, never ``pyplot``): no global figure
registry and no GUI backend, so plotting is safe in threads, servers and headless runs and never
changes the caller's matplotlib state. The output format follows the file suffix (.png, .svg or
.pdf); every file is written atomically and each function returns the path it wrote.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap, LogNorm
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.patches import FancyBboxPatch, Patch, Rectangle
from matplotlib.textpath import TextToPath
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter, StrMethodFormatter
from torch import nn

from digitrec.errors import ConfigError
from digitrec.fileio import atomic_write
from digitrec.infer.recogniser import Prediction
from digitrec.models import count_parameters, example_input_shape, layer_table
from digitrec.read.readings import NumberReading
from digitrec.train.engine import EpochRecord

__all__ = [
    "check_plot_path",
    "plot_samples",
    "plot_history",
    "plot_confusion",
    "plot_misclassified",
    "plot_prediction",
    "plot_reading",
    "plot_model_diagram",
]

_FORMATS = (".png", ".svg", ".pdf")
_DPI = 150  # sharp enough for reports; for .svg/.pdf it only affects embedded bitmaps
_HIGHLIGHT = "tab:blue"  # the predicted class
_TRUTH = "tab:red"  # the true class, where the prediction missed it
_INK = "#4a4a4a"  # diagram outlines and arrows: softer than black next to the bold labels
_TEXT_PATH = TextToPath()  # measures text without a renderer, so diagram boxes can be sized first


def check_plot_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path, or :class:`ConfigError` if its suffix is not a supported format.

    Every plotting function calls this first, so a bad name fails before any drawing work;
    the CLI also calls it before long work (training, evaluation) whose result it would plot.
    """
    target = Path(path)
    if target.suffix.lower() not in _FORMATS:
        shown = f"'{target.suffix}'" if target.suffix else "(no suffix)"
        raise ConfigError(f"unsupported plot format {shown} (use .png, .svg or .pdf)")
    return target


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` to ``path`` in the format its suffix names; atomic, so no partial file remains."""
    target = check_plot_path(path)
    with atomic_write(target) as fh:
        fig.savefig(fh, format=target.suffix[1:].lower(), dpi=_DPI)
    return target


def _show_grey(ax: Axes, image: np.ndarray) -> None:
    """Draw one digit in grey on absolute intensities, axes hidden."""
    # A fixed range (not per-image autoscaling) keeps faint digits faint, as the model sees them;
    # raw images are 0..255, preprocessed ones 0..1.
    vmax = 255 if image.dtype.kind in "ui" or float(np.max(image, initial=0)) > 1 else 1
    ax.imshow(image, cmap="gray", vmin=0, vmax=vmax)
    ax.set_axis_off()


def _inches(text: str, font: FontProperties) -> float:
    """Rendered width of one line of ``text`` in inches, measured from the font's glyphs."""
    return _TEXT_PATH.get_text_width_height_descent(text, font, ismath=False)[0] / 72


def _image_grid(
    fig: Figure, images: Sequence[np.ndarray], titles: Sequence[str], columns: int, fontsize: float
) -> None:
    """Fill ``fig`` with a rows x ``columns`` grid of titled grey images; spare cells stay blank."""
    rows = -(-len(images) // columns)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat[len(images):]:
        ax.set_axis_off()
    for ax, image, title in zip(axes.flat, images, titles):
        _show_grey(ax, image)
        ax.set_title(title, fontsize=fontsize)


def plot_samples(images: np.ndarray, labels: np.ndarray, path: str | os.PathLike[str],
                 class_names: Sequence[str] | None = None) -> Path:
    """Show the first image of each class (default: the digits 0-9) in a grid of five columns.

    ``class_names`` names label 0, 1, ... (e.g. a Fashion-MNIST model's); the titles are those
    names, or "Digit d" for the digits. Raises :class:`ConfigError` if the suffix is
    unsupported or a class has no image.
    """
    check_plot_path(path)
    labels = np.asarray(labels)
    names = list(class_names) if class_names is not None else [str(d) for d in range(10)]
    digits = names == [str(d) for d in range(10)]
    firsts = []
    for label, name in enumerate(names):
        found = np.flatnonzero(labels == label)
        if found.size == 0:
            what = f"digit {label}" if digits else f"class {label} ({name})"
            raise ConfigError(f"no image of {what} among the {len(labels):,} samples")
        firsts.append(images[found[0]])
    rows = -(-len(names) // 5)
    fig = Figure(figsize=(7.5, 1.8 * rows), layout="constrained")
    _image_grid(fig, firsts, [f"Digit {d}" for d in names] if digits else names, columns=min(5, len(names)),
                fontsize=11 if digits else 9)
    return _save(fig, path)


def plot_history(history: Sequence[EpochRecord], path: str | os.PathLike[str]) -> Path:
    """Loss and accuracy per epoch, training and (where recorded) validation, side by side.

    Raises :class:`ConfigError` if the suffix is unsupported or ``history`` is empty.
    """
    check_plot_path(path)
    if not history:
        raise ConfigError("no training history to plot (empty history)")
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    panels = ((ax_loss, "Loss", "loss", "val_loss"), (ax_acc, "Accuracy", "accuracy", "val_accuracy"))
    for ax, title, train_key, val_key in panels:
        # Markers so that a single-epoch run still shows a point rather than an invisible line.
        ax.plot([r.epoch for r in history], [getattr(r, train_key) for r in history],
                marker="o", label="train")
        val = [(r.epoch, getattr(r, val_key)) for r in history if getattr(r, val_key) is not None]
        if val:
            ax.plot(*zip(*val), marker="s", label="validation")
        ax.set_title(title)
        ax.set_xlabel("Epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if history[0].epoch == history[-1].epoch:
            # A single point gives a zero-width range, which matplotlib pads by only a few percent.
            ax.set_xlim(history[0].epoch - 0.5, history[0].epoch + 0.5)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_loss.set_ylabel("Cross-entropy")
    ax_acc.set_ylabel("Accuracy")
    accuracies = [a for r in history for a in (r.accuracy, r.val_accuracy) if a is not None]
    if all(0.0 < a < 1.0 for a in accuracies) and len(set(accuracies)) > 1:
        # On MNIST the curves live between 98% and 99.8%, flattened into one line by a first
        # epoch at 70-90% on a linear axis. A logit axis spreads 90%, 99% and 99.9% evenly.
        # (One distinct value stays linear: matplotlib pads a flat logit range off the point.)
        ax_acc.set_yscale("logit")
        ax_acc.yaxis.set_major_formatter(FuncFormatter(_logit_percent))
        # Majors fall at 90%, 99%, 99.9%; the halfway minors (95%, 99.5%) are labelled too,
        # the others left bare, so the 99-99.9% band where MNIST curves end can be read.
        ax_acc.yaxis.set_minor_formatter(FuncFormatter(lambda v, _p: _logit_percent(v) if _is_half(v) else ""))
    else:
        ax_acc.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    return _save(fig, path)


def _is_half(value: float) -> bool:
    """Whether ``value`` is 0.5, 0.95, 0.995... or 0.05, 0.005... (a halfway tick on a logit axis)."""
    tail = min(value, 1.0 - value)
    if tail <= 0:
        return False
    mantissa = tail / 10 ** math.floor(math.log10(tail) + 1e-9)
    return abs(mantissa - 5.0) < 1e-6


def _logit_percent(value: float, _pos: object = None) -> str:
    """Tick label for a logit axis: enough decimals that 99%, 99.9% and 99.99% stay distinct."""
    tail = min(value, 1.0 - value)
    decimals = max(0, math.ceil(-math.log10(tail) - 1e-6) - 2) if tail > 0 else 0  # 1e-6: float noise
    return f"{value * 100:.{decimals}f}%"


def plot_confusion(
    confusion: np.ndarray, path: str | os.PathLike[str], title: str = "Confusion matrix"
) -> Path:
    """Heatmap of a (C, C) confusion matrix (row = true, column = predicted), every cell labelled.

    Raises :class:`ConfigError` if the suffix is unsupported or the matrix is not square.
    """
    check_plot_path(path)
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1] or confusion.size == 0:
        raise ConfigError(f"a confusion matrix must be square, got shape {confusion.shape}")
    n = confusion.shape[0]
    # On a linear scale the ~1,000-count diagonal would wash every error out to the same pale
    # colour; a log scale makes 1, 10 and 100 mistakes clearly different. Log(0) is undefined, so
    # empty cells are masked and drawn white (the colourmap's "bad" colour) with their "0" label;
    # the colourmap skips Blues' near-white start so that a single error is visibly not zero.
    norm = LogNorm(vmin=1, vmax=max(int(confusion.max()), 10))
    cmap = ListedColormap(colormaps["Blues"](np.linspace(0.15, 1, 256))).with_extremes(bad="white")
    fig = Figure(figsize=(7, 6), layout="constrained")
    ax = fig.subplots()
    mesh = ax.imshow(np.ma.masked_less_equal(confusion, 0), cmap=cmap, norm=norm)
    fig.colorbar(mesh, ax=ax, label="Images (log scale)", format=StrMethodFormatter("{x:,.0f}"))
    for (row, col), count in np.ndenumerate(confusion):
        # Light text on dark cells, dark text elsewhere, so each count stays readable.
        dark = count > 0 and norm(count) > 0.6
        ax.text(col, row, f"{count:,}", ha="center", va="center", fontsize=8 if n <= 10 else 6,
                color="white" if dark else "black")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title(title)
    return _save(fig, path)


def plot_misclassified(
    images: np.ndarray,
    labels: np.ndarray,
    predictions: np.ndarray,
    confidences: np.ndarray,
    path: str | os.PathLike[str],
    max_images: int = 40,
    columns: int = 10,
) -> Path:
    """Gallery of misclassified images, the most confident mistakes first, titled "true→predicted p%".

    With no mistakes the figure says so. Raises :class:`ConfigError` if the suffix is unsupported,
    the arrays differ in length, or ``max_images``/``columns`` is below 1.
    """
    check_plot_path(path)
    if max_images < 1 or columns < 1:
        raise ConfigError(f"max_images and columns must be at least 1, got {max_images} and {columns}")
    labels, predictions, confidences = map(np.asarray, (labels, predictions, confidences))
    if not len(images) == len(labels) == len(predictions) == len(confidences):
        raise ConfigError("images, labels, predictions and confidences must have the same length")
    wrong = np.flatnonzero(predictions != labels)
    # Stable sort: equally confident mistakes keep dataset order, so the figure is reproducible.
    shown = wrong[np.argsort(-confidences[wrong], kind="stable")][:max_images]
    if shown.size:
        cols = min(columns, shown.size)
        # At least 5 inches wide so that the suptitle fits even over one or two images.
        size = (max(1.05 * cols + 0.3, 5), 1.2 * -(-shown.size // cols) + 0.5)
        fig = Figure(figsize=size, layout="constrained")
        titles = [f"{labels[i]}→{predictions[i]} {confidences[i]:.0%}" for i in shown]
        _image_grid(fig, [images[i] for i in shown], titles, cols, fontsize=8)
    else:
        fig = Figure(figsize=(5, 2), layout="constrained")
        fig.text(0.5, 0.45, "No misclassified images", ha="center", va="center", fontsize=14)
    legend = "\ntrue→predicted, confidence" if shown.size else ""
    fig.suptitle(f"Misclassified: {wrong.size:,} of {len(labels):,} (showing {shown.size}){legend}")
    return _save(fig, path)


def plot_prediction(
    image: np.ndarray, prediction: Prediction, path: str | os.PathLike[str], true_label: int | None = None
) -> Path:
    """The image with its verdict, next to a bar chart of all class probabilities.

    The predicted bar is blue; the true class, when given and different, is red.
    """
    check_plot_path(path)
    if prediction.digit is None:
        raise ConfigError("no digit was found in the image: there is no prediction to plot")
    probs = np.asarray(prediction.probabilities, dtype=float)
    fig = Figure(figsize=(9, 3.8), layout="constrained")
    ax_img, ax_bar = fig.subplots(1, 2, width_ratios=(1, 1.7))
    _show_grey(ax_img, np.asarray(image))
    verdict = f"Predicted: {prediction.digit} ({prediction.confidence:.1%})"
    ax_img.set_title(verdict if true_label is None else f"True: {true_label} | {verdict}", fontsize=11)

    marked = {prediction.digit: (_HIGHLIGHT, "predicted")}
    if true_label is not None and true_label != prediction.digit and 0 <= true_label < len(probs):
        marked[true_label] = (_TRUTH, "true")
    colours = [marked[d][0] if d in marked else "lightgrey" for d in range(len(probs))]
    ax_bar.bar(range(len(probs)), probs, color=colours)
    ax_bar.set_xticks(range(len(probs)))
    ax_bar.set_xlabel("Digit")
    ax_bar.set_ylim(0, 1.08)  # headroom so a 100% bar's label is not cut off
    ax_bar.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    ax_bar.set_title("Class probabilities", fontsize=11)
    for digit, (colour, _) in marked.items():
        # A missed true class often has a near-zero bar; its label and tick colour still show it.
        ax_bar.text(digit, probs[digit] + 0.015, f"{probs[digit]:.1%}", ha="center", va="bottom",
                    fontsize=8, color=colour)
        ax_bar.get_xticklabels()[digit].set(color=colour, fontweight="bold")
    legend = [Patch(color=colour, label=label) for colour, label in marked.values()]
    ax_bar.legend(handles=legend, loc="upper left" if prediction.digit >= 5 else "upper right")
    ax_bar.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_reading(image: np.ndarray, reading: NumberReading, path: str | os.PathLike[str],
                 scale: float = 1.0) -> Path:
    """The picture with a box and a "digit confidence" label per digit found; unsure ones in red.

    ``scale``: input pixels per pixel of ``image`` (the reading's boxes are in input pixels),
    for a picture decoded smaller than the file, as big JPEGs are.
    """
    check_plot_path(path)
    h, w = np.asarray(image).shape[:2]
    fig = Figure(figsize=(min(12, max(4, 6 * w / max(h, 1))), 4.5), layout="constrained")
    ax = fig.subplots()
    # Pixel i spans input pixels [scale * i, scale * (i + 1)): drawn there, it meets the boxes.
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, extent=(-0.5, w * scale - 0.5, h * scale - 0.5, -0.5))
    ax.set_axis_off()
    for d in reading.digits:
        x, y, bw, bh = d.box
        colour = _TRUTH if d.unsure else _HIGHLIGHT
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), bw, bh, fill=False, edgecolor=colour, linewidth=2))
        ax.text(x, y - 2, f"{d.digit} {d.confidence:.0%}", color="white", fontsize=10, va="bottom",
                bbox={"facecolor": colour, "edgecolor": "none", "pad": 1.5})
    title = "No digit found" if reading.number is None else (
        f"Read: {reading.number} ({reading.confidence:.1%}){' UNSURE' if reading.unsure else ''}")
    ax.set_title(title)
    return _save(fig, path)


def plot_model_diagram(
    model: nn.Module,
    path: str | os.PathLike[str],
    name: str = "",
    input_shape: tuple[int, ...] | None = None,
) -> Path:
    """A Keras ``plot_model(show_shapes=True)``-style diagram: one box per leaf layer, top to bottom.

    Each box shows "name (Kind)", the output shape with a leading ``None`` batch dimension and the
    layer's own parameter count; the title gives the model's total.
    """
    check_plot_path(path)
    input_shape = input_shape or example_input_shape(model)
    rows = layer_table(model, input_shape)
    trainable, frozen = count_parameters(model)
    boxes = [("input (Input)", f"shape: {(None, *input_shape)}", False)]
    boxes += [
        (f"{r.name} ({r.kind})", f"output: {(None, *r.output_shape)}   params: {r.params:,}", r.params > 0)
        for r in rows
    ]
    title = name or type(model).__name__
    subtitle = f"{trainable + frozen:,} parameters ({trainable:,} trainable)"

    # Everything below is laid out in inches (the axes spans the figure, one data unit per inch),
    # so the figure grows with the layer count and the boxes fit their longest measured label.
    head_font = FontProperties(size=9, weight="bold")
    detail_font = FontProperties(size=9, family="DejaVu Sans Mono")
    title_font = FontProperties(size=12, weight="bold")
    subtitle_font = FontProperties(size=10)
    box_h, gap, top, margin, pad = 0.5, 0.3, 0.75, 0.25, 0.3
    box_w = max(max(_inches(h, head_font), _inches(d, detail_font)) for h, d, _ in boxes) + pad
    width = max(box_w, _inches(title, title_font), _inches(subtitle, subtitle_font)) + 2 * margin
    height = top + len(boxes) * box_h + (len(boxes) - 1) * gap + margin
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()
    ax.text(width / 2, height - 0.12, title, ha="center", va="top", fontproperties=title_font)
    ax.text(width / 2, height - 0.36, subtitle, ha="center", va="top", fontproperties=subtitle_font)

    x0, cx = (width - box_w) / 2, width / 2
    for i, (head, detail, weighted) in enumerate(boxes):
        y_top = height - top - i * (box_h + gap)
        # Layers that hold weights are tinted so the parameter-carrying stages stand out.
        ax.add_patch(FancyBboxPatch((x0, y_top - box_h), box_w, box_h, "round,pad=0,rounding_size=0.08",
                                    facecolor="#dbe9f6" if weighted else "#f0f0f0", edgecolor=_INK))
        ax.text(cx, y_top - box_h * 0.3, head, ha="center", va="center", fontproperties=head_font)
        ax.text(cx, y_top - box_h * 0.7, detail, ha="center", va="center", fontproperties=detail_font)
        if i:
            ax.annotate("", xy=(cx, y_top), xytext=(cx, y_top + gap),
                        arrowprops={"arrowstyle": "-|>", "color": _INK, "shrinkA": 0, "shrinkB": 0})
    return _save(fig, path)
