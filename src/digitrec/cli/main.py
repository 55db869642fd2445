"""Command-line interface: parses flags, builds configs, calls the library, prints results.

Every expected failure ends with one line on stderr and a non-zero exit; ``--debug`` shows
the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from digitrec import __version__
from digitrec.errors import ConfigError, DatasetError, DigitrecError
from digitrec.train.engine import MAX_SEED

__all__ = ["main", "build_parser"]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are a single line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {value}")
        return value

    return parse


def _float_parser(ok: Callable[[float], bool], requirement: str) -> Callable[[str], float]:
    """An argparse type: a float for which ``ok`` holds (NaN never does), else a one-line error."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
        return value

    return parse


_positive_float = _float_parser(lambda v: 0 < v < math.inf, "a positive number")
_non_negative_float = _float_parser(lambda v: 0 <= v < math.inf, "a number >= 0")
_fraction = _float_parser(lambda v: 0.0 <= v <= 1.0, "from 0 to 1")


@contextlib.contextmanager
def _thread_count(threads: int | None) -> Iterator[None]:
    """PyTorch's thread count set to ``threads`` for the command, restored after (main() is importable)."""
    if not threads:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _default_min_conf() -> float:
    from digitrec.infer.recogniser import DEFAULT_MIN_CONFIDENCE

    return DEFAULT_MIN_CONFIDENCE


def _emit_json(obj: Any) -> None:
    print(json.dumps(obj), flush=True)


def _err(message: str) -> None:
    print(f"digitrec: error: {message}", file=sys.stderr, flush=True)


def _outputs(*figures: str | Path | None, model: Path | None = None) -> None:
    """Check output files before long work: figure formats, writable, no two the same file."""
    from digitrec.fileio import check_writable
    from digitrec.plots import check_plot_path

    checked: list[Path] = []
    for p, is_figure in [(model, False), *((f, True) for f in figures)]:
        if p is None:
            continue
        target = Path(p)
        if is_figure:
            check_plot_path(target)
        if any(target.resolve() == c.resolve() for c in checked):
            raise ConfigError(f"{target} is given for two outputs; use different file names")
        checked.append(check_writable(target))


# --------------------------------------------------------------------------------------------
# Progress reporting (the library only calls back; drawing bars is the CLI's job)


def _download_progress(quiet: bool):
    if quiet:
        return None
    from tqdm.auto import tqdm

    def factory(name: str, total: int | None):
        bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {name}", leave=False)

        def update(n: int) -> None:
            bar.update(n)
            if bar.total is not None and bar.n >= bar.total:
                bar.close()

        return update

    return factory


class _TrainProgress:
    """Keras-like output: a bar per epoch (on a terminal) and one summary line per epoch."""

    def __init__(self, quiet: bool) -> None:
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self.quiet = quiet
        self.bar: Any = None
        self.epochs = 0
        self.last_step = 0

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.epochs = epochs
        self.last_step = 0
        if not self.quiet:
            self.bar = self._tqdm(
                total=steps, desc=f"Epoch {epoch}/{epochs}", unit="step", leave=False,
                disable=None, dynamic_ncols=True,
            )

    def on_step(self, step: int, loss: float, accuracy: float, images_per_s: float) -> None:
        if self.bar is not None:
            self.bar.update(step - self.last_step)
            self.bar.set_postfix_str(f"loss {loss:.4f} - acc {accuracy:.4f} - {images_per_s:,.0f} img/s")
        self.last_step = step

    def on_epoch_end(self, record: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.quiet:
            return
        parts = [f"loss {record.loss:.4f}", f"accuracy {record.accuracy:.4f}"]
        if record.val_loss is not None:
            parts += [f"val_loss {record.val_loss:.4f}", f"val_accuracy {record.val_accuracy:.4f}"]
        parts += [f"{record.seconds:.1f}s", f"{record.images_per_s:,.0f} img/s"]
        self._tqdm.write(f"Epoch {record.epoch}/{self.epochs}: " + " - ".join(parts), file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# --------------------------------------------------------------------------------------------
# Commands


def cmd_data(args: argparse.Namespace) -> int:
    from digitrec.data.mnist import DATA_DIR_ENV, data_status, default_cache_dir, load_mnist

    if args.download:
        load_mnist(args.data_dir, progress=_download_progress(args.quiet))
    status = data_status(args.data_dir)
    if args.json:
        _emit_json(
            {"ok": status.ok, "directory": status.directory, "files": status.files,
             "class_counts": status.class_counts}
        )
        return 0 if status.ok else EXIT_ERROR
    if status.directory is None:
        if args.data_dir:
            _err(f"MNIST not found in {args.data_dir}; put the four IDX files there or add --download")
        else:
            _err(
                f"MNIST not found; set {DATA_DIR_ENV} to a folder with the four IDX files, put them "
                f"in {default_cache_dir()}, or run 'digitrec data --download'"
            )
        return EXIT_ERROR
    print(f"MNIST in {status.directory}")
    for base, info in status.files.items():
        if "error" in info:
            print(f"  {base:<24} UNREADABLE: {info['error']}")
            continue
        mark = "ok" if info["ok"] else "CHECKSUM MISMATCH"
        shape = "x".join(str(s) for s in info["shape"])  # type: ignore[attr-defined]
        print(f"  {base:<24} {shape:<12} sha256 {str(info['sha256'])[:16]}...  {mark}")
    for split, counts in status.class_counts.items():
        print(f"  {split:<5} {sum(counts):>6,} images; per class: {' '.join(str(c) for c in counts)}")
    return 0 if status.ok else EXIT_ERROR


def cmd_samples(args: argparse.Namespace) -> int:
    from digitrec.data.mnist import load_mnist
    from digitrec.plots import plot_samples

    _outputs(args.out)
    mnist = load_mnist(args.data_dir, progress=_download_progress(args.quiet))
    print(f"train images {mnist.train_images.shape}, test images {mnist.test_images.shape}")
    print(f"wrote {plot_samples(mnist.train_images, mnist.train_labels, args.out)}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from digitrec.models import count_parameters, format_summary, layer_table
    from digitrec.models.registry import create_model

    _outputs(args.diagram)
    if args.model:
        from digitrec.models.checkpoint import load_model

        mf = load_model(args.model)
        model, name = mf.model, f"{args.model} ({mf.arch})"
    else:
        model, name = create_model(args.arch), args.arch
    if args.json:
        trainable, frozen = count_parameters(model)
        _emit_json(
            {
                "name": name,
                "layers": [
                    {"name": r.name, "type": r.kind, "output_shape": list(r.output_shape), "params": r.params}
                    for r in layer_table(model)
                ],
                "total_params": trainable + frozen,
                "trainable_params": trainable,
            }
        )
    else:
        print(format_summary(model, name))
    if args.diagram:
        from digitrec.plots import plot_model_diagram

        path = plot_model_diagram(model, args.diagram, name=name)
        print(f"wrote {path}", file=sys.stderr if args.json else sys.stdout)
    return 0


# Train flags that override fields of the preset's TrainConfig (flag dest -> field name).
_RECIPE_FLAGS = (
    "arch", "epochs", "batch_size", "lr", "seed", "val_size", "limit", "precision", "optimizer",
    "weight_decay", "schedule", "warmup", "label_smoothing", "ema_decay", "patience", "keep_best",
    "aug_rotate", "aug_shift", "aug_scale", "aug_shear", "aug_elastic", "aug_elastic_sigma",
)


def cmd_train(args: argparse.Namespace) -> int:
    from digitrec.cfg.presets import preset_config
    from digitrec.data.mnist import load_mnist
    from digitrec.runtime import resolve_device
    from digitrec.train.engine import train

    overrides = {name: getattr(args, name) for name in _RECIPE_FLAGS if getattr(args, name) is not None}
    config = preset_config(args.preset, **overrides)
    if args.resume and not args.checkpoint:
        raise ConfigError("--resume needs --checkpoint FILE")
    config.validate()
    out = Path(args.out)
    history_plot = None if args.no_plot else Path(args.history_plot or out.with_name(f"{out.stem}-history.png"))
    _outputs(history_plot, model=out)
    if args.checkpoint:
        _outputs(model=Path(args.checkpoint))
        if Path(args.checkpoint).resolve() in (out.resolve(), history_plot and history_plot.resolve()):
            raise ConfigError(f"{args.checkpoint} is given for two outputs; use different file names")
    device = resolve_device(args.device)
    mnist = load_mnist(args.data_dir, progress=_download_progress(args.quiet))
    progress = _TrainProgress(args.quiet)
    if args.resume and Path(args.checkpoint).is_file() and not args.json:
        print(f"resuming from {args.checkpoint}", file=sys.stderr, flush=True)
    try:
        result = train(config, data=mnist, device=device, callback=progress,
                       checkpoint=args.checkpoint, resume=args.resume)
    finally:
        progress.close()
    if not result.history:
        _err("interrupted before the first epoch completed; nothing saved")
        return EXIT_INTERRUPTED
    path = result.save(out)
    metrics = result.metrics()
    if not args.json:
        if result.interrupted:
            print(f"interrupted: kept the model of epoch {result.epochs_completed}")
        n = result.epochs_completed
        print(f"trained {config.arch} on {result.device} ({result.precision}): "
              f"{n} epoch{'s' if n != 1 else ''} in {result.train_seconds:.1f}s")
        if result.best_epoch is not None:
            print(f"kept the weights of epoch {result.best_epoch} (best validation accuracy)")
        if result.val is not None:
            print(f"validation: accuracy {result.val.accuracy:.2%}, loss {result.val.loss:.4f}")
        if result.test is not None:
            print(f"test:       accuracy {result.test.accuracy:.2%}, loss {result.test.loss:.4f}")
        print(f"saved model to {path}")
    plot = None
    if history_plot is not None:
        from digitrec.plots import plot_history

        plot = plot_history(result.history, history_plot)
        if not args.json:
            print(f"wrote training curves to {plot}")
    if args.json:
        _emit_json(
            {"model": str(path), "history_plot": str(plot) if plot else None, "device": result.device,
             "precision": result.precision, "threads": _torch_threads(), "interrupted": result.interrupted,
             **metrics}
        )
    return EXIT_INTERRUPTED if result.interrupted else 0


def _format_report(result: Any) -> str:
    lines = [f"{'class':>5} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>7}"]
    for c in range(len(result.support)):
        lines.append(
            f"{c:>5} {result.precision[c]:>9.4f} {result.recall[c]:>7.4f} {result.f1[c]:>7.4f} "
            f"{int(result.support[c]):>7}"
        )
    lines.append("")
    lines.append("confusion matrix (rows: true, columns: predicted)")
    lines.append("     " + "".join(f"{c:>6}" for c in range(len(result.support))))
    for c, row in enumerate(result.confusion):
        lines.append(f"{c:>5}" + "".join(f"{v:>6}" for v in row))
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from digitrec.data.mnist import load_mnist
    from digitrec.infer.evaluate import evaluate
    from digitrec.models.checkpoint import load_model
    from digitrec.runtime import resolve_device, resolve_precision

    if not args.no_plots:
        _outputs(args.confusion, args.errors)
    device = resolve_device(args.device)
    mf = load_model(args.model, device)
    mnist = load_mnist(args.data_dir, progress=_download_progress(args.quiet))
    images, labels = mnist.split(args.split)
    result = evaluate(
        mf.model, images, labels, device=device,
        precision=resolve_precision(args.precision, device),
        normalization=mf.normalization, temperature=mf.temperature,
    )
    written: dict[str, str] = {}
    if not args.no_plots:
        from digitrec.plots import plot_confusion, plot_misclassified

        written["confusion_plot"] = str(
            plot_confusion(result.confusion, args.confusion, title=f"{args.model}: {args.split} set")
        )
        written["misclassified_plot"] = str(
            plot_misclassified(images, labels, result.predictions, result.confidences, args.errors)
        )
    if args.json:
        _emit_json({"model": args.model, "split": args.split, **result.to_dict(), **written})
        return 0
    print(f"model {args.model} ({mf.arch}) on the MNIST {args.split} set ({len(labels):,} images)")
    print(f"loss {result.loss:.4f}, accuracy {result.accuracy:.2%} ({result.errors} errors)")
    print()
    print(_format_report(result))
    for path in written.values():
        print(f"wrote {path}")
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    from digitrec.models.checkpoint import load_model
    from digitrec.models.ensemble import build_ensemble, save_ensemble

    out = Path(args.out)
    _outputs(model=out)
    members = [load_model(m, "cpu") for m in args.models]
    model = build_ensemble(members)
    if args.fp16:
        model.half().float()  # the weights as they will be stored, so --test measures the file
    metrics: dict[str, Any] = {}
    if args.test:
        # One final measurement for the record; nothing is chosen with it.
        from digitrec.data.mnist import load_mnist
        from digitrec.infer.evaluate import evaluate
        from digitrec.runtime import resolve_device, resolve_precision

        device = resolve_device(args.device)
        mnist = load_mnist(args.data_dir, progress=_download_progress(args.quiet))
        result = evaluate(model.to(device), mnist.test_images, mnist.test_labels, device=device,
                          precision=resolve_precision(args.precision, device),
                          normalization=members[0].normalization)
        metrics = {"test_loss": result.loss, "test_accuracy": result.accuracy}
    path = save_ensemble(out, model.cpu(), members, metrics=metrics, half=args.fp16)
    if args.json:
        _emit_json({"model": str(path), "members": list(args.models), **metrics})
        return 0
    print(f"ensemble of {len(members)} models: {', '.join(args.models)}")
    if metrics:
        print(f"test: accuracy {metrics['test_accuracy']:.2%}, loss {metrics['test_loss']:.4f}")
    print(f"saved model to {path}")
    return 0


def cmd_train_verifier(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from digitrec.data.mnist import load_mnist
    from digitrec.infer.recogniser import load
    from digitrec.read.verifier import VerifierConfig
    from digitrec.runtime import resolve_device
    from digitrec.train.verifier import label_candidates, save_verifier, train_verifier

    config = VerifierConfig(lines=args.lines, seed=args.seed, epochs=args.epochs, arch=args.arch)
    config.validate()
    out = Path(args.out)
    _outputs(model=out)
    device = resolve_device(args.device)
    rec = load(args.model, device=device, verifier=None, line_reader=None)  # the digit model the segmenter scores with
    mnist = load_mnist(args.data_dir, progress=_download_progress(args.quiet))
    bar = tqdm(total=config.lines, desc="cutting lines into candidates", unit="line", leave=False,
               disable=True if args.quiet else None, dynamic_ncols=True)

    def advance(done: int, total: int) -> None:
        bar.update(done - bar.n)

    try:
        # Training digits only: the test split stays unseen, for the robustness bench.
        inputs, targets, skipped = label_candidates(rec.predict_proba, mnist.train_images, mnist.train_labels,
                                                    config, progress=advance)
    finally:
        bar.close()
    progress = _TrainProgress(args.quiet)
    try:
        result = train_verifier(inputs, targets, config, device=device, callback=progress)
    finally:
        progress.close()
    if not result.history:
        _err("interrupted before the first epoch completed; nothing saved")
        return EXIT_INTERRUPTED
    positive = float(targets.mean())
    path = save_verifier(out, result, config, labelled_with=rec.name, candidates_count=len(targets),
                         positive_fraction=positive, skipped_lines=skipped)
    summary = {"model": str(path), "candidates": len(targets), "positive_fraction": positive,
               "skipped_lines": skipped, **result.metrics()}
    if args.json:
        _emit_json(summary)
    else:
        print(f"{len(targets):,} candidates from {config.lines - skipped:,} lines ({skipped} could not be "
              f"read true); {positive:.0%} are whole digits")
        if result.val is not None:
            print(f"held-out candidates: accuracy {result.val.accuracy:.2%}, loss {result.val.loss:.4f}")
        print(f"saved verifier to {path}")
    return EXIT_INTERRUPTED if result.interrupted else 0


def cmd_train_line_reader(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from digitrec.data.mnist import load_mnist
    from digitrec.runtime import resolve_device
    from digitrec.train.lines import LineTrainConfig, save_line_reader, train_line_reader

    arch = "line-crnn" if args.lines == "paper" else "line-ctc"
    config = LineTrainConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed, lines=args.lines,
                             arch=arch, workers=args.workers)
    config.validate()
    out = Path(args.out)
    _outputs(model=out)
    device = resolve_device(args.device)
    mnist = load_mnist(args.data_dir, progress=_download_progress(args.quiet))
    bar = tqdm(total=config.steps, desc="training the line reader", unit="step", leave=False,
               disable=True if args.quiet else None, dynamic_ncols=True)

    def advance(done: int, total: int, loss: float) -> None:
        bar.update(done - bar.n)
        if done % 50 == 0 or done == total:
            bar.set_postfix(loss=f"{loss:.3f}")

    # Without --threads, the line-making processes keep their cores: more torch threads than are
    # left only wait on each other (2 threads and a worker on 2 cores ran 3x slower per step).
    threads = args.threads or max(1, (os.cpu_count() or 1) - config.workers)
    try:
        # Training digits only: the test split stays unseen, for the robustness bench.
        with _thread_count(threads):
            model, metrics = train_line_reader(config, mnist.train_images, mnist.train_labels, device=device,
                                               progress=advance)
    except KeyboardInterrupt:
        bar.close()  # before the message, so the bar does not overwrite it
        _err("interrupted; nothing saved")
        return EXIT_INTERRUPTED
    finally:
        bar.close()
    path = save_line_reader(out, model, config, metrics)
    if args.json:
        _emit_json({"model": str(path), "threads": threads, **metrics})
    else:
        print(f"validation lines ({metrics['val_lines']:,}, held-out training digits): "
              f"{metrics['val_exact']:.2%} read exactly; training {metrics['train_seconds']:.0f} s")
        print(f"saved line reader to {path}")
    return 0


def _config_flags(parser: argparse.ArgumentParser, config_class: type, skip: Sequence[str] = ()) -> None:
    """A flag per field of a frozen config dataclass: its type, its default and its help from the field."""
    for f in dataclasses.fields(config_class):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "") + ("" if f.default is None else " (default: %(default)s)")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
        else:
            # Annotations are strings here (postponed evaluation); "float | None" is a float flag.
            kind = {"int": int, "float": float, "str": str}.get(str(f.type).removesuffix(" | None"), str)
            metavar = {int: "N", float: "X"}.get(kind, "NAME")
            parser.add_argument(flag, type=kind, default=f.default, metavar=metavar, help=help_text)


def _config_from(args: argparse.Namespace, config_class: type) -> Any:
    """The config dataclass built from the flags :func:`_config_flags` added."""
    return config_class(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_class)
                           if hasattr(args, f.name)})


def cmd_finetune(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from digitrec.data.mnist import load_mnist
    from digitrec.runtime import resolve_device
    from digitrec.train.finetune import FinetuneConfig, finetune, load_labelled

    config = _config_from(args, FinetuneConfig)
    config.validate()
    out = Path(args.out)
    _outputs(model=out)
    data = load_labelled(args.data, skip_bad=args.skip_bad)
    if data.skipped:
        print(f"digitrec: skipped {len(data.skipped)} bad row(s), first: {data.skipped[0]}", file=sys.stderr,
              flush=True)
    # MNIST for replay (and a digit model's before/after test); not needed when replay is off.
    try:
        mnist = load_mnist(args.data_dir, progress=_download_progress(args.quiet)) if config.replay != 0 else None
    except DatasetError as exc:
        raise DatasetError(f"{exc} (MNIST is replayed while fine-tuning; --replay 0 fine-tunes without it)") from exc
    bar = tqdm(total=config.epochs, desc=f"fine-tuning on {len(data):,} {data.kind}", unit="epoch", leave=False,
               disable=True if args.quiet else None, dynamic_ncols=True)

    def advance(epoch: int, epochs: int, figures: dict[str, float]) -> None:
        bar.update(epoch - bar.n)
        bar.set_postfix(loss=f"{figures['loss']:.3f}", val=f"{figures['val_exact']:.1%}")

    try:
        result = finetune(data, args.model, config, device=resolve_device(args.device), mnist=mnist,
                          progress=advance)
    except KeyboardInterrupt:
        bar.close()
        _err("interrupted; nothing saved")
        return EXIT_INTERRUPTED
    finally:
        bar.close()
    path = result.save(out)
    m = result.metrics
    if args.json:
        _emit_json({"model": str(path), "data": data.summary(), **m})
        return 0
    what = "read exactly" if data.kind == "numbers" else "right"
    print(f"validation share ({m['val_images']:,} of {len(data):,} images, held out): "
          f"{m['val_before']:.1%} {what} before, {m['val_after']:.1%} after "
          f"(best epoch {m['best_epoch']} of {m['epochs']}; {m['seconds']:.0f} s)")
    if "mnist_test_before" in m:
        print(f"MNIST test set: {m['mnist_test_before']:.2%} before, {m['mnist_test_after']:.2%} after")
    use = "digitrec read --model" if data.kind == "numbers" else "digitrec predict --model"
    print(f"saved {path}; use it with: {use} {path} IMAGE")
    return 0


def _predict_inputs(args: argparse.Namespace) -> list[tuple[str, Any, int | None]]:
    """(name, image source, true label or None) for each requested input."""
    inputs: list[tuple[str, Any, int | None]] = [(p, p, None) for p in args.images]
    if args.mnist_index is not None or args.random:
        from digitrec.data.mnist import load_mnist

        mnist = load_mnist(args.data_dir, progress=_download_progress(args.quiet))
        n = len(mnist.test_images)
        if args.random:
            index = int(np.random.default_rng(args.seed).integers(n))
        else:
            index = args.mnist_index
            if index >= n:
                raise ConfigError(f"--mnist-index {index} is out of range (test set has {n} images)")
        inputs.append((f"mnist:test:{index}", mnist.test_images[index], int(mnist.test_labels[index])))
    if not inputs:
        raise ConfigError("give image files, --mnist-index N or --random")
    return inputs


def _save_input(image: np.ndarray, path: str | Path) -> Path:
    """The 28x28 [0, 1] model input as an 8-bit greyscale PNG (or any format Pillow knows by suffix)."""
    from PIL import Image

    from digitrec.fileio import atomic_write

    target = Path(path)
    fmt = Image.registered_extensions().get(target.suffix.lower())
    if fmt is None:
        raise ConfigError(f"--show-input: unknown image format {target.suffix or '(no suffix)'!r} (use .png)")
    img = Image.fromarray(np.clip(np.asarray(image) * 255 + 0.5, 0, 255).astype(np.uint8), mode="L")
    with atomic_write(target) as fh:
        img.save(fh, format=fmt)
    return target


def _verdict(pred: Any) -> str:
    if pred.digit is None:
        return "no digit found"
    top = ", ".join(f"{d} {p:.1%}" for d, p in pred.top)
    unsure = "  UNSURE" if pred.unsure else ""
    return f"{pred.digit}  confidence {pred.confidence:.1%}{unsure}  top-3: {top}"


# Below this many input files, "auto" means PyTorch in the CLI: it answers one file at a time,
# and preparing ONNX Runtime at start-up (exporting the graph, ~0.4 s) costs more than it saves
# per image (~0.25 ms for `seed` with `predict`; heavier models and `read`, which classifies
# dozens of candidates per file, break even sooner). Servers and the Python API keep ONNX.
_CLI_ONNX_FROM = 2000


def _cli_backend(requested: str, count: int) -> str:
    """The backend the CLI loads for ``count`` input files when ``requested`` was asked for."""
    return "torch" if requested == "auto" and count < _CLI_ONNX_FROM else requested


def cmd_predict(args: argparse.Namespace) -> int:
    from digitrec.infer.recogniser import load

    _outputs(args.show)
    if args.show_input:
        from digitrec.fileio import check_writable

        check_writable(args.show_input)
    inputs = _predict_inputs(args)
    if args.show and len(inputs) != 1:
        raise ConfigError("--show takes exactly one input image")
    if args.show_input and len(inputs) != 1:
        raise ConfigError("--show-input takes exactly one input image")
    rec = load(args.model, device=args.device, backend=_cli_backend(args.backend, len(inputs)),
               min_confidence=args.min_confidence, verifier=None, line_reader=None)  # single digits: no number helpers
    failures = 0
    for name, source, truth in inputs:
        try:
            pred = rec.predict([source])[0]
        except DigitrecError as exc:
            failures += 1
            message = str(exc) if str(exc).startswith(name) else f"{name}: {exc}"
            _err(message)
            if args.json:
                _emit_json({"path": name, "error": message})
            continue
        if args.json:
            record = {"path": name, **pred.to_dict()}
            if truth is not None:
                record["true_label"] = truth
            _emit_json(record)
        else:
            true_part = f" (true {truth})" if truth is not None else ""
            print(f"{name}{true_part}: {_verdict(pred)}")
        if args.show_input:
            path = _save_input(pred.input, args.show_input)
            print(f"wrote {path}", file=sys.stderr if args.json else sys.stdout)
        if args.show and pred.digit is not None:
            from digitrec.plots import plot_prediction

            shown = source if isinstance(source, np.ndarray) else pred.input
            path = plot_prediction(shown, pred, args.show, true_label=truth)
            print(f"wrote {path}", file=sys.stderr if args.json else sys.stdout)
    return EXIT_ERROR if failures else 0


def cmd_read(args: argparse.Namespace) -> int:
    from digitrec.infer.recogniser import load

    _outputs(args.show)
    if args.show and len(args.images) != 1:
        raise ConfigError("--show takes exactly one input image")
    rec = load(args.model, device=args.device, backend=_cli_backend(args.backend, len(args.images)),
               min_confidence=args.min_confidence, verifier=args.verifier, line_reader=args.line_reader)
    failures = 0
    for name in args.images:
        try:
            reading = rec.read(name)
        except DigitrecError as exc:
            failures += 1
            message = str(exc) if str(exc).startswith(name) else f"{name}: {exc}"
            _err(message)
            if args.json:
                _emit_json({"path": name, "error": message})
            continue
        if args.json:
            _emit_json({"path": name, **reading.to_dict()})
        elif reading.number is None:
            print(f"{name}: no number found")
        else:
            unsure = "  UNSURE" if reading.unsure else ""
            digits = "  ".join(
                f"{d.digit} {d.confidence:.1%}{'?' if d.unsure else ''} at {d.box[0]},{d.box[1]} {d.box[2]}x{d.box[3]}"
                for d in reading.digits
            )
            print(f"{name}: {reading.number}  confidence {reading.confidence:.1%}{unsure}  digits: {digits}")
        if args.show:
            from digitrec.data.preprocess import decode_image, to_grayscale
            from digitrec.plots import plot_reading

            decoded = decode_image(name)  # a big JPEG comes back smaller; the boxes are in the file's pixels
            path = plot_reading(to_grayscale(decoded.image), reading, args.show, scale=decoded.scale)
            print(f"wrote {path}", file=sys.stderr if args.json else sys.stdout)
    return EXIT_ERROR if failures else 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from digitrec.data.mnist import load_mnist
    from digitrec.fileio import check_writable
    from digitrec.models.checkpoint import bundled_models, read_metadata, resolve_model_path
    from digitrec.train.calibrate import calibrate_model_file

    source = resolve_model_path(args.model)
    if not args.out and source in bundled_models().values():
        raise ConfigError(f"{args.model} is a bundled model; give --out FILE for the calibrated copy")
    if not read_metadata(source).get("train_config"):
        raise ConfigError(f"{args.model}: no training recipe stored, so its validation split cannot be rebuilt")
    out = Path(args.out) if args.out else source
    check_writable(out)
    mnist = load_mnist(args.data_dir, progress=_download_progress(args.quiet))
    path, report = calibrate_model_file(args.model, out, data=mnist)
    if args.json:
        _emit_json({"model": str(path), **report.to_dict()})
        return 0
    print(f"temperature {report.temperature:.4f} fitted on {report.count:,} validation images")
    print(f"NLL {report.nll_before:.4f} -> {report.nll_after:.4f}; "
          f"ECE {report.ece_before:.2%} -> {report.ece_after:.2%}")
    print(f"wrote {path} (weights unchanged)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from digitrec.infer.backends import export_onnx
    from digitrec.models.checkpoint import load_model

    if not args.out.lower().endswith(".onnx"):
        raise ConfigError(f"{args.out}: the output must end in .onnx")
    _outputs(model=Path(args.out))
    export_onnx(load_model(args.model), args.out)
    size = Path(args.out).stat().st_size
    if args.json:
        _emit_json({"model": args.model, "format": "onnx", "path": args.out, "bytes": size})
    else:
        print(f"wrote {args.out} ({size / 1e6:.1f} MB): input 'images' (N, 28, 28) float32 in [0, 1], "
              "output 'probabilities' (N, 10)")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from digitrec.models import count_parameters
    from digitrec.models.checkpoint import bundled_models, read_metadata
    from digitrec.models.registry import create_model, get_model_spec, list_models

    archs = []
    for name in list_models(None):
        trainable, frozen = count_parameters(create_model(name))
        spec = get_model_spec(name)
        archs.append({"name": name, "params": trainable + frozen, "task": spec.task, "description": spec.description})
    bundled = []
    for name, path in sorted(bundled_models().items()):
        meta = read_metadata(path)
        bundled.append({"name": name, "arch": meta["arch"], "path": str(path),
                        "test_accuracy": meta.get("metrics", {}).get("test_accuracy")})
    from digitrec.cfg.presets import PRESETS, preset_config

    presets: list[dict[str, Any]] = [{"name": n, "overrides": dict(o)} for n, o in PRESETS.items()]
    if args.json:
        _emit_json({"architectures": archs, "presets": presets, "bundled": bundled})
        return 0
    for task, heading in (("digits", "architectures (--arch):"), ("lines", "line readers (train-line-reader):")):
        print(heading)
        for a in archs:
            if a["task"] == task:
                print(f"  {a['name']:<10} {a['params']:>10,} params  {a['description']}")
    print("training presets (train --preset):")
    for pr in presets:
        recipe = preset_config(pr["name"])
        n = len(pr["overrides"])
        epochs = f"{recipe.epochs} epoch{'s' * (recipe.epochs != 1)}"
        print(f"  {pr['name']:<10} arch {recipe.arch:<8} {epochs}, {n} overrides of the notebook recipe")
    print("bundled models (--model):")
    for b in bundled:
        acc = f"test accuracy {b['test_accuracy']:.2%}" if b["test_accuracy"] is not None else ""
        print(f"  {b['name']:<10} arch {b['arch']:<8} {acc}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from digitrec.serve import MISSING_EXTRA, ServeConfig

    config = ServeConfig(
        model=args.model, verifier=args.verifier, line_reader=args.line_reader, host=args.host, port=args.port,
        workers=args.workers, device=args.device, precision=args.precision, backend=args.backend,
        cors_origin=args.cors_origin, timeout_s=args.timeout, max_batch=args.max_batch,
        torch_threads=args.torch_threads, access_log=not args.no_access_log,
        log_level="warning" if args.quiet else "info",
    )
    try:
        import uvicorn  # noqa: F401

        from digitrec.serve.app import run
    except ModuleNotFoundError as exc:
        raise ConfigError(f"{MISSING_EXTRA} (missing module {exc.name})") from None
    run(config)
    return 0


# --------------------------------------------------------------------------------------------
# Parser


def build_parser() -> argparse.ArgumentParser:
    """The ``digitrec`` argument parser with all subcommands."""
    # SUPPRESS: a subcommand that does not see the flag must not reset what was given before it.
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")

    data_opts = _Parser(add_help=False)
    data_opts.add_argument(
        "--data-dir", metavar="DIR",
        help="folder with the four MNIST IDX files (default: $DIGITREC_DATA_DIR, then the user cache; "
        "downloaded there if missing)",
    )
    threads_opts = _Parser(add_help=False)
    threads_opts.add_argument(
        "--threads", type=_int_at_least(1), metavar="N",
        help="CPU threads for PyTorch (default: one per core); 1 is far faster on a busy machine",
    )
    placement_opts = _Parser(add_help=False, parents=[threads_opts])  # where to compute
    placement_opts.add_argument("--device", default="auto",
                                help="auto (CUDA if available, else CPU), cpu, cuda, cuda:N")
    device_opts = _Parser(add_help=False, parents=[placement_opts])  # ... and in which precision
    reading_opts = _Parser(add_help=False)  # the helper models that read numbers (read, serve's /v1/read)
    reading_opts.add_argument(
        "--verifier", default="bundled",
        help="piece verifier telling whole digits from parts and touching pairs when reading numbers: "
        "'bundled', a file from 'digitrec train-verifier', or 'none' (default: %(default)s)")
    reading_opts.add_argument(
        "--line-reader", default="bundled",
        help="line reader, a second opinion that reads a whole number without cutting it: 'bundled', a file "
        "from 'digitrec train-line-reader', or 'none' (default: %(default)s)")
    device_opts.add_argument(
        "--precision", default="auto", choices=["auto", "fp32", "bf16"],
        help="compute precision; auto uses bf16 where the hardware runs it natively",
    )

    parser = _Parser(
        prog="digitrec",
        description="Handwritten-digit recognition: train, evaluate and use MNIST models.",
    )
    # Own actions, not the shared parent's: set_defaults would change the shared ones too.
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--version", action="version", version=f"digitrec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("data", parents=[common, data_opts], help="locate, verify and describe MNIST",
                       description="Report where MNIST is, whether its checksums match, shapes and class counts.")
    p.add_argument("--download", action="store_true", help="download the files first if missing")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("samples", parents=[common, data_opts], help="draw one training image of each digit",
                       description="Draw the first training image of each digit 0-9 in a 2x5 grid.")
    p.add_argument("--out", default="samples.png", help="output image (.png, .svg or .pdf; default: %(default)s)")
    p.set_defaults(func=cmd_samples)

    p = sub.add_parser("summary", parents=[common], help="print a model's layer table",
                       description="Print a Keras-style summary: layers, output shapes, parameters.")
    p.add_argument("--arch", default="seed", help="architecture (default: %(default)s; see 'digitrec models')")
    p.add_argument("--model", help="summarise a model file or bundled model instead of a fresh architecture")
    p.add_argument("--diagram", metavar="FILE", help="also draw the layer diagram (.png, .svg or .pdf)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("train", parents=[common, data_opts, device_opts], help="train a model on MNIST",
                       description="Train on MNIST (default: the notebook recipe, Adam 1e-3, batch 100, "
                       "10 epochs), evaluate once on the test set, and save one model file.")
    p.add_argument("--preset", default="notebook", metavar="NAME",
                   help="training recipe to start from (default: %(default)s; see 'digitrec models'); "
                   "the flags below override it")
    p.add_argument("--arch", help="architecture (preset default: seed)")
    p.add_argument("--epochs", type=_int_at_least(1), help="epochs (notebook: 10)")
    p.add_argument("--batch-size", type=_int_at_least(1), help="batch size (notebook: 100)")
    p.add_argument("--lr", type=_positive_float, help="(peak) learning rate (notebook: 0.001)")
    p.add_argument("--seed", type=_int_at_least(0, MAX_SEED - 1), help="random seed (default: 0)")
    p.add_argument("--val-size", type=_int_at_least(0),
                   help="training images held out for validation, 0 for none (default: 5000)")
    p.add_argument("--limit", type=_int_at_least(0), metavar="N",
                   help="train on the first N training images only, for quick runs (default: all)")
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], help="optimiser (notebook: adam)")
    p.add_argument("--weight-decay", type=_non_negative_float, help="weight decay (notebook: 0)")
    p.add_argument("--schedule", choices=["constant", "onecycle", "cosine"], help="LR schedule (notebook: constant)")
    p.add_argument("--warmup", type=_non_negative_float, help="fraction of steps ramping the LR up (onecycle, cosine)")
    p.add_argument("--label-smoothing", type=_non_negative_float, help="label smoothing, 0..1 (notebook: 0)")
    p.add_argument("--ema-decay", type=_non_negative_float, help="EMA of the weights, e.g. 0.999 (notebook: 0 = off)")
    p.add_argument("--patience", type=_int_at_least(0),
                   help="stop after N epochs without better validation accuracy (notebook: 0 = never)")
    p.add_argument("--keep-best", action=argparse.BooleanOptionalAction, default=None,
                   help="end with the epoch of best validation accuracy (notebook: no)")
    for name, unit in (("rotate", "degrees"), ("shift", "pixels"), ("scale", "fraction"), ("shear", "degrees")):
        p.add_argument(f"--aug-{name}", type=_non_negative_float, metavar="X",
                       help=f"random {name} augmentation, +- {unit} (notebook: 0 = off)")
    p.add_argument("--aug-elastic", type=_non_negative_float, metavar="ALPHA",
                   help="elastic distortion strength, pixels (Simard et al.: 34; notebook: 0 = off)")
    p.add_argument("--aug-elastic-sigma", type=_non_negative_float, metavar="SIGMA",
                   help="smoothness of the elastic distortion, Gaussian sigma in pixels (default: 4)")
    p.add_argument("--checkpoint", metavar="FILE", help="save the full training state to FILE after every epoch")
    p.add_argument("--resume", action="store_true",
                   help="continue from --checkpoint FILE if it exists (same recipe flags), else start fresh")
    p.add_argument("--out", default="model.safetensors", help="model file to write (default: %(default)s)")
    p.add_argument("--history-plot", metavar="FILE", help="training curves (default: <out>-history.png)")
    p.add_argument("--no-plot", action="store_true", help="do not draw the training curves")
    p.add_argument("--json", action="store_true", help="print one JSON object with the final metrics")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", parents=[common, data_opts, device_opts], help="evaluate a model on MNIST",
                       description="Loss, accuracy, per-class precision/recall/F1 and the confusion matrix; "
                       "draws the confusion heatmap and a gallery of misclassified images.")
    p.add_argument("--model", default="seed", help="model file or bundled name (default: %(default)s)")
    p.add_argument("--split", default="test", choices=["test", "train"], help="MNIST split (default: %(default)s)")
    p.add_argument("--confusion", default="confusion.png", metavar="FILE", help="heatmap file (default: %(default)s)")
    p.add_argument("--errors", default="misclassified.png", metavar="FILE",
                   help="gallery of misclassified images (default: %(default)s)")
    p.add_argument("--no-plots", action="store_true", help="do not draw the two figures")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("ensemble", parents=[common, data_opts, device_opts],
                       help="combine models into one ensemble model file",
                       description="Write one model file that averages the softmax probabilities of the given "
                       "models; every command accepts it like a single model.")
    p.add_argument("models", nargs="+", metavar="MODEL", help="model files or bundled names (at least two)")
    p.add_argument("--out", required=True, help="ensemble model file to write")
    p.add_argument("--test", action="store_true",
                   help="evaluate the ensemble once on the MNIST test set and record the result in the file")
    p.add_argument("--fp16", action="store_true", help="store the weights in float16 (half the file size)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_ensemble)

    p = sub.add_parser("train-verifier", parents=[common, data_opts, placement_opts],
                       help="train the piece verifier used when reading numbers",
                       description="Cut synthetic lines of MNIST training digits into the candidates the number "
                       "reader considers, label them (one whole digit or not) by aligning them with the true "
                       "number, and train a two-class network on them. 'digitrec read' uses it to tell whole "
                       "digits from parts and from touching digits run together.")
    p.add_argument("--model", default="best",
                   help="digit model the reader scores candidates with while labelling (default: %(default)s)")
    p.add_argument("--lines", type=_int_at_least(1), default=6000, help="synthetic lines (default: %(default)s)")
    p.add_argument("--epochs", type=_int_at_least(1), default=8, help="training epochs (default: %(default)s)")
    p.add_argument("--arch", default="fast", help="architecture, built with two classes (default: %(default)s)")
    p.add_argument("--seed", type=_int_at_least(0, MAX_SEED - 1), default=0, help="random seed (default: 0)")
    p.add_argument("--out", default="verifier.safetensors", help="verifier file to write (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_train_verifier)

    from digitrec.cfg.lines import LINE_KINDS
    from digitrec.train.lines import LineTrainConfig

    p = sub.add_parser("train-line-reader", parents=[common, data_opts, placement_opts],
                       help="train the line reader that reads numbers",
                       description="Train a network that reads a whole line of digits without cutting it (CTC), "
                       "on lines made on the fly from MNIST training digits: by default grey lines on simulated "
                       "paper (rules, separators, scanner effects), which 'digitrec read' reads pictures with; "
                       "--lines ink trains the older reader of binarised ink.")
    p.add_argument("--steps", type=_int_at_least(1), default=LineTrainConfig.steps,
                   help="optimiser steps (default: %(default)s)")
    p.add_argument("--lines", choices=LINE_KINDS, default=LineTrainConfig.lines,
                   help="what to train on: grey paper lines or binarised ink (default: %(default)s)")
    p.add_argument("--workers", type=_int_at_least(0), default=LineTrainConfig.workers,
                   help="processes making lines while training (0: none; default: %(default)s)")
    p.add_argument("--batch-size", type=_int_at_least(1), default=LineTrainConfig.batch_size,
                   help="lines per step (default: %(default)s)")
    p.add_argument("--seed", type=_int_at_least(0, MAX_SEED - 1), default=0, help="random seed (default: 0)")
    p.add_argument("--out", default="lines.safetensors", help="line reader file to write (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_train_line_reader)

    from digitrec.train.finetune import FinetuneConfig

    p = sub.add_parser("finetune", parents=[common, data_opts, placement_opts],
                       help="fine-tune the number reader or a digit model on your own labelled images",
                       description="Adapt a model to your own images: a CSV 'file,label' of whole numbers "
                       "(paths relative to the CSV, labels the digits, leading zeros kept) fine-tunes the grey "
                       "line reader that 'digitrec read' uses; a folder 0/ ... 9/ of single digits fine-tunes a "
                       "digit model. A seeded validation share is held out; the epoch that reads it best is kept. "
                       "Replay mixes in data made from MNIST training digits (needs --data-dir or a download).")
    p.add_argument("data", metavar="DATA", help="labels CSV (file,label) or ImageFolder of digits (0/ ... 9/)")
    p.add_argument("--model", default="default",
                   help="model file or bundled name to start from (default: the bundled line reader for a CSV, "
                   "'seed' for digits)")
    p.add_argument("--out", default="finetuned.safetensors", help="model file to write (default: %(default)s)")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out rows whose file is missing or undecodable or whose label is not digits, "
                   "and say how many (default: refuse the data)")
    _config_flags(p, FinetuneConfig)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("predict", parents=[common, data_opts], help="recognise digits in images",
                       description="Predict the digit in each image (PNG, JPEG, BMP, GIF, TIFF, WebP; any size "
                       "and mode), or in an MNIST test image.")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files")
    p.add_argument("--model", default="seed", help="model file or bundled name (default: %(default)s)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--mnist-index", type=_int_at_least(0), metavar="N", help="also predict MNIST test image N")
    which.add_argument("--random", action="store_true", help="also predict a random MNIST test image")
    p.add_argument("--seed", type=_int_at_least(0, MAX_SEED - 1), help="seed for --random (default: unseeded)")
    p.add_argument("--show", metavar="FILE", help="draw the image titled with true label, prediction and confidence")
    p.add_argument("--show-input", metavar="FILE", help="save the 28x28 image the model saw (PNG)")
    p.add_argument("--min-confidence", type=_fraction, metavar="X",
                   help=f"flag answers below this calibrated confidence as unsure (default: {_default_min_conf():.2f})")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"],
                   help="inference backend; auto uses ONNX Runtime when installed, for 2,000 or more images "
                   "(default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("read", parents=[common, reading_opts], help="read whole numbers (lines of digits) in images",
                       description="Find each handwritten digit in a line of digits, left to right, and print "
                       "the number with per-digit confidence and boxes (x, y, width, height in image pixels).")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--model", default="seed", help="model file or bundled name (default: %(default)s)")
    p.add_argument("--min-confidence", type=_fraction, metavar="X",
                   help=f"flag digits below this calibrated confidence as unsure (default: {_default_min_conf():.2f})")
    p.add_argument("--show", metavar="FILE", help="draw the image with a labelled box per digit (.png, .svg or .pdf)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"],
                   help="inference backend; auto uses ONNX Runtime when installed, for 2,000 or more images "
                   "(default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    p.set_defaults(func=cmd_read)

    p = sub.add_parser("calibrate", parents=[common, data_opts, threads_opts], help="fit a model's softmax temperature",
                       description="Fit the temperature on the validation split the model was trained without "
                       "(rebuilt from its stored recipe) and store it in the model file; weights stay unchanged.")
    p.add_argument("--model", required=True, help="model file (or bundled name) to calibrate")
    p.add_argument("--out", metavar="FILE", help="write the calibrated model here (default: replace --model)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("export", parents=[common], help="export a model for deployment (ONNX)",
                       description="Write a model as an ONNX graph that takes prepared (N, 28, 28) [0, 1] "
                       "images and returns class probabilities (normalisation and temperature included). "
                       "Needs the onnx extra: pip install 'digitrec[onnx]'.")
    p.add_argument("--model", default="seed", help="model file or bundled name (default: %(default)s)")
    p.add_argument("--out", required=True, metavar="FILE", help="ONNX file to write (.onnx)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("models", parents=[common], help="list architectures, training presets and bundled models",
                       description="List the registered architectures, the training presets and the models "
                       "shipped with digitrec.")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("serve", parents=[common, reading_opts], help="serve the HTTP API and the drawing page",
                       description="Serve the HTTP API (/v1/predict, /v1/predict/batch, /v1/read, /v1/model, "
                       "/healthz, /metrics, /docs) and the drawing page at /. Needs the serve extra.")
    p.add_argument("--model", default="seed", help="model file or bundled name (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: %(default)s, this machine only; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=_int_at_least(0, 65535), default=8000, help="TCP port (default: %(default)s)")
    p.add_argument("--workers", type=_int_at_least(1), default=1,
                   help="server processes, each with its own copy of the model (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto")
    p.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16"],
                   help="inference precision (default: %(default)s); bf16 autocast speeds up batches on CPUs "
                   "with native bf16")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"],
                   help="inference backend; auto uses ONNX Runtime when installed and the model runs on the CPU "
                   "in fp32 (less CPU per request), else PyTorch (default: %(default)s)")
    p.add_argument("--cors-origin", metavar="ORIGIN",
                   help="allow cross-origin requests from this origin (default: CORS off)")
    p.add_argument("--timeout", type=_positive_float, default=30.0, metavar="SECONDS",
                   help="deadline for a whole request (default: %(default)s)")
    p.add_argument("--max-batch", type=_int_at_least(1), default=64, metavar="N",
                   help="most images per forward pass when requests are batched together; 1 turns "
                   "micro-batching off (default: %(default)s)")
    p.add_argument("--torch-threads", type=_int_at_least(1), default=1, metavar="N",
                   help="PyTorch threads per worker (default: %(default)s)")
    p.add_argument("--no-access-log", action="store_true", help="no log line per request (faster under load)")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        with _thread_count(getattr(args, "threads", None)):
            return int(args.func(args))
    except DigitrecError as exc:
        if args.debug:
            raise
        _err(str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        if args.debug:
            raise
        _err("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`digitrec ... | head`): stop quietly, as Unix tools do, and keep
        # Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except OSError as exc:
        if args.debug:
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        _err(f"{where}{exc.strerror or exc}")
        return EXIT_ERROR
