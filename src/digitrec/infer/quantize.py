"""int8 inference: a digit model's ONNX graph statically quantized, calibrated on MNIST validation images.

ONNX Runtime's static quantization (QOperator format: QLinearConv, QGemm and uint8 pooling,
weights int8 per output channel, activations uint8 per tensor) turns the fp32 graph of
:func:`digitrec.infer.backends.onnx_graph` into an int8 one. The activation ranges come from
:data:`CALIBRATION_IMAGES` images of the model's own validation split (the training images it
held out; never the test set), so the int8 graph depends on the model file and on MNIST alone.
The normalisation in front and the temperature and softmax behind stay in float: answers keep
their full-precision probabilities. The graph is cached beside the fp32 one
(:func:`digitrec.infer.onnx.graph_cache_path` with ``"int8"``), so a later process loads it
without PyTorch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from digitrec.errors import ConfigError, DigitrecError, first_line
from digitrec.fileio import atomic_write
from digitrec.infer.onnx import cached_graph, onnxruntime_available, store_graph
from digitrec.models.header import ModelFile

__all__ = ["CALIBRATION_IMAGES", "QUANTIZED_OPS", "calibration_images", "quantize_graph", "int8_graph",
           "export_int8"]

CALIBRATION_IMAGES = 1000  # validation images the activation ranges are measured on
CALIBRATION_BATCH = 100  # images per calibration pass
# Operators computed in int8: everything between the normalisation and the temperature, so
# activations stay uint8 from the first convolution to the last dense layer. The normalisation
# in front (its input is the caller's float image) and the temperature and softmax behind stay
# float, so the probabilities are not rounded to 1/256 steps. Quantized as they come, a ReLU that
# follows a MaxPool (the seed CNN's conv, maxpool, ReLU) broke the QOperator graph: 89.3% against
# 98.9% on 3,000 validation images. _relu_before_pool reorders those pairs first (the same
# function), after which the whole seed and vgg graphs ran in int8 at the fp32 accuracy and
# 1.0-1.4x faster than with float pooling and ReLU between int8 convolutions (validation images).
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul", "MaxPool", "Relu", "Flatten")
# A change to QUANTIZED_OPS or to the rewrite is a new recipe: bump digitrec.infer.onnx.INT8_RECIPE.
# What the validation split of a file without a recorded recipe is (the training defaults).
_DEFAULT_VAL_SIZE, _DEFAULT_SEED = 5000, 0

ProgressFactory = Callable[[str, "int | None"], Callable[[int], None]]


def _check_supported(model_file: ModelFile) -> None:
    from digitrec.models.registry import get_model_spec

    if get_model_spec(model_file.arch).task != "digits":
        raise ConfigError(f"int8 is for digit models; {model_file.arch!r} is a line reader (use fp32)")
    if not onnxruntime_available():
        raise ConfigError("int8 inference needs ONNX Runtime: pip install 'digitrec[onnx]'")


def calibration_images(model_file: ModelFile, data_dir: str | os.PathLike[str] | None = None, *,
                       count: int = CALIBRATION_IMAGES, progress: ProgressFactory | None = None) -> np.ndarray:
    """``count`` uint8 images (N, 28, 28) of the validation split ``model_file`` was trained with.

    The split is the one training held out (its recorded ``val_size`` and ``seed``; the training
    defaults, 5,000 images with seed 0, for a file without a recipe or trained on all images).
    The test set is never read for calibration.
    """
    from digitrec.data.mnist import load_mnist, split_train_val

    recipe = model_file.metadata.get("train_config") or {}
    val_size = int(recipe.get("val_size") or _DEFAULT_VAL_SIZE)
    seed = int(recipe.get("seed", _DEFAULT_SEED)) if recipe.get("val_size") else _DEFAULT_SEED
    mnist = load_mnist(data_dir, progress=progress)
    _, _, val_x, _ = split_train_val(mnist.train_images, mnist.train_labels, val_size, seed)
    return val_x[:count]


class _Reader:
    """Feeds calibration images to ONNX Runtime's calibrator, a batch at a time (its CalibrationDataReader)."""

    def __init__(self, input_name: str, images: np.ndarray) -> None:
        x = images.astype(np.float32) / np.float32(255.0) if images.dtype == np.uint8 \
            else np.asarray(images, dtype=np.float32)
        self._batches = iter([{input_name: x[i : i + CALIBRATION_BATCH]} for i in range(0, len(x), CALIBRATION_BATCH)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:  # pragma: no cover - asked for by some calibrators, not by MinMax
        raise NotImplementedError


class _DropAdvice(logging.Filter):
    """Drops the quantizer's "consider pre-processing" advice, which it logs on the root logger every run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


@contextlib.contextmanager
def _quiet_quantizer() -> Any:
    root, advice = logging.getLogger(), _DropAdvice()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)


def _relu_before_pool(proto: Any) -> Any:
    """``proto`` with every MaxPool -> Relu pair (the pool's output used by the ReLU alone) turned into Relu -> MaxPool.

    The same function: ReLU is monotonic and elementwise, so it commutes with a max. In this order
    the quantizer folds each ReLU into the convolution before it and pools in uint8.
    """
    nodes = list(proto.graph.node)
    users: dict[str, int] = {}
    for node in nodes:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    made_by = {out: node for node in nodes for out in node.output}
    for relu in nodes:
        pool = made_by.get(relu.input[0]) if relu.op_type == "Relu" else None
        if pool is None or pool.op_type != "MaxPool" or len(pool.output) != 1 or users[pool.output[0]] != 1:
            continue
        x, between, y = pool.input[0], pool.output[0], relu.output[0]
        relu.input[0], relu.output[0] = x, between
        pool.input[0], pool.output[0] = between, y
        i, j = nodes.index(pool), nodes.index(relu)
        nodes[i], nodes[j] = nodes[j], nodes[i]  # keep the node list in topological order
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return proto


def quantize_graph(graph: bytes | str | os.PathLike[str], images: np.ndarray) -> bytes:
    """The int8 graph (bytes) of an fp32 ONNX graph (bytes or a path), calibrated on ``images`` (N, 28, 28).

    ``images`` are uint8 or floats in [0, 1], as the graph's input takes them once divided by 255.
    """
    if len(images) == 0:
        raise ConfigError("int8 calibration needs at least one image")
    try:
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
    except ImportError as exc:
        raise ConfigError(f"int8 quantization needs ONNX and ONNX Runtime: pip install 'digitrec[onnx]' "
                          f"(missing module {exc.name})") from None

    class Reader(_Reader, CalibrationDataReader):  # the calibrator checks for its base class
        pass

    proto = onnx.load_from_string(graph) if isinstance(graph, bytes) else onnx.load(str(graph))
    input_name = proto.graph.input[0].name
    try:
        with tempfile.TemporaryDirectory(prefix="digitrec-int8-") as tmp, _quiet_quantizer():
            src, out = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            onnx.save(_relu_before_pool(proto), str(src))
            quantize_static(
                str(src), str(out), Reader(input_name, images),
                quant_format=QuantFormat.QOperator,
                per_channel=True,
                # u8 activations x s8 weights: the pairing x86 int8 kernels (VNNI) run fastest.
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=list(QUANTIZED_OPS),
                calibrate_method=CalibrationMethod.MinMax,
            )
            return out.read_bytes()
    except DigitrecError:
        raise
    except Exception as exc:  # ONNX Runtime's quantizer raises many types; all mean "cannot quantize"
        raise DigitrecError(f"cannot quantize the graph to int8: {first_line(exc)}") from exc


def _fresh_int8(model_file: ModelFile, data_dir: str | os.PathLike[str] | None,
                progress: ProgressFactory | None) -> bytes:
    from digitrec.infer.backends import onnx_graph  # PyTorch: the fp32 graph is exported from the model

    _check_supported(model_file)
    if model_file.model is None:
        raise ConfigError(f"{model_file.path}: only the header was read; load the model file in full to quantize it")
    images = calibration_images(model_file, data_dir, progress=progress)
    try:
        return quantize_graph(onnx_graph(model_file), images)
    except DigitrecError as exc:
        raise DigitrecError(f"{model_file.arch!r}: {exc}") from exc


def int8_graph(model_file: ModelFile, data_dir: str | os.PathLike[str] | None = None, *,
               progress: ProgressFactory | None = None) -> bytes | Path:
    """The int8 graph of ``model_file``: the cached one, else quantized now (and cached for the next process).

    Quantizing reads MNIST (``data_dir``, else ``$DIGITREC_DATA_DIR`` or the user cache; downloaded
    if missing) for the calibration images.
    """
    _check_supported(model_file)
    if model_file.path is not None:
        cached = cached_graph(model_file.path, "int8")
        if cached is not None:
            return cached
    graph = _fresh_int8(model_file, data_dir, progress)
    if model_file.path is not None:
        store_graph(model_file.path, graph, "int8")
    return graph


def export_int8(model_file: ModelFile, path: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None,
                *, progress: ProgressFactory | None = None) -> None:
    """Write ``model_file``'s int8 graph to ``path`` (atomically): the same inputs and outputs as
    :func:`digitrec.infer.backends.export_onnx`, convolutions and dense layers in int8."""
    graph: Any = int8_graph(model_file, data_dir, progress=progress)
    blob = Path(graph).read_bytes() if isinstance(graph, Path) else graph
    with atomic_write(path) as fh:
        fh.write(blob)
