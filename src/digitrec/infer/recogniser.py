"""The recogniser: a loaded model plus the shared preprocessing, answering typed predictions."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, overload

import numpy as np
from PIL import Image

from digitrec.cfg.base import MIN_CONFIDENCE
from digitrec.data.preprocess import IMAGE_SIZE, ImageSource, NoDigitError, Normalization, to_mnist
from digitrec.errors import ConfigError, DigitrecError, ImageError, ModelFileError
from digitrec.infer.onnx import OnnxRunner, cached_graph, required_graph, resolve_backend
from digitrec.models.catalog import BUILTIN
from digitrec.models.header import ModelFile, check_digit_classes, read_metadata, resolve_model_path
from digitrec.read.linereader import bundled_line_reader
from digitrec.read.readings import NumberReading

if TYPE_CHECKING:  # single digits through a cached ONNX graph never import PyTorch
    import torch

__all__ = ["DEFAULT_MIN_CONFIDENCE", "Prediction", "Recogniser", "load"]

_BUILTIN_TASKS = {a.name: a.task for a in BUILTIN}

# Calibrated confidence below which an answer is flagged unsure. Chosen on the validation
# split and on letters and scribbles (see docs/segmenter.md):
# it flags few real digits while flagging most non-digits.
DEFAULT_MIN_CONFIDENCE = MIN_CONFIDENCE  # the one default, kept in cfg/ for the CLI's help


@dataclass(frozen=True)
class Prediction:
    """The answer for one image.

    An image without ink is answered "no digit found": ``digit`` None, ``confidence`` 0.0,
    empty ``probabilities`` and ``top``, ``unsure`` True, and an all-black ``input``.
    """

    digit: int | None  # most probable class; None when the image has no ink (no digit found)
    confidence: float  # its calibrated probability, 0..1 (0.0 when no digit was found)
    probabilities: tuple[float, ...]  # all ten class probabilities, summing to 1 (empty: no digit)
    top: tuple[tuple[int, float], ...]  # the three most probable (digit, probability), best first
    input: np.ndarray = field(repr=False, compare=False)  # the (28, 28) [0, 1] image the model saw
    unsure: bool = False  # confidence below the recogniser's min_confidence (always True without a digit)

    def to_dict(self, *, with_input: bool = False) -> dict[str, Any]:
        """JSON-ready form, the one spelling of a prediction (CLI ``--json`` and the HTTP API).

        ``with_input`` adds the 28x28 image the model saw, as grey levels 0-255 (ink bright).
        """
        out: dict[str, Any] = {
            "digit": self.digit,
            "confidence": self.confidence,
            "unsure": self.unsure,
            "top3": [{"digit": d, "probability": p} for d, p in self.top],
            "probabilities": list(self.probabilities),
        }
        if with_input:
            out["input"] = np.rint(np.asarray(self.input) * 255).astype(np.uint8).tolist()
        return out


def _no_digit() -> Prediction:
    return Prediction(
        digit=None, confidence=0.0, probabilities=(), top=(),
        input=np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32), unsure=True,
    )


def _check_min_confidence(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"min_confidence must be a number from 0 to 1, got {value!r}")
    return float(value)


def _check_prepared(images: np.ndarray) -> np.ndarray:
    arr = np.asarray(images)
    if arr.ndim != 3 or arr.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ImageError(f"expected prepared images of shape (N, 28, 28), got {arr.shape}")
    if arr.dtype != np.uint8 and not (arr.dtype.kind == "f" and np.isfinite(arr).all()):
        raise ImageError(f"prepared images must be uint8 or finite floats (got {arr.dtype})")
    # Floats above 1 would be read as brighter than white, not as 0-255 grey levels.
    if arr.dtype.kind == "f" and arr.size and (arr.min() < 0 or arr.max() > 1):
        raise ImageError(f"prepared float images must lie in [0, 1] (got {arr.min():g}..{arr.max():g}); "
                         "pass uint8 for 0-255 grey levels")
    return arr


class Recogniser:
    """Recognises handwritten digits with one loaded model.

    >>> rec = digitrec.load("seed")
    >>> rec.predict("my_digit.png").digit

    ``device`` is the ``torch.device`` it computes on, or the string ``"cpu"`` when it answers
    from cached ONNX graphs without PyTorch (:func:`load` decides); ``str(rec.device)`` reads
    the same either way.
    """

    def __init__(
        self,
        model_file: ModelFile,
        device: torch.device | str,
        precision: str = "fp32",
        backend: str = "auto",
        min_confidence: float | None = None,
        verifier: ModelFile | None = None,
        line_reader: ModelFile | None = None,
        data_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.model_file = model_file
        self.device = device
        self.precision = precision
        self.min_confidence = _check_min_confidence(
            DEFAULT_MIN_CONFIDENCE if min_confidence is None else min_confidence
        )
        self._engine: Any
        if model_file.model is None:
            # Only the header was read: its graph is in the cache (see load()), and PyTorch stays unloaded.
            self._engine = OnnxRunner(required_graph(model_file, precision))
            self._backend = "onnx"
        else:
            from digitrec.infer.backends import InferenceEngine  # PyTorch

            self._engine = InferenceEngine(model_file, device, precision, backend, data_dir)  # type: ignore[arg-type]
            self._backend = self._engine.backend
        # The helper models that read numbers (None: the segmenter alone, scored by the classifier).
        self.verifier = verifier
        self.line_reader = line_reader
        self._reader: Any = None
        if verifier is not None or line_reader is not None:
            self._numbers()

    @property
    def backend(self) -> str:
        """The inference backend in use: ``"onnx"`` (ONNX Runtime) or ``"torch"``."""
        return self._backend

    @property
    def name(self) -> str:
        """The model file's name without suffix (bundled models: their name)."""
        return self.model_file.path.stem if self.model_file.path else self.model_file.arch

    @property
    def metadata(self) -> dict[str, Any]:
        """Everything stored in the model file besides the weights."""
        return self.model_file.metadata

    def onnx_graph(self) -> bytes:
        """The ONNX graph of this recogniser's digit model, as bytes (input (N, 28, 28) [0, 1], output probabilities).

        The same function the answers come from: normalisation, model, temperature and softmax
        (:func:`digitrec.infer.backends.export_onnx`), taken from the per-user graph cache or
        exported now. Raises :class:`~digitrec.errors.DigitrecError` when there is no such graph:
        the model runs in another precision (its fp32 graph would answer otherwise) or cannot be
        exported.
        """
        if self.precision != "fp32":
            raise DigitrecError(f"the model runs in {self.precision}; only fp32 models have a graph to share")
        if self.model_file.model is None:  # header only: answering from the cached graph
            return required_graph(self.model_file).read_bytes()
        from digitrec.infer.backends import onnx_graph  # PyTorch

        graph = onnx_graph(self.model_file)
        return graph if isinstance(graph, bytes) else graph.read_bytes()

    def prepare(self, image: ImageSource) -> np.ndarray:
        """The (28, 28) [0, 1] white-on-black image the model will see for ``image``.

        Raises :class:`~digitrec.data.preprocess.NoDigitError` when the image has no ink.
        """
        return to_mnist(image)

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 10) float32 for already-prepared images (N, 28, 28).

        The bulk path: one array in, one array out, no per-image Python objects, so large
        batches run faster than through :meth:`predict_arrays`. Images are uint8 or floats
        in [0, 1], white digit on black (as :meth:`prepare` makes them). Unlike the other
        methods it does not single out blank images: every row is the model's answer.
        """
        arr = _check_prepared(images)
        if len(arr) == 0:
            return np.zeros((0, len(self.model_file.class_names)), np.float32)
        return self._engine.probabilities(arr)

    def predict_arrays(self, images: np.ndarray) -> list[Prediction]:
        """Predict already-prepared images: float [0, 1] or uint8, shape (N, 28, 28).

        An all-black image is answered "no digit found" (``digit`` None).
        """
        arr = _check_prepared(images)
        if len(arr) == 0:
            return []
        has_ink = arr.reshape(len(arr), -1).max(axis=1) > 0
        if not has_ink.all():
            answers = iter(self.predict_arrays(arr[has_ink]) if has_ink.any() else [])
            return [next(answers) if ink else _no_digit() for ink in has_ink]
        probs = self._engine.probabilities(arr)
        top_i = np.argsort(-probs, axis=1, kind="stable")[:, :3]
        top_p = np.take_along_axis(probs, top_i, axis=1)
        # One bulk conversion to Python floats; per-row NumPy work dominated large batches.
        rows, tops_p, tops_i = probs.tolist(), top_p.tolist(), top_i.tolist()
        scale = 255.0 if arr.dtype == np.uint8 else 1.0
        return [
            Prediction(
                digit=ti[0],
                confidence=tp[0],
                probabilities=tuple(row),
                top=tuple(zip(ti, tp)),
                input=img.astype(np.float32) / scale,
                unsure=tp[0] < self.min_confidence,
            )
            for row, tp, ti, img in zip(rows, tops_p, tops_i, arr)
        ]

    @overload
    def predict(self, image: list[ImageSource] | tuple[ImageSource, ...]) -> list[Prediction]: ...

    @overload
    def predict(self, image: np.ndarray) -> Prediction | list[Prediction]: ...

    @overload
    def predict(self, image: str | os.PathLike | bytes | BinaryIO | Image.Image) -> Prediction: ...

    def predict(self, image: ImageSource | Sequence[ImageSource]) -> Prediction | list[Prediction]:
        """Predict one image, or a list (or (N, H, W) array) of images.

        An image may be a path, bytes, a file object, a PIL image or a NumPy array. A single
        image returns one :class:`Prediction`; a list, a tuple or an (N, H, W) array returns a
        list. (An (H, W, 3|4) array is one colour image.)
        """
        if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[-1] not in (1, 3, 4):
            if len(image) == 0:
                return []
            return self.predict_arrays(np.stack([_prepare_or_blank(a) for a in image]))
        if isinstance(image, (list, tuple)):
            if not image:
                return []
            return self.predict_arrays(np.stack([_prepare_or_blank(i) for i in image]))
        return self.predict_arrays(_prepare_or_blank(image)[None])[0]  # type: ignore[arg-type]

    @overload
    def read(self, image: list[ImageSource] | tuple[ImageSource, ...]) -> list[NumberReading]: ...

    @overload
    def read(self, image: ImageSource) -> NumberReading: ...

    def read(self, image: ImageSource | Sequence[ImageSource]) -> NumberReading | list[NumberReading]:
        """Read a line of handwritten digits (a whole number) in one picture, or in each of a list.

        With the bundled grey line reader (the default) the picture itself is read, without
        binarising or cutting it (:mod:`digitrec.read.lineprep`, :mod:`digitrec.read.linereader`): a
        small picture whole, a larger one in the band of ink found in it. ``confidence`` is
        then the reader's probability of the whole string. A list is read in batches of lines
        of the same width, faster per picture and with the same answers. With a reader of binarised
        ink, or none, the digits are cut apart and classified one by one (:mod:`digitrec.read.segment`).
        A picture without a number gives ``number`` None. A model whose classes are not the
        digits 0-9 (one trained on Fashion-MNIST, say) raises :class:`ModelFileError`.
        """
        check_digit_classes(self.model_file)
        many = isinstance(image, (list, tuple))
        readings = self._numbers().read(list(image) if many else [image])  # type: ignore[list-item]
        return readings if many else readings[0]

    def _numbers(self) -> Any:
        # The number reader (and PyTorch, which its helper models need) loads on the first read.
        if self._reader is None:
            from digitrec.read.reader import NumberReader

            self._reader = NumberReader(self.predict_arrays, self.min_confidence, self.device, self.verifier,
                                        self.line_reader, self._backend)
        return self._reader


def _prepare_or_blank(image: ImageSource) -> np.ndarray:
    """``to_mnist``, with an all-black frame for an image without ink (answered "no digit")."""
    try:
        return to_mnist(image)
    except NoDigitError:
        return np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)


def load(
    name_or_path: str | os.PathLike[str] = "seed",
    *,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    backend: str = "auto",
    min_confidence: float | None = None,
    verifier: str | os.PathLike[str] | None = "bundled",
    line_reader: str | os.PathLike[str] | None = "bundled",
    data_dir: str | os.PathLike[str] | None = None,
) -> Recogniser:
    """Load a bundled model by name (``"seed"``) or a model file by path into a :class:`Recogniser`.

    Inference defaults to the CPU in fp32, the fastest choice for one image at a time;
    pass ``device="auto"`` to use CUDA when available. ``backend`` is ``"auto"`` (ONNX Runtime
    when installed and on the CPU in fp32, else PyTorch), ``"torch"`` or ``"onnx"``. Answers
    whose calibrated confidence is below ``min_confidence`` (default
    :data:`DEFAULT_MIN_CONFIDENCE`) are flagged unsure. ``line_reader`` is what
    :meth:`Recogniser.read` reads numbers with: ``"bundled"`` (the grey line reader shipped
    with digitrec, which reads the picture itself), a file from ``digitrec train-line-reader``,
    or None / ``"none"`` to cut the digits apart and classify them one by one instead (see
    :mod:`digitrec.read.segment`; an ink line reader file gives that segmenter a second opinion).
    ``verifier`` is the piece verifier that segmenter uses to find whole digits, the same way
    (``"bundled"`` is not loaded with a grey reader, which has no use for it; see
    :mod:`digitrec.read.verifier`).

    ``precision`` is ``"fp32"``, ``"bf16"`` (PyTorch autocast), ``"auto"`` (bf16 where the hardware
    runs it natively) or ``"int8"``: the digit model's ONNX graph statically quantized by ONNX
    Runtime (:mod:`digitrec.infer.quantize`; CPU and ONNX Runtime only), calibrated once per
    model file on MNIST validation images read from ``data_dir`` (default: ``$DIGITREC_DATA_DIR``,
    then the user cache, downloading if missing) and cached. Helper models stay fp32.

    On the CPU in fp32 or int8 with ONNX Runtime, each model's ONNX graph is exported on first use and
    cached per user (:mod:`digitrec.infer.onnx`); when every model asked for has a cached graph
    and a built-in architecture, only the files' headers are read and PyTorch is not imported.
    """
    threshold = _check_min_confidence(DEFAULT_MIN_CONFIDENCE if min_confidence is None else min_confidence)
    quick = _headers_only(name_or_path, device, precision, backend, verifier, line_reader)
    if quick is not None:
        return Recogniser(quick[0], "cpu", "int8" if precision == "int8" else "fp32", "onnx", threshold, None,
                          quick[1])
    from digitrec.models.checkpoint import load_model  # the full path: PyTorch from here on
    from digitrec.models.registry import get_model_spec
    from digitrec.read.verifier import bundled_verifier
    from digitrec.runtime import resolve_device, resolve_precision

    dev = resolve_device(device)
    resolve_backend(backend, dev.type, precision)  # int8 on a GPU or without ONNX Runtime: one line, before loading
    if _reads_lines(name_or_path):  # a line reader file (e.g. from `digitrec finetune`) given as the model
        if line_reader in (None, "none"):
            raise ModelFileError(f"{name_or_path}: a line reader, which reads whole numbers: use it with "
                                 "'digitrec read --model' (or Recogniser.read), not to classify single digits")
        line_reader, name_or_path = name_or_path, "seed"  # single digits: the bundled digit model
    line_file = _helper_model(line_reader, bundled_line_reader, "line reader", "train-line-reader", dev,
                              num_classes=11, task="lines")
    # A grey reader reads numbers alone: the segmenter's verifier is loaded only when asked for by name.
    reads_grey = line_file is not None and line_file.metadata.get("input") == "paper"
    verifier_file = None if reads_grey and verifier == "bundled" else \
        _helper_model(verifier, bundled_verifier, "piece verifier", "train-verifier", dev, num_classes=2)
    digits = load_model(name_or_path, dev)
    if precision == "int8" and get_model_spec(digits.arch).task != "digits":
        raise ConfigError(f"int8 is for digit models; {digits.arch!r} is not one (use fp32)")
    compute = "int8" if precision == "int8" else resolve_precision(precision, dev)
    return Recogniser(digits, dev, compute, backend, threshold, verifier_file, line_file, data_dir)


def _header_file(name_or_path: str | os.PathLike[str], task: str, precision: str = "fp32") -> ModelFile | None:
    """A model file's header as a :class:`ModelFile` without weights, if its ``precision`` graph is cached; else None.

    Only for built-in architectures of ``task``: the graph cache is keyed by the file's bytes,
    so the file was loaded and checked in full when its graph was exported.
    """
    try:
        path = resolve_model_path(name_or_path)
        meta = read_metadata(path)
    except ModelFileError:
        return None  # the full load says what is wrong
    if _BUILTIN_TASKS.get(meta.get("arch")) != task or cached_graph(path, precision) is None:
        return None
    class_names = meta.get("class_names", [str(i) for i in range(10)])
    return ModelFile(model=None, arch=meta["arch"], model_config=dict(meta.get("model_config") or {}),
                     normalization=Normalization(**meta["normalization"]), class_names=list(class_names),
                     metadata=meta, path=path)


def _headers_only(name_or_path: str | os.PathLike[str], device: object, precision: str, backend: str,
                  verifier: object, line_reader: object) -> tuple[ModelFile, ModelFile | None] | None:
    """(digit model, grey line reader or None) from headers and cached graphs alone, or None: load in full.

    That covers single digits (no helper model) and numbers read by a grey line reader (which
    needs no verifier), on the CPU in fp32 through ONNX Runtime, with built-in architectures
    whose graphs an earlier process exported. PyTorch is then never imported.
    """
    if device != "cpu" or resolve_backend(backend, "cpu", precision) != "onnx" \
            or verifier not in (None, "none", "bundled"):
        return None
    if line_reader not in (None, "none"):
        model_lines = _header_file(name_or_path, "lines")  # a line reader given as the model
        if model_lines is not None:
            line_reader, name_or_path = name_or_path, "seed"
    lines = None
    if line_reader not in (None, "none"):
        path = bundled_line_reader() if line_reader == "bundled" else line_reader
        lines = _header_file(path, "lines") if path is not None else None
        if lines is None or lines.metadata.get("input") != "paper":
            return None  # an ink reader works with the segmenter and its verifier: the full path
    elif verifier == "bundled":
        return None  # the segmenter would use the bundled verifier
    digits = _header_file(name_or_path, "digits", "int8" if precision == "int8" else "fp32")
    return None if digits is None else (digits, lines)


def _reads_lines(name_or_path: str | os.PathLike[str]) -> bool:
    """True when ``name_or_path`` is a model file whose architecture reads lines (a line reader)."""
    from digitrec.models.registry import list_models

    if not Path(name_or_path).is_file():
        return False  # a bundled name (digit models), or a missing file load_model will report
    arch = read_metadata(name_or_path).get("arch")
    return arch in list_models("lines")


def _helper_model(choice: str | os.PathLike[str] | None, bundled: Callable[[], Path | None], what: str,
                  command: str, device: torch.device, **expect: Any) -> ModelFile | None:
    """The piece verifier or line reader ``choice`` names ("bundled", "none", None or a file), loaded."""
    path = bundled() if choice == "bundled" else None if choice == "none" else choice
    if path is None:
        return None
    # A helper model is a file, never a bundled model name (those are digit models).
    if not Path(path).is_file():
        raise ModelFileError(f"{what}: {path}: no such {what} file (use 'bundled', 'none' "
                             f"or a file from 'digitrec {command}')")
    from digitrec.models.checkpoint import load_model

    try:
        return load_model(path, device, **expect)
    except ModelFileError as exc:
        raise ModelFileError(f"{what}: {exc}") from exc
