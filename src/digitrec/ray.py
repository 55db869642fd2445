"""Batch reading on Ray Data: image files (local, or any URI Ray reads) to a Ray Dataset of digitrec's rows.

>>> import ray, digitrec.ray
>>> ray.init()
>>> ds = digitrec.ray.read_images("scans/", model="seed", task="numbers")
>>> ds.write_json("readings/")

Each Ray actor loads the model once (:class:`digitrec.infer.batch.RowMaker`, the same code as
the local process pool) with one compute thread, and maps batches of files to rows with the
columns of :func:`digitrec.infer.batch.columns`: the same rows, value for value, as
``digitrec predict/read --out``. Needs the optional extra: ``pip install 'digitrec[ray]'``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from digitrec.errors import ConfigError, DigitrecError, first_line
from digitrec.infer.batch import ModelSpec, RowMaker, columns, discover

__all__ = ["read_images", "ray_chunks", "connect"]


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError("the ray engine needs Ray Data: pip install 'digitrec[ray]'") from None
    return ray


def _schema(task: str) -> Any:
    import pyarrow as pa

    columns(task)
    if task == "digits":
        answer = [("digit", pa.int64()), ("confidence", pa.float64()), ("unsure", pa.bool_()),
                  ("top3", pa.list_(pa.struct([("digit", pa.int64()), ("probability", pa.float64())]))),
                  ("probabilities", pa.list_(pa.float64()))]
    else:
        digit = pa.struct([("digit", pa.int64()), ("confidence", pa.float64()), ("box", pa.list_(pa.int64())),
                           ("unsure", pa.bool_())])
        answer = [("number", pa.string()), ("confidence", pa.float64()), ("unsure", pa.bool_()),
                  ("digits", pa.list_(digit))]
    return pa.schema([("path", pa.string()), *answer, ("error", pa.string())])


class _Predictor:
    """A Ray actor's model: loaded once, then one batch of files after another to a table of rows."""

    def __init__(self, spec: ModelSpec) -> None:
        from digitrec.infer import batch

        batch._init_worker(spec)  # one compute thread, the model from the cached graph: as a pool worker
        self.maker: RowMaker = batch._worker  # type: ignore[assignment]
        self.schema = _schema(spec.task)

    def __call__(self, batch: dict[str, Any]) -> Any:
        import pyarrow as pa

        paths = [str(p) for p in batch["path"]]
        data = [bytes(b) for b in batch["bytes"]] if "bytes" in batch else None
        return pa.Table.from_pylist(self.maker(paths, data), schema=self.schema)


def read_images(
    paths_or_uri: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    model: str = "seed",
    task: str = "digits",
    *,
    concurrency: int | None = None,
    batch_size: int = 64,
    backend: str = "auto",
    min_confidence: float | None = None,
    verifier: str | None = "bundled",
    line_reader: str | None = "bundled",
) -> Any:
    """A Ray Dataset with one row per image file: ``path``, the answer's fields and ``error``.

    ``paths_or_uri`` is a local folder, glob or file, or a list of them (found as
    :func:`digitrec.infer.batch.discover` finds them, on this machine; on a cluster the paths
    must be readable on every node, e.g. a shared file system), or a URI Ray reads itself
    (``s3://bucket/scans/``). ``task`` is ``"digits"`` (one digit per image, as ``digitrec
    predict``) or ``"numbers"`` (a whole number, as ``digitrec read``). ``concurrency`` is the
    number of actors (default: the cluster's CPUs). Ray must be initialised (``ray.init``) or
    it starts a local instance, as Ray Data does.
    """
    ray = _ray()
    spec = ModelSpec(model=str(model), task=task, backend=backend, min_confidence=min_confidence,
                     verifier=verifier, line_reader=line_reader)
    columns(task)
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    if isinstance(paths_or_uri, str) and "://" in paths_or_uri:
        from digitrec.infer.batch import _image_suffixes

        ds = ray.data.read_binary_files(paths_or_uri, include_paths=True,
                                        file_extensions=sorted(s.lstrip(".") for s in _image_suffixes()))
    else:
        specs = [paths_or_uri] if isinstance(paths_or_uri, (str, os.PathLike)) else list(paths_or_uri)
        paths = list(discover(specs))
        if not paths:
            raise ConfigError("no image files given")
        ds = ray.data.from_items([{"path": p} for p in paths])
    return _predicted(ray, ds, spec, concurrency, batch_size)


def _predicted(ray: Any, ds: Any, spec: ModelSpec, concurrency: int | None, batch_size: int) -> Any:
    # One actor per CPU by default, each taking one CPU: the pool's one-thread-per-worker on Ray.
    if concurrency is None:
        concurrency = max(1, int(ray.cluster_resources().get("CPU", 1)))
    return ds.map_batches(_Predictor, fn_constructor_args=(spec,), batch_size=batch_size, batch_format="numpy",
                          compute=ray.data.ActorPoolStrategy(size=concurrency), num_cpus=1)


def connect(address: str | None, num_cpus: int | None = None) -> bool:
    """Join the Ray cluster at ``address`` ("auto" or HOST:PORT), or start a local Ray (None).

    Returns whether Ray was started here (the caller shuts it down). Any failure is one
    :class:`DigitrecError` line. The local instance has no dashboard (see docs/batch.md for
    what Ray's services listen on). Ray's own log lines are kept to errors: set
    ``RAY_BACKEND_LOG_LEVEL`` to see more.
    """
    ray = _ray()
    import logging

    if ray.is_initialized():
        return False
    if address not in (None, "auto"):
        _probe(address)
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # read by Ray's C++ core when it starts
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        ray.init(address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
                 logging_level=logging.ERROR, log_to_driver=False, configure_logging=True)
    except Exception as exc:  # ConnectionError, ValueError, RuntimeError...: all mean "no cluster"
        where = f"at {address}" if address else "locally"
        raise DigitrecError(f"cannot start or reach Ray {where}: {first_line(exc)}") from None
    return True


def _probe(address: str) -> None:
    # Ray retries an unreachable head for minutes; a refused or silent port is better told at once.
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"invalid Ray address {address!r} (use auto or HOST:PORT)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise DigitrecError(f"cannot reach Ray at {address}: {exc.strerror or first_line(exc)} "
                            "(is 'ray start --head' running there?)") from None


def ray_chunks(paths: Iterable[str], spec: ModelSpec, *, address: str | None = None, jobs: int | None = None,
               chunk_size: int = 64) -> Iterator[list[dict[str, Any]]]:
    """Rows for ``paths`` read on Ray, one list per ``chunk_size`` files, in input order (as
    :func:`digitrec.infer.batch.read_chunks`). Ray is joined (or started) before this returns,
    so a bad address fails before anything is written."""
    ray = _ray()
    started = connect(address, jobs)
    try:
        from ray.data import DataContext

        context = DataContext.get_current()
        context.execution_options.preserve_order = True  # rows in input order: --resume relies on it
        context.enable_progress_bars = False  # the CLI draws its own
        todo = list(paths)
    except BaseException:
        if started:
            ray.shutdown()
        raise
    return _stream(ray, todo, spec, jobs, chunk_size, started)


def _stream(ray: Any, paths: list[str], spec: ModelSpec, jobs: int | None, chunk_size: int,
            started: bool) -> Iterator[list[dict[str, Any]]]:
    try:
        if not paths:
            return
        ds = _predicted(ray, ray.data.from_items([{"path": p} for p in paths]), spec, jobs, chunk_size)
        try:
            for table in ds.iter_batches(batch_size=chunk_size, batch_format="pyarrow"):
                yield table.to_pylist()
        except DigitrecError:
            raise
        except Exception as exc:  # an actor that died, a node lost: one line, the rows so far are kept
            raise DigitrecError(f"the Ray run failed: {first_line(exc)}") from None
    finally:
        if started:
            ray.shutdown()
