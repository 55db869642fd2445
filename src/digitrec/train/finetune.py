"""Fine-tuning: adapt the line reader or a digit model to a user's own labelled images.

Two kinds of labelled data, told apart by the path given (:func:`load_labelled`):

- **numbers**: a CSV ``file,label`` (paths relative to the CSV, the label the digits left to
  right, leading zeros kept), such as ORAND-CAR-A's ``labels.csv``; it fine-tunes a grey line
  reader (default: the bundled one), which then reads with ``digitrec read --model FILE``;
- **digits**: a folder in ImageFolder layout (``0/*.png`` ... ``9/*.png``); it fine-tunes a
  digit classifier (default: the bundled ``seed`` model).

A seeded share of the user's images (``val_size``) is held out before anything else: it is
read before and after fine-tuning, and early stopping and the choice of the epoch kept use
it and nothing else. Training batches may mix in data made from MNIST *training* digits
(``replay``: generated lines, or MNIST digits), so the model keeps what it knew.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from digitrec.cfg.finetune import KIND_DEFAULTS, FinetuneConfig
from digitrec.data.labelled import IMAGE_SUFFIXES, LabelledData, load_labelled, refuse_bad_rows
from digitrec.data.mnist import MNIST, load_mnist, split_train_val
from digitrec.data.preprocess import NORMALIZATION, Normalization, to_mnist
from digitrec.errors import ConfigError, DatasetError, DigitrecError
from digitrec.infer.evaluate import evaluate, predict_logits
from digitrec.models.checkpoint import ModelFile, load_model, save_model
from digitrec.models.registry import model_config_dict
from digitrec.read.lineprep import line_input
from digitrec.read.linereader import LINE_CLASSES, batch_log_probs, bundled_line_reader, digits_text, read_frames
from digitrec.read.reader import NO_NUMBER_BELOW, grey_view
from digitrec.runtime import resolve_precision
from digitrec.train.calibrate import calibration_report
from digitrec.train.engine import TrainConfig, epoch_rank, fit
from digitrec.train.lines import Batch, fit_ctc, fit_line_temperature, pack_lines, render_training_line

__all__ = [
    "FinetuneConfig",
    "LabelledData",
    "FinetuneResult",
    "load_labelled",
    "finetune",
    "read_exact",
    "IMAGE_SUFFIXES",
    "KIND_DEFAULTS",
]

# Digit fine-tuning's augmentation (TrainConfig fields): a scanned digit's usual variation.
_DIGIT_AUGMENT = {"aug_rotate": 10.0, "aug_shift": 2.0, "aug_scale": 0.1, "aug_shear": 10.0}


def _split(n: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, validation) indices; the validation share has at least one image."""
    n_val = int(round(share * n))
    if n_val < 1 or n - n_val < 1:
        need = next(m for m in range(2, 10**7) if 1 <= round(share * m) < m)
        raise DatasetError(f"{n} image(s) cannot hold out a {share:.0%} validation share and still train "
                           f"(at least {need} needed)")
    order = np.random.default_rng([seed, 7]).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


# --- augmentation of real scans ---------------------------------------------------------------------


def augment_scan(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A grey picture ((H, W) [0, 1]) as another scan of it might look: the same digits, in the same order.

    Width stretched (writers and scanners differ in aspect), slanted and rotated a little, the
    margins moved, contrast, gamma and blur changed, noise added. Paper fills what the
    transform uncovers.
    """
    h, w = gray.shape
    paper = float(np.median(gray))
    sx = math.exp(rng.uniform(-0.22, 0.22))  # width stretch
    shear = rng.uniform(-0.25, 0.25)
    angle = math.radians(rng.uniform(-3.0, 3.0))
    # Margins: each side moves by up to 12% of the height, in or out.
    left, right = (rng.uniform(-0.12, 0.12) * h for _ in range(2))
    top, bottom = (rng.uniform(-0.1, 0.1) * h for _ in range(2))
    out_w = max(8, int(round((w + left + right) * sx)))
    out_h = max(8, int(round(h + top + bottom)))
    # Output pixel (u, v) -> input pixel: undo stretch, shear and rotation about the picture's centre.
    cx, cy = out_w / 2, out_h / 2
    icx, icy = w / 2 + (right - left) / 2, h / 2 + (bottom - top) / 2
    cos, sin = math.cos(angle), math.sin(angle)
    a, b = cos / sx, sin + shear
    d, e = -sin / sx, cos
    coeffs = (a, b, icx - a * cx - b * cy, d, e, icy - d * cx - e * cy)
    image = Image.fromarray(gray.astype(np.float32), mode="F")
    moved = np.asarray(image.transform((out_w, out_h), Image.Transform.AFFINE, coeffs,
                                       resample=Image.Resampling.BILINEAR, fillcolor=paper), np.float32)
    # Contrast about the paper's tone, and gamma.
    moved = paper + (moved - paper) * rng.uniform(0.6, 1.2)
    moved = np.clip(moved, 0.0, 1.0) ** math.exp(rng.uniform(-0.3, 0.3))
    if rng.random() < 0.3:
        from scipy import ndimage

        moved = ndimage.gaussian_filter(moved, rng.uniform(0.3, 1.0))
    if rng.random() < 0.5:
        moved = moved + rng.normal(0.0, rng.uniform(0.005, 0.04), moved.shape)
    return np.clip(moved, 0.0, 1.0).astype(np.float32)


# --- the line reader ----------------------------------------------------------------------------------


def _line_view(gray: np.ndarray) -> np.ndarray:
    """The line image the reader reads for a whole picture (as :meth:`Recogniser.read` reads it)."""
    view = grey_view(gray)
    return (view if view is not None else line_input(gray)).image


def read_exact(model: torch.nn.Module, views: Sequence[np.ndarray], truths: Sequence[str], device: torch.device,
               temperature: float = 1.0, normalization: Normalization = NORMALIZATION,
               blank_penalty: float = 0.0) -> float:
    """The share of line images read exactly as ``truths``, as :meth:`Recogniser.read` answers.

    Each line is read alone, as ``read`` reads one picture (padding a batch would change what
    the LSTM sees); a reading whose support is under :data:`digitrec.read.reader.NO_NUMBER_BELOW` is "no number".
    """
    model.eval()
    right = 0
    for view, truth in zip(views, truths):
        log_probs = batch_log_probs(model, [view], device, normalization, temperature)[0]
        digits, _, support = read_frames(log_probs, blank_penalty)
        right += (digits_text(digits) if support >= NO_NUMBER_BELOW else "") == truth
    return right / max(len(views), 1)


Progress = Callable[[int, int, dict[str, float]], None]  # (epochs done, epochs at most, that epoch's figures)


@dataclass
class FinetuneResult:
    """What a fine-tuning run produced: the model (eval mode), its figures and how to save it."""

    model: torch.nn.Module
    base: ModelFile  # the model it started from
    data: LabelledData
    config: FinetuneConfig
    # val_before, val_start (numbers: the start's score as the checks read it, which epochs must beat),
    # val_after, epochs, best_epoch (read validation best; 0: none beat the start), kept_epoch
    # (whose weights the model holds; 0: the start's), seconds, ... (JSON-ready)
    metrics: dict[str, Any]
    history: list[dict[str, float]]  # per epoch: loss, val (exact share), seconds
    temperature: float = 1.0  # refitted on the validation share (numbers) or kept (digits)
    # Line readers: 0.0, the plain best path (a reader tuned on real images is not too sure of blanks,
    # and a penalty refitted on a small validation share is mostly noise); digit models: None.
    blank_penalty: float | None = None

    def save(self, path: str | Path) -> Path:
        """Write an ordinary model file (atomically) recording the data's digest, counts and the recipe."""
        base = self.base
        extra = {k: v for k, v in base.metadata.items()
                 if k in ("role", "input", "line_train_config", "train_config", "calibration")}
        if self.blank_penalty is not None:
            extra["blank_penalty"] = float(self.blank_penalty)
        extra.update(
            temperature=float(self.temperature),
            metrics=dict(self.metrics),
            finetune={
                "from": str(base.path.name if base.path else base.arch),
                "data": self.data.summary(),
                "config": dataclasses.asdict(self.config),
                "history": self.history,
            },
        )
        return save_model(path, self.model, base.arch, model_config_dict(self.model),
                          normalization=base.normalization, class_names=list(base.class_names), extra=extra)


def _base_model(kind: str, model: str | Path | None, device: torch.device) -> ModelFile:
    if kind == "numbers":
        path = model if model not in (None, "default", "bundled") else bundled_line_reader()
        if path is None:
            raise ConfigError("this installation has no bundled line reader; give --model FILE")
        mf = load_model(path, device, num_classes=len(LINE_CLASSES), task="lines")
        if mf.metadata.get("input") != "paper":
            raise ConfigError(f"{path}: a reader of binarised ink; fine-tuning needs a grey line reader")
        return mf
    return load_model(model if model not in (None, "default", "bundled") else "seed", device)


def finetune(
    data: LabelledData | str | Path,
    model: str | Path | None = None,
    config: FinetuneConfig | None = None,
    *,
    device: torch.device | str = "cpu",
    mnist: MNIST | None = None,
    progress: Progress | None = None,
) -> FinetuneResult:
    """Fine-tune ``model`` (default: the bundled line reader for numbers, ``seed`` for digits) on ``data``.

    ``data`` is a :class:`LabelledData` or a path for :func:`load_labelled`. ``mnist`` supplies
    the replayed data (MNIST *training* digits; loaded with :func:`load_mnist` when
    ``config.replay`` > 0 and none is given) and, for
    digit models, the test set measured before and after. Returns the model of the last epoch
    (``config.keep="last"``) or of the epoch that read the validation share best (``"best"``),
    never one that reads it worse than the model it started from: then the starting weights.
    """
    from digitrec.runtime import resolve_device

    config = config or FinetuneConfig()
    config.validate()
    dev = resolve_device(device) if isinstance(device, str) else device
    labelled = data if isinstance(data, LabelledData) else load_labelled(data)
    config = dataclasses.replace(config, **{k: v for k, v in KIND_DEFAULTS[labelled.kind].items()
                                            if getattr(config, k) is None})
    if config.replay and mnist is None:
        mnist = load_mnist()  # as train() does: the data directory, else the cache, else a download
    base = _base_model(labelled.kind, model, dev)
    train_idx, val_idx = _split(len(labelled), config.val_size, config.seed)
    run = _finetune_lines if labelled.kind == "numbers" else _finetune_digits
    return run(base, labelled, train_idx, val_idx, config, dev, mnist, progress)


def _finetune_lines(base: ModelFile, labelled: LabelledData, train_idx: np.ndarray, val_idx: np.ndarray,
                    config: FinetuneConfig, device: torch.device, mnist: MNIST | None,
                    progress: Progress | None) -> FinetuneResult:
    model = copy.deepcopy(base.model).to(device)
    norm, precision = base.normalization, resolve_precision(config.precision, device)
    val_views = [_line_view(labelled.images[i]) for i in val_idx]
    val_truth = [labelled.labels[i] for i in val_idx]
    # Without augmentation each training image is prepared once.
    train_views = {} if config.augment else {int(i): _line_view(labelled.images[i]) for i in train_idx}
    before = read_exact(model, val_views, val_truth, device, base.temperature, norm, base.blank_penalty)
    # The tuned model reads with the plain best path: so do the checks, and the start they must beat.
    start = read_exact(model, val_views, val_truth, device, base.temperature, norm) if base.blank_penalty else before
    rng = np.random.default_rng([config.seed, 8])
    torch.manual_seed(config.seed)
    replay = config.replay or 0.0
    replay_src = _replay_digits(mnist) if replay > 0 else None
    steps_per_epoch = math.ceil(len(train_idx) / config.batch_size)

    def batches() -> Iterator[Batch]:
        for _ in range(config.epochs):
            order = rng.permutation(train_idx)
            for k in range(steps_per_epoch):
                chosen = order[k * config.batch_size : (k + 1) * config.batch_size]
                lines = [(_line_view_aug(labelled.images[i], rng) if config.augment else train_views[int(i)],
                          labelled.labels[i]) for i in chosen]
                # replay r per image: r's whole part exactly, its fraction by chance.
                n_replay = int(replay) * len(chosen) + int(rng.binomial(len(chosen), replay - int(replay)))
                if replay_src is not None:
                    lines += [render_training_line(*replay_src, rng) for _ in range(n_replay)]
                yield pack_lines(lines)

    history: list[dict[str, float]] = []
    epoch_start = [time.perf_counter()]

    def after_epoch(epoch: int, loss: float, score: float) -> None:
        history.append({"epoch": epoch, "loss": loss, "val_exact": score,
                        "seconds": time.perf_counter() - epoch_start[0]})
        epoch_start[0] = time.perf_counter()
        if progress is not None:
            progress(epoch, config.epochs, history[-1])

    run = fit_ctc(model, batches(), steps_per_epoch * config.epochs, lr=config.lr, weight_decay=config.weight_decay,
                  warmup=0.15, clip=5.0, device=device, precision=precision, norm=norm, ema_decay=config.ema,
                  check_every=steps_per_epoch, baseline=start, patience=config.patience, on_check=after_epoch,
                  check=lambda kept: read_exact(kept, val_views, val_truth, device, base.temperature, norm),
                  keep_last=config.keep == "last")
    seconds, best_epoch, kept_epoch = run.seconds, run.best_check, run.kept_check
    model.load_state_dict(run.state)
    model.eval()
    temperature, _, _ = fit_line_temperature(model, list(zip(val_views, val_truth)), device)
    after = read_exact(model, val_views, val_truth, device, temperature, norm)
    metrics = {"val_before": before, "val_start": start, "val_after": after, "val_images": len(val_idx),
               "train_images": len(train_idx),
               "epochs": len(history), "best_epoch": best_epoch, "kept_epoch": kept_epoch, "seconds": seconds,
               "precision": precision}
    return FinetuneResult(model, base, labelled, config, metrics, history, temperature, blank_penalty=0.0)


def _line_view_aug(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _line_view(augment_scan(gray, rng))


def _replay_digits(mnist: MNIST | None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST training digits outside the seed-0 validation split (the bundled models' held-out digits)."""
    assert mnist is not None
    tx, ty, _, _ = split_train_val(mnist.train_images, mnist.train_labels, 5000, 0)
    return tx, ty


def _finetune_digits(base: ModelFile, labelled: LabelledData, train_idx: np.ndarray, val_idx: np.ndarray,
                     config: FinetuneConfig, device: torch.device, mnist: MNIST | None,
                     progress: Progress | None) -> FinetuneResult:
    if base.normalization != NORMALIZATION:
        raise ConfigError(f"{base.path}: fine-tuning needs a model with digitrec's standard normalisation")
    prepared, empty = [], []
    for name, gray in zip(labelled.files, labelled.images):
        try:
            prepared.append(np.round(to_mnist(gray) * 255.0).astype(np.uint8))
        except DigitrecError:  # no ink found: nothing to learn from
            prepared.append(None)
            empty.append(f"{name}: no digit found in it")
    if not labelled.skip_bad:
        refuse_bad_rows(empty, str(labelled.source))
    usable = np.array([p is not None for p in prepared])
    train_idx, val_idx = train_idx[usable[train_idx]], val_idx[usable[val_idx]]
    if len(val_idx) == 0 or len(train_idx) == 0:
        raise DatasetError(f"{labelled.source}: too few images with a digit found in them to train and validate")
    x = np.stack([p if p is not None else np.zeros((28, 28), np.uint8) for p in prepared])  # (N, 28, 28) uint8
    y = np.array([int(label) for label in labelled.labels], np.int64)
    tx, ty, vx, vy = x[train_idx], y[train_idx], x[val_idx], y[val_idx]
    if config.replay:
        rx, ry = _replay_digits(mnist)
        pick = np.random.default_rng([config.seed, 9]).choice(len(rx), int(round(config.replay * len(tx))))
        tx, ty = np.concatenate([tx, rx[pick]]), np.concatenate([ty, ry[pick]])
    precision = resolve_precision(config.precision, device)

    def accuracy(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
        return evaluate(model, images, labels, device=device, precision=precision,
                        temperature=base.temperature).accuracy

    before = accuracy(base.model, vx, vy)
    mnist_before = accuracy(base.model, mnist.test_images, mnist.test_labels) if mnist is not None else None
    recipe = TrainConfig(arch=base.arch, model_config=dict(base.model_config), epochs=config.epochs,
                         batch_size=config.batch_size, lr=config.lr, seed=config.seed, val_size=len(vx),
                         precision=config.precision, optimizer="adamw", weight_decay=config.weight_decay,
                         schedule="onecycle", warmup=0.15, patience=config.patience,
                         keep_best=config.keep == "best",
                         ema_decay=config.ema,
                         **(_DIGIT_AUGMENT if config.augment else {}))

    class _Report:
        def on_epoch_end(self, record: Any) -> None:
            if progress is not None:
                progress(record.epoch, config.epochs, {"epoch": record.epoch, "loss": record.loss,
                                                       "val_exact": record.val_accuracy, "seconds": record.seconds})

    result = fit(recipe, tx, ty, device=device, val_images=vx, val_labels=vy, callback=_Report(),
                 init_state=base.model.state_dict())
    # Ranked as the training loop ranks epochs (the first of equals), whether or not it kept the best.
    ranks = [epoch_rank(r) or (0.0, 0.0) for r in result.history]
    top = max(range(len(ranks)), key=ranks.__getitem__) if ranks else -1
    best_epoch = top + 1 if top >= 0 and ranks[top][0] > before else 0  # 0: none beat the start
    # "best": the start is kept unless an epoch beat it; "last": unless the last epoch reads worse.
    if config.keep == "best":
        model, kept_epoch = (result.model, best_epoch) if best_epoch else (base.model, 0)
    elif result.val is None or result.val.accuracy < before:
        model, kept_epoch = base.model, 0
    else:
        model, kept_epoch = result.model, result.epochs_completed
    logits = predict_logits(model, torch.from_numpy(np.ascontiguousarray(vx)), device=device, precision=precision)
    temperature = calibration_report(logits, torch.from_numpy(vy)).temperature
    after = evaluate(model, vx, vy, device=device, precision=precision, temperature=temperature).accuracy
    metrics: dict[str, Any] = {"val_before": before, "val_after": after, "val_images": len(vx),
                               "no_digit_found": len(empty),
                               "train_images": len(train_idx), "replayed_images": len(tx) - len(train_idx),
                               "epochs": result.epochs_completed, "best_epoch": best_epoch,
                               "kept_epoch": kept_epoch,
                               "seconds": result.train_seconds, "precision": precision}
    if mnist is not None:
        metrics["mnist_test_before"] = mnist_before
        metrics["mnist_test_after"] = evaluate(model, mnist.test_images, mnist.test_labels, device=device,
                                               precision=precision, temperature=temperature).accuracy
    history = [{"epoch": r.epoch, "loss": r.loss, "val_exact": r.val_accuracy or 0.0, "seconds": r.seconds}
               for r in result.history]
    return FinetuneResult(model, base, labelled, config, metrics, history, temperature)
