"""What every command shares: one-line usage errors, flag types, output checks, progress bars, JSON output.

Nothing here imports PyTorch or NumPy at module level: building the parser (``--help``, usage
errors) must stay fast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from digitrec.errors import ConfigError, DigitrecError

__all__ = [
    "EXIT_ERROR",
    "EXIT_USAGE",
    "EXIT_INTERRUPTED",
    "Parser",
    "Parents",
    "int_at_least",
    "float_in",
    "positive_float",
    "fraction",
    "thread_count",
    "torch_threads",
    "emit_json",
    "err",
    "note",
    "check_outputs",
    "download_progress",
    "load_data",
    "step_bar",
    "TrainProgress",
    "run_each",
]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

T = TypeVar("T")


class Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are a single line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ``[low, high]``, else a one-line error."""

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


def float_in(low: float | None = None, high: float | None = None, above: float | None = None) -> Callable[[str], float]:
    """An argparse type: a finite float ``>= low`` (or ``> above``) and ``<= high``, else a one-line error."""
    if above is not None:
        requirement = "a positive number" if above == 0 else f"a number > {above:g}"
        requirement += f" and <= {high:g}" if high is not None else ""
    elif low is not None:
        requirement = f"from {low:g} to {high:g}" if high is not None else f"a number >= {low:g}"
    else:
        requirement = f"a number <= {high:g}" if high is not None else "a number"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        ok = math.isfinite(value) and (low is None or value >= low) and (above is None or value > above) \
            and (high is None or value <= high)
        if not ok:
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
        return value

    return parse


positive_float = float_in(above=0)
fraction = float_in(0.0, 1.0)


@dataclass(frozen=True)
class Parents:
    """The option groups commands share (argparse parent parsers)."""

    common: Parser  # --debug, --quiet
    data: Parser  # --data-dir (MNIST)
    dataset: Parser  # --dataset, --data-dir (any IDX dataset)
    threads: Parser  # --threads
    placement: Parser  # --threads, --device
    device: Parser  # --threads, --device, --precision (training precisions)
    inference: Parser  # --threads, --device, --precision (inference precisions: int8 too)
    reading: Parser  # --verifier, --line-reader


@contextlib.contextmanager
def thread_count(threads: int | None) -> Iterator[None]:
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


def torch_threads() -> int:
    """The number of threads PyTorch computes with now."""
    import torch

    return torch.get_num_threads()


def emit_json(obj: Any) -> None:
    """Print one JSON object on its own line."""
    print(json.dumps(obj), flush=True)


def err(message: str) -> None:
    """Print a one-line error on stderr."""
    print(f"digitrec: error: {message}", file=sys.stderr, flush=True)


def note(message: str, json_mode: bool = False) -> None:
    """Print a line for the user: on stdout, or on stderr when stdout carries JSON."""
    print(message, file=sys.stderr if json_mode else sys.stdout, flush=True)


def check_outputs(*figures: str | Path | None, model: Path | None = None) -> None:
    """Check output files before long work: figure formats, writable, no two the same file."""
    from digitrec.fileio import check_writable

    checked: list[Path] = []
    for p, is_figure in [(model, False), *((f, True) for f in figures)]:
        if p is None:
            continue
        target = Path(p)
        if is_figure:
            from digitrec.plots import check_plot_path  # matplotlib: only when a figure is asked for

            check_plot_path(target)
        if any(target.resolve() == c.resolve() for c in checked):
            raise ConfigError(f"{target} is given for two outputs; use different file names")
        checked.append(check_writable(target))


def download_progress(quiet: bool) -> Callable[[str, int | None], Callable[[int], None]] | None:
    """A progress-bar factory for MNIST downloads (None when quiet)."""
    if quiet:
        return None
    from tqdm.auto import tqdm

    def factory(name: str, total: int | None) -> Callable[[int], None]:
        bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {name}", leave=False)

        def update(n: int) -> None:
            bar.update(n)
            if bar.total is not None and bar.n >= bar.total:
                bar.close()

        return update

    return factory


def load_data(args: argparse.Namespace, quiet: bool = False) -> Any:
    """The dataset that ``--dataset`` and ``--data-dir`` name, downloaded with a progress bar if missing.

    ``quiet`` hides the bar whatever ``--quiet`` says (the other ranks of a distributed run).
    """
    from digitrec.data.datasets import load_dataset

    return load_dataset(args.dataset, args.data_dir, progress=download_progress(args.quiet or quiet))


def step_bar(total: int, desc: str, unit: str, quiet: bool) -> Any:
    """A tqdm bar over ``total`` units (hidden when quiet or when stderr is not a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, disable=True if quiet else None, dynamic_ncols=True)


class TrainProgress:
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
            self.bar = self._tqdm(total=steps, desc=f"Epoch {epoch}/{epochs}", unit="step", leave=False,
                                  disable=None, dynamic_ncols=True)

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


def run_each(items: Iterable[tuple[str, T]], work: Callable[[str, T], None], json_mode: bool) -> int:
    """Run ``work(name, item)`` for each input; a :class:`DigitrecError` is one error line and the loop goes on.

    Returns the exit status: :data:`EXIT_ERROR` if any input failed, else 0. With ``--json`` a
    failed input also prints ``{"path": name, "error": message}`` so scripts see every input.
    """
    failures = 0
    for name, item in items:
        try:
            work(name, item)
        except DigitrecError as exc:
            failures += 1
            message = str(exc) if str(exc).startswith(name) else f"{name}: {exc}"
            err(message)
            if json_mode:
                emit_json({"path": name, "error": message})
    return EXIT_ERROR if failures else 0
