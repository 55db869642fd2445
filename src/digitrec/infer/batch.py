"""Batch reading on one machine: image files of folders and globs, read by a process pool, rows written as they come.

The pieces, each usable alone:

- :func:`discover` lists the files of folders (recursively, sorted, only image suffixes the
  project decodes), globs and plain paths, lazily: a million files are never held in a list.
- :func:`read_chunks` reads them in chunks of ``chunk_size`` files, in this process
  (``jobs=1``) or in a pool of ``jobs`` spawned processes, each with one compute thread and
  the model loaded once (from the cached ONNX graph: no PyTorch in the workers). At most
  ``2 * jobs`` chunks are in flight, so memory stays bounded; chunks come back in input order.
  A file that cannot be read gives a row with an ``error`` field and the run goes on.
- :class:`RowWriter` writes rows as JSON Lines or CSV: the file is created atomically, then
  each chunk is appended, flushed and fsynced. :func:`resume_output` reads such a file back
  after a killed run (a torn last line is cut off) and says which files are done.
- :func:`run_batch` ties them together: what ``digitrec predict/read --out`` runs.

Every row has the same keys for a task (see :func:`columns`): ``path``, the answer's fields
(None for a file that could not be read) and ``error`` (None for a file that was read).
"""

from __future__ import annotations

import collections
import contextlib
import csv
import glob
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from digitrec.errors import ConfigError, DigitrecError, first_line

__all__ = ["TASKS", "ModelSpec", "BatchSummary", "columns", "discover", "check_inputs", "RowMaker", "read_chunks",
           "RowWriter", "resume_output", "run_batch", "default_jobs"]

TASKS = ("digits", "numbers")  # one digit per image (predict), or a whole number per image (read)

_COLUMNS = {
    "digits": ("path", "digit", "confidence", "unsure", "top3", "probabilities", "error"),
    "numbers": ("path", "number", "confidence", "unsure", "digits", "error"),
}
_GLOB_CHARS = frozenset("*?[")


def columns(task: str) -> tuple[str, ...]:
    """The keys of every row for ``task`` ("digits" or "numbers"), in output order."""
    if task not in _COLUMNS:
        raise ConfigError(f"invalid task {task!r} (use {', '.join(TASKS)})")
    return _COLUMNS[task]


def default_jobs() -> int:
    """One worker per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# ---------------------------------------------------------------- discovery

def _image_suffixes() -> frozenset[str]:
    from digitrec.data.labelled import IMAGE_SUFFIXES  # Pillow's registry: imported only when files are listed

    return frozenset(IMAGE_SUFFIXES)


def _walk(folder: str, suffixes: frozenset[str]) -> Iterator[str]:
    # One folder listed at a time, sorted by name; symlinked folders are not followed (no cycles),
    # hidden names (.DS_Store, partial downloads, our own temporary files) are skipped.
    with os.scandir(folder) as it:
        entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(entry.path, suffixes)
        elif Path(entry.name).suffix.lower() in suffixes and entry.is_file():
            yield entry.path


def _expand(spec: str, suffixes: frozenset[str]) -> Iterator[str]:
    if os.path.isdir(spec):
        yield from _walk(spec, suffixes)
    elif not os.path.exists(spec) and _GLOB_CHARS & set(spec):
        for match in sorted(glob.iglob(spec, recursive=True)):
            if os.path.isdir(match):
                yield from _walk(match, suffixes)
            elif Path(match).suffix.lower() in suffixes:
                yield match
    else:
        yield spec  # a file named outright: read as given (a missing one becomes an error row)


def discover(inputs: Iterable[str | os.PathLike[str]]) -> Iterator[str]:
    """The image files named by ``inputs``, in order: each folder's images sorted (recursively), each
    glob's matches sorted, plain paths as given. Lazy: folders are listed as the files are reached."""
    suffixes = _image_suffixes()
    for spec in inputs:
        yield from _expand(os.fspath(spec), suffixes)


def check_inputs(inputs: Iterable[str | os.PathLike[str]]) -> None:
    """Raise :class:`ConfigError` for a folder without images or a glob that matches none."""
    suffixes = _image_suffixes()
    for spec in map(os.fspath, inputs):
        is_pattern = not os.path.exists(spec) and _GLOB_CHARS & set(spec)
        if (os.path.isdir(spec) or is_pattern) and next(_expand(spec, suffixes), None) is None:
            what = "folder" if os.path.isdir(spec) else "pattern"
            raise ConfigError(f"{spec}: no image files in this {what} ({', '.join(sorted(suffixes))})")


# ---------------------------------------------------------------- reading

@dataclass(frozen=True)
class ModelSpec:
    """What each worker loads (arguments of :func:`digitrec.load`) and which task it runs."""

    model: str = "seed"  # model file or bundled name
    task: str = "digits"  # "digits": one digit per image; "numbers": a whole number per image
    backend: str = "auto"  # inference backend (auto, torch, onnx)
    min_confidence: float | None = None  # unsure below this calibrated confidence (None: the default)
    verifier: str | None = "bundled"  # piece verifier for numbers (ignored for digits)
    line_reader: str | None = "bundled"  # line reader for numbers (ignored for digits)

    def load(self) -> Any:
        """The :class:`~digitrec.infer.recogniser.Recogniser` for this spec (on the CPU)."""
        from digitrec.infer.recogniser import load

        columns(self.task)  # a bad task fails here, before any file is read
        numbers = self.task == "numbers"
        return load(self.model, device="cpu", backend=self.backend, min_confidence=self.min_confidence,
                    verifier=self.verifier if numbers else None, line_reader=self.line_reader if numbers else None)


def _row(task: str, path: str, answer: Any = None, error: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(columns(task))
    row["path"] = path
    if answer is not None:
        row.update(answer.to_dict())
    row["error"] = error
    return row


class RowMaker:
    """Turns a chunk of files into rows with one loaded model (the same code in a pool worker and on Ray)."""

    def __init__(self, spec: ModelSpec, recogniser: Any = None) -> None:
        self.spec = spec
        self.rec = recogniser if recogniser is not None else spec.load()

    def _answer(self, sources: list[Any]) -> list[Any]:
        if self.spec.task == "digits":
            return self.rec.predict(sources)
        return self.rec.read(sources)

    def __call__(self, paths: Sequence[str], data: Sequence[bytes] | None = None) -> list[dict[str, Any]]:
        """One row per path, in order; ``data`` (the files' bytes, e.g. read by Ray) saves reading them here."""
        sources: list[Any] = list(data) if data is not None else list(paths)
        try:
            answers = self._answer(sources)  # one batch: the fast path
            return [_row(self.spec.task, p, a) for p, a in zip(paths, answers)]
        except DigitrecError:
            pass  # some file in the chunk is bad: read them one by one to tell which
        rows = []
        for path, source in zip(paths, sources):
            try:
                rows.append(_row(self.spec.task, path, self._answer([source])[0]))
            except DigitrecError as exc:
                message = str(exc) if str(exc).startswith(path) else f"{path}: {exc}"
                rows.append(_row(self.spec.task, path, error=message))
        return rows


_worker: RowMaker | None = None  # the model of a pool worker, loaded once by _init_worker


def _init_worker(spec: ModelSpec) -> None:
    global _worker
    # One compute thread per worker: N workers on N cores, not N x N threads fighting for them
    # (ONNX Runtime's sessions read OMP_NUM_THREADS too, when PyTorch is not loaded).
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"
    _worker = RowMaker(spec)
    import sys

    torch = sys.modules.get("torch")  # loaded only when the graph was not cached (or the torch backend)
    if torch is not None:
        torch.set_num_threads(1)


def _init_pool_worker(spec: ModelSpec) -> None:
    import signal

    # Ctrl-C reaches the whole process group: the parent stops the pool; a worker's traceback
    # would only bury the one-line "interrupted".
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _init_worker(spec)


def _work(paths: list[str]) -> list[dict[str, Any]]:
    assert _worker is not None, "pool worker not initialised"
    return _worker(paths)


def _chunked(paths: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for path in paths:
        chunk.append(path)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def read_chunks(paths: Iterable[str], spec: ModelSpec, *, jobs: int = 1, chunk_size: int = 64,
                recogniser: Any = None) -> Iterator[list[dict[str, Any]]]:
    """Rows for ``paths``, one list per chunk of ``chunk_size`` files, in input order.

    ``jobs=1`` reads in this process (with ``recogniser`` if given, else ``spec`` loaded here);
    more start that many spawned worker processes (not forked: a fork of a process with ONNX
    Runtime or PyTorch thread pools can hang), each loading ``spec`` once. At most ``2 * jobs``
    chunks are queued at any time. A worker that dies raises :class:`DigitrecError`.
    """
    if jobs < 1 or chunk_size < 1:
        raise ConfigError(f"jobs and chunk size must be >= 1, got {jobs} and {chunk_size}")
    chunks = _chunked(paths, chunk_size)
    if jobs == 1:
        maker = RowMaker(spec, recogniser)
        for chunk in chunks:
            yield maker(chunk)
        return
    import multiprocessing
    from concurrent.futures import Future, ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_init_pool_worker,
                               initargs=(spec,))
    pending: collections.deque[Future[list[dict[str, Any]]]] = collections.deque()
    try:
        for chunk in chunks:
            pending.append(pool.submit(_work, chunk))
            if len(pending) >= 2 * jobs:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BrokenProcessPool as exc:
        raise DigitrecError(f"a worker process died ({first_line(exc)}); the rows written so far are kept "
                            "(continue with --resume)") from None
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------- output

def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)  # repr of floats: the shortest text that reads back the same number


def _format_rows(rows: Sequence[dict[str, Any]], fmt: str, task: str) -> str:
    if fmt == "jsonl":
        return "".join(json.dumps(row) + "\n" for row in rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for row in rows:
        writer.writerow([_csv_cell(row[c]) for c in columns(task)])
    return buf.getvalue()


def _csv_header(task: str) -> str:
    return ",".join(columns(task)) + "\n"


def resume_output(path: str | os.PathLike[str], fmt: str, task: str) -> set[str]:
    """The paths already in an output file from an earlier (maybe killed) run of ``task``.

    A torn last line (the run was killed while writing it) is cut off the file, so that
    appending goes on from a whole row. A file that is not such an output raises :class:`ConfigError`.
    """
    target = Path(path)
    data = target.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with open(target, "r+b") as fh:  # cut off the torn row; everything before it is whole
            fh.truncate(end)
            fh.flush()
            os.fsync(fh.fileno())
        data = data[:end]
    text = data.decode("utf-8", errors="replace")
    done: set[str] = set()
    if fmt == "csv":
        lines = text.splitlines(keepends=True)
        if lines and lines[0] != _csv_header(task):
            raise ConfigError(f"{target}: not a CSV of this command's rows (header {lines[0].strip()!r}); "
                              "use another --out")
        for number, fields in enumerate(csv.reader(io.StringIO("".join(lines[1:]))), start=2):
            if len(fields) != len(columns(task)):
                raise ConfigError(f"{target}: line {number} is not a row of this output; use another --out")
            done.add(fields[0])
        return done
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            row = json.loads(line)
            done.add(row["path"])
        except (ValueError, TypeError, KeyError):
            raise ConfigError(f"{target}: line {number} is not a row of this output; use another --out") from None
    return done


class RowWriter:
    """Appends rows to an output file: created atomically on the first write, then append + flush + fsync per chunk."""

    def __init__(self, path: str | os.PathLike[str], fmt: str, task: str, *, append: bool = False) -> None:
        if fmt not in ("jsonl", "csv"):
            raise ConfigError(f"invalid format {fmt!r} (use jsonl, csv)")
        self.path = Path(path)
        self.fmt = fmt
        self.task = task
        self._append = append  # the file exists (a resumed run): never recreated
        self._fh: Any = None

    def _open(self) -> None:
        if not self._append or not self.path.exists():
            from digitrec.fileio import atomic_write

            with atomic_write(self.path, "w") as fh:  # whole or absent: the header never half-written
                if self.fmt == "csv":
                    fh.write(_csv_header(self.task))
        self._fh = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115  (open across writes; close())

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append ``rows`` and make them durable before returning."""
        if self._fh is None:
            self._open()
        self._fh.write(_format_rows(rows, self.fmt, self.task))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        """Close the file (rows are durable already)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class BatchSummary:
    """What a batch run did."""

    rows: int  # rows produced by this run
    errors: int  # of which files that could not be read (rows with an error)
    skipped: int  # files left out because an earlier run's output has them (--resume)


def run_batch(
    inputs: Sequence[str | os.PathLike[str]],
    spec: ModelSpec,
    *,
    out: str | os.PathLike[str] | None = None,
    fmt: str = "jsonl",
    resume: bool = False,
    jobs: int = 1,
    chunk_size: int = 64,
    chunks: Callable[[Iterator[str]], Iterator[list[dict[str, Any]]]] | None = None,
    on_rows: Callable[[list[dict[str, Any]]], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    recogniser: Any = None,
) -> BatchSummary:
    """Read every image file of ``inputs`` and write a row for each to ``out`` (and/or hand them to ``on_rows``).

    ``out`` must not exist unless ``resume`` is set: then its rows are kept and their files
    skipped, and the rest are appended, so an interrupted run continued with the same inputs
    ends with the same file as an uninterrupted one. ``chunks`` replaces the local reader
    (:func:`read_chunks`) with another engine (Ray: :func:`digitrec.ray.ray_chunks`).
    ``on_rows`` is called after each chunk is durable (progress bars, printing); ``on_start``
    once the engine is ready, with the number of rows ``out`` held already.
    """
    columns(spec.task)
    check_inputs(inputs)
    done: set[str] = set()
    if out is not None:
        target = Path(out)
        if target.is_dir():
            raise ConfigError(f"{target}: is a directory, not an output file")
        if target.exists() and not resume:
            raise ConfigError(f"{target}: already exists; continue it with --resume, or choose another --out")
        if target.exists():
            done = resume_output(target, fmt, spec.task)
        else:
            from digitrec.fileio import check_writable

            check_writable(target)
    skipped = 0

    def todo() -> Iterator[str]:
        nonlocal skipped
        for path in discover(inputs):
            if path in done:
                skipped += 1
            else:
                yield path

    source = chunks(todo()) if chunks is not None else \
        read_chunks(todo(), spec, jobs=jobs, chunk_size=chunk_size, recogniser=recogniser)
    if on_start is not None:
        on_start(len(done))
    rows = errors = 0
    writer = RowWriter(out, fmt, spec.task, append=resume) if out is not None else None
    with contextlib.ExitStack() as stack:
        if writer is not None:
            stack.enter_context(writer)
        stack.callback(getattr(source, "close", lambda: None))  # stops a pool at once on errors
        for chunk in source:
            if writer is not None:
                writer.write(chunk)
            rows += len(chunk)
            errors += sum(row["error"] is not None for row in chunk)
            if on_rows is not None:
                on_rows(chunk)
    if rows == 0 and skipped == 0:
        raise ConfigError("no image files given")
    return BatchSummary(rows=rows, errors=errors, skipped=skipped)
