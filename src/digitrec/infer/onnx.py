"""ONNX Runtime inference without PyTorch: sessions over a model's graph, and the per-user cache of graphs.

A model file's ONNX graph (normalisation, model, temperature and softmax in one function, made
by :func:`digitrec.infer.backends.export_onnx`) is exported once and kept under the user cache
(``$DIGITREC_CACHE_DIR/onnx``), named by the SHA-256 of the model file's bytes and the precision
(its int8 graph, from :mod:`digitrec.infer.quantize`, lies beside the fp32 one). A later process
that finds it answers without importing PyTorch at all, which is most of a command's start-up.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from digitrec import __version__
from digitrec.cfg.base import BACKENDS, INFER_PRECISIONS
from digitrec.errors import ConfigError, ModelFileError
from digitrec.fileio import atomic_write, cache_dir

if TYPE_CHECKING:
    from digitrec.models.header import ModelFile

__all__ = ["ONNX_OPSET", "INT8_RECIPE", "onnxruntime_available", "resolve_backend", "graph_cache_path", "cached_graph",
           "required_graph", "store_graph", "OnnxRunner"]

ONNX_OPSET = 17
# Up to this many images per call run on one thread: for a handful of images, waking a
# second thread costs more than it saves, and on a busy machine it waits for a free core.
SMALL_BATCH = 8
# The int8 recipe's number, in the int8 graph's cache name: bump it whenever
# digitrec.infer.quantize changes how it quantizes, so no process answers with a graph of the old recipe.
INT8_RECIPE = 3
CHUNK = 100  # images per forward pass for large inputs (activations stay in cache)


def onnxruntime_available() -> bool:
    """Whether the optional ONNX Runtime package imports."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, device_type: str, precision: str) -> str:
    """``"torch"`` or ``"onnx"`` for a requested ``backend`` ("auto", "torch", "onnx") on that device and precision.

    int8 runs through ONNX Runtime alone (a statically quantized graph): it refuses the torch
    backend, a device other than the CPU and a missing ONNX Runtime, each in one line.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"invalid backend {backend!r} (use {', '.join(BACKENDS)})")
    if precision not in INFER_PRECISIONS:
        raise ConfigError(f"invalid precision {precision!r} (use {', '.join(INFER_PRECISIONS)})")
    if precision == "int8":
        if backend == "torch":
            raise ConfigError("int8 runs on the onnx backend only (use --backend onnx or auto)")
        if device_type != "cpu":
            raise ConfigError("int8 runs on the CPU only (use --device cpu)")
        if not onnxruntime_available():
            raise ConfigError("int8 inference needs ONNX Runtime: pip install 'digitrec[onnx]'")
        return "onnx"
    onnx_ok = device_type == "cpu" and precision == "fp32"
    if backend == "onnx":
        if not onnx_ok:
            raise ConfigError("the onnx backend runs on the CPU in fp32 only")
        if not onnxruntime_available():
            raise ConfigError("the onnx backend needs ONNX Runtime: pip install 'digitrec[onnx]'")
        return "onnx"
    if backend == "auto":
        return "onnx" if onnx_ok and onnxruntime_available() else "torch"
    return "torch"


@functools.lru_cache(maxsize=64)
def _digest(path: str, inode: int, mtime_ns: int, size: int) -> str:
    # Keyed by the file's inode, time and size as well: a file replaced or rewritten is hashed again.
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:32]


def graph_cache_path(model_path: str | os.PathLike[str], precision: str = "fp32") -> Path:
    """Where the ``precision`` ("fp32" or "int8") graph of the model file at ``model_path`` is cached.

    Named by the file's SHA-256; the int8 graph's name adds ``-int8`` and the recipe's number
    (:data:`INT8_RECIPE`), so both lie side by side.
    """
    if precision not in ("fp32", "int8"):
        raise ConfigError(f"no ONNX graph in precision {precision!r} (fp32 or int8)")
    stat = os.stat(model_path)
    digest = _digest(str(Path(model_path).resolve()), stat.st_ino, stat.st_mtime_ns, stat.st_size)
    suffix = "" if precision == "fp32" else f"-int8r{INT8_RECIPE}"
    return cache_dir("onnx", f"{digest}-digitrec{__version__}-opset{ONNX_OPSET}{suffix}.onnx")


def cached_graph(model_path: str | os.PathLike[str], precision: str = "fp32") -> Path | None:
    """The cached ``precision`` graph of ``model_path``, or None when there is none yet (or the file cannot be read)."""
    try:
        path = graph_cache_path(model_path, precision)
    except OSError:
        return None
    return path if path.is_file() else None


def required_graph(model_file: ModelFile, precision: str = "fp32") -> Path:
    """The cached graph of a model file read as a header only (no weights): it must exist."""
    graph = cached_graph(model_file.path, precision) if model_file.path is not None else None
    if graph is None:
        raise ModelFileError(f"{model_file.path}: no cached {precision} ONNX graph; load the model file in full")
    return graph


def store_graph(model_path: str | os.PathLike[str], graph: bytes, precision: str = "fp32") -> Path | None:
    """Cache ``graph`` for ``model_path`` (atomically); None when the cache cannot be written (read-only home)."""
    try:
        path = graph_cache_path(model_path, precision)
        with atomic_write(path) as fh:
            fh.write(graph)
    except OSError:
        return None  # a cache is an optimisation: without one, every process exports again
    return path


def _omp_threads() -> int:
    """The thread cap of OMP_NUM_THREADS (as a batch worker sets it), else 0: ONNX Runtime's default."""
    try:
        return max(int(os.environ.get("OMP_NUM_THREADS", "0")), 0)
    except ValueError:
        return 0


class OnnxRunner:
    """Runs a model's ONNX graph on the CPU: a digit model's probabilities, or a line reader's log-probabilities."""

    def __init__(self, graph: bytes | str | os.PathLike[str], batch_threads: int | None = None) -> None:
        # A path is read by ONNX Runtime itself; bytes are an in-memory export.
        self._graph = graph if isinstance(graph, bytes) else str(graph)
        # Threads for large batches; None: as many as PyTorch is allowed when it is loaded (a
        # caller or a server worker set them), else OMP_NUM_THREADS, else ONNX Runtime's default
        # (one per core).
        self._batch_threads = batch_threads
        self._sessions: dict[str, Any] = {}
        self._lock = threading.Lock()  # a server's threads may ask for the first session at once

    def _session(self, kind: str) -> Any:
        # Two sessions over one graph: one thread for a few images, more for batches. Sessions
        # are safe to call from several threads at once.
        with self._lock:
            if kind not in self._sessions:
                self._sessions[kind] = self._new_session(kind)
            return self._sessions[kind]

    def _new_session(self, kind: str) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if kind == "small":
            options.intra_op_num_threads = 1
        else:
            # As many threads as the caller allows (a server sets one per worker); spinning
            # threads would steal the cores other work (or a server's event loop) needs.
            threads = self._batch_threads
            if threads is None:
                torch = sys.modules.get("torch")  # not imported here: reading it must not load it
                threads = torch.get_num_threads() if torch is not None else _omp_threads()
            options.intra_op_num_threads = threads
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(self._graph, options, providers=["CPUExecutionProvider"])

    def run(self, x: np.ndarray) -> np.ndarray:
        """The graph's output for one float32 batch (its first input, its first output)."""
        session = self._session("small" if len(x) <= SMALL_BATCH else "batch")
        return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(N, C) float32 probabilities for images (N, 28, 28): uint8, or floats in [0, 1] (a digit model's graph)."""
        x = images.astype(np.float32) / np.float32(255.0) if images.dtype == np.uint8 \
            else np.ascontiguousarray(images, dtype=np.float32)
        if len(x) <= CHUNK:
            return self.run(x)
        return np.concatenate([self.run(x[i : i + CHUNK]) for i in range(0, len(x), CHUNK)])
