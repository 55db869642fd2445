"""The recogniser: a loaded model plus the shared preprocessing, answering typed predictions."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, overload

import numpy as np
import torch
from PIL import Image

from digitrec.cfg.base import MIN_CONFIDENCE
from digitrec.data.preprocess import IMAGE_SIZE, ImageSource, InkMap, NoDigitError, decode_gray, ink_map, to_mnist
from digitrec.errors import ConfigError, ImageError, ModelFileError
from digitrec.infer.backends import InferenceEngine
from digitrec.models.checkpoint import ModelFile, load_model, read_metadata
from digitrec.models.registry import LINE_HEIGHT, list_models
from digitrec.read.lineprep import READ_WHOLE, GreyLine, line_input, locate, tighten_box
from digitrec.read.linereader import LineReader, bundled_line_reader, choose_reading, digit_boxes, line_image
from digitrec.read.segment import DigitReading, NumberReading, line_ink, segment
from digitrec.read.verifier import bundled_verifier, whole_digit_scorer
from digitrec.runtime import resolve_device, resolve_precision

__all__ = ["DEFAULT_MIN_CONFIDENCE", "NO_NUMBER_BELOW", "Prediction", "Recogniser", "load", "grey_view"]

# A grey reading whose whole string is less likely than this is a guess: "no number found".
# Chosen on the development cheques: it drops 0.2% of right readings and turns 7% of wrong ones
# (and marks on empty paper) into "no number".
NO_NUMBER_BELOW = 0.1
# A small picture whose clear ink, read whole, spans at least this share of the line's height is
# read whole without looking for its band: a cheap first look before lineprep.READ_BAND_BELOW's
# test (the development cheques span 0.47-1, 90% over 0.59; small generated cards 0.36-0.47).
_BAND_LOOK_BELOW = 0.55
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (without the input image)."""
        return {
            "digit": self.digit,
            "confidence": self.confidence,
            "unsure": self.unsure,
            "top3": [{"digit": d, "probability": p} for d, p in self.top],
            "probabilities": list(self.probabilities),
        }


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
    """

    def __init__(
        self,
        model_file: ModelFile,
        device: torch.device,
        precision: str = "fp32",
        backend: str = "auto",
        min_confidence: float | None = None,
        verifier: ModelFile | None = None,
        line_reader: ModelFile | None = None,
    ) -> None:
        self.model_file = model_file
        self.device = device
        self.precision = precision
        self._engine = InferenceEngine(model_file, device, precision, backend)
        self.min_confidence = _check_min_confidence(
            DEFAULT_MIN_CONFIDENCE if min_confidence is None else min_confidence
        )
        # The piece verifier that helps read numbers (None: candidates scored by the classifier alone).
        self.verifier = verifier
        self._whole = whole_digit_scorer(verifier, device) if verifier is not None else None
        # The line reader, a second opinion on numbers that needs no cuts (None: segmentation alone).
        self.line_reader = line_reader
        self._lines = LineReader(line_reader, device) if line_reader is not None else None

    @property
    def backend(self) -> str:
        """The inference backend in use: ``"onnx"`` (ONNX Runtime) or ``"torch"``."""
        return self._engine.backend

    @property
    def name(self) -> str:
        """The model file's name without suffix (bundled models: their name)."""
        return self.model_file.path.stem if self.model_file.path else self.model_file.arch

    @property
    def metadata(self) -> dict[str, Any]:
        """Everything stored in the model file besides the weights."""
        return self.model_file.metadata

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
        return self._engine.probabilities(arr).numpy()

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
        top_p, top_i = probs.topk(3, dim=1)
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
        of the same width, faster per picture and with the same answers. With a reader of binarised ink, or none, the
        digits are cut apart and classified one by one (:mod:`digitrec.read.segment`). A picture
        without a number gives ``number`` None.
        """
        many = isinstance(image, (list, tuple))
        images = list(image) if many else [image]  # type: ignore[list-item]
        if self._lines is not None and self._lines.reads_grey:
            readings = self._read_grey(images)
        else:
            readings = [self._read_segments(i) for i in images]
        return readings if many else readings[0]

    def _read_segments(self, image: ImageSource) -> NumberReading:
        """:meth:`read` by cutting the digits apart (and the ink line reader's second opinion)."""
        cleaned = ink_map(image)
        pieces = segment(cleaned, lambda x: np.array([p.confidence for p in self.predict_arrays(x)]),
                         whole=self._whole)
        if not pieces:
            return NumberReading(number=None, confidence=0.0, digits=(), unsure=True)
        preds = self.predict_arrays(np.stack([p.input for p in pieces]))
        digits = tuple(
            DigitReading(digit=int(p.digit), confidence=p.confidence, box=piece.box, unsure=p.unsure)
            for p, piece in zip(preds, pieces)
            if p.digit is not None
        )
        if self._lines is not None:
            digits = self._second_opinion(cleaned, digits)
        return NumberReading(
            number="".join(str(d.digit) for d in digits),
            confidence=float(np.prod([d.confidence for d in digits])),
            digits=digits,
            unsure=any(d.unsure for d in digits),
        )

    def _read_grey(self, images: list[ImageSource]) -> list[NumberReading]:
        """:meth:`read` with the grey line reader: each picture's line, then all lines in batches."""
        assert self._lines is not None
        lines: list[tuple[np.ndarray, float, GreyLine] | None] = []  # grey pixels, decoding scale, the line
        for image in images:
            gray, scale, _ = decode_gray(image)
            view = grey_view(gray)
            lines.append(None if view is None else (gray, scale, view))
        found = iter(self._lines.read_grey([line[2] for line in lines if line is not None]))
        nothing = NumberReading(number=None, confidence=0.0, digits=(), unsure=True)
        readings = []
        for line in lines:
            digits_found, probability = next(found) if line is not None else ([], 0.0)
            if line is None or not digits_found or probability < NO_NUMBER_BELOW:
                readings.append(nothing)
                continue
            gray, scale, view = line
            margin = int(np.ceil(view.box[3] / LINE_HEIGHT))  # one line-image pixel, in input pixels
            digits = tuple(DigitReading(digit=d.digit, confidence=d.confidence,
                                        box=_scaled(tighten_box(gray, d.box, view.inverted, margin), scale),
                                        unsure=d.confidence < self.min_confidence) for d in digits_found)
            readings.append(NumberReading(number="".join(str(d.digit) for d in digits), confidence=probability,
                                          digits=digits,
                                          unsure=probability < self.min_confidence or any(d.unsure for d in digits)))
        return readings

    def _second_opinion(self, cleaned: InkMap, digits: tuple[DigitReading, ...]) -> tuple[DigitReading, ...]:
        """The line reader's digits if it reads the line clearly better than ``digits``, else ``digits``."""
        assert self._lines is not None
        line = line_ink(cleaned)
        if line is None:
            return digits
        view = line_image(line)
        log_probs = self._lines.log_probs(view)
        own = choose_reading(log_probs, "".join(str(d.digit) for d in digits))
        if own is None:
            return digits
        boxes = digit_boxes(line, view, [d.frame for d in own], cleaned.scale)
        return tuple(DigitReading(digit=d.digit, confidence=d.confidence, box=box,
                                  unsure=d.confidence < self.min_confidence) for d, box in zip(own, boxes))


def _scaled(box: tuple[int, int, int, int], scale: float) -> tuple[int, int, int, int]:
    """A box in decoded pixels -> input pixels (a large JPEG is decoded at reduced size)."""
    return box if scale == 1.0 else tuple(int(round(v * scale)) for v in box)  # type: ignore[return-value]


def grey_view(gray: np.ndarray) -> GreyLine | None:
    """The line the grey reader reads in a grey picture, prepared (:func:`lineprep.line_input`); None: none found.

    A small picture whose ink fills most of its height (a cut-out amount, a form field) is read
    whole. Otherwise the band of ink the cleaning pipeline finds is read, with a margin
    (:func:`lineprep.locate`): in a large picture always, in a small one when that band is under
    ``READ_BAND_BELOW`` of its height. The cleaning pipeline costs more than the reading, so a
    small picture is first looked at whole: where its clear ink already spans more than half the
    height (or there is none), the band is not looked for.
    """
    h, w = gray.shape
    whole = None
    if h <= READ_WHOLE:
        whole = line_input(gray)
        rows = np.flatnonzero((whole.image > 0.6).sum(axis=1) >= 2)  # rows with clear ink
        if rows.size == 0 or rows[-1] - rows[0] + 1 >= _BAND_LOOK_BELOW * LINE_HEIGHT:
            return whole
    crop = locate(gray, _ink_box(gray))
    if crop is None:
        return None
    return whole if whole is not None and crop == (0, 0, w, h) else line_input(gray, crop)


def _ink_box(gray: np.ndarray) -> tuple[int, int, int, int] | None:
    """The band of a line's ink in a large picture, input pixels (x, y, width, height), as cleaning finds it."""
    cleaned = ink_map(gray)
    line = line_ink(cleaned)
    if line is None:
        return None
    x0, y0, x1, y1 = (round(v * cleaned.scale) for v in line.box)
    return (x0, y0, x1 - x0, y1 - y0)


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
    """
    threshold = _check_min_confidence(DEFAULT_MIN_CONFIDENCE if min_confidence is None else min_confidence)
    dev = resolve_device(device)
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
    return Recogniser(load_model(name_or_path, dev), dev, resolve_precision(precision, dev), backend, threshold,
                      verifier_file, line_file)


def _reads_lines(name_or_path: str | os.PathLike[str]) -> bool:
    """True when ``name_or_path`` is a model file whose architecture reads lines (a line reader)."""
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
    try:
        return load_model(path, device, **expect)
    except ModelFileError as exc:
        raise ModelFileError(f"{what}: {exc}") from exc
