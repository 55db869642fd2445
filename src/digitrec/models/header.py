"""The model file's header, read without PyTorch: the JSON record of a safetensors file, and where bundled files are.

A safetensors file is an 8-byte little-endian header length, a JSON header (tensor offsets and
a ``__metadata__`` map of strings), then the raw tensor bytes. digitrec keeps one JSON record
under a key of that map. Model files and training checkpoints both use this; ``digitrec
models`` and the CLI's checks read only the header, never the weights.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from digitrec.errors import ModelFileError

if TYPE_CHECKING:
    from torch import nn

    from digitrec.data.preprocess import Normalization

__all__ = [
    "FORMAT",
    "ModelFile",
    "FORMAT_VERSION",
    "MODEL_KEY",
    "MAX_MODEL_BYTES",
    "MAX_BLANK_PENALTY",
    "split_header",
    "join_header",
    "header_record",
    "check_model_record",
    "read_metadata",
    "parameter_count",
    "bundled_models",
    "resolve_model_path",
    "packaged_file",
    "bundled",
    "BUNDLED_ROLES",
    "DIGIT_CLASSES",
    "check_digit_classes",
]

FORMAT = "digitrec-model"
FORMAT_VERSION = 1
MODEL_KEY = "digitrec"  # the model file's record under the header's __metadata__
MAX_MODEL_BYTES = 512 * 1024 * 1024  # refuse absurd files before reading them into memory
MAX_BLANK_PENALTY = 20.0  # nats; far above any fitted value (a line reader's penalties are searched up to 5)
DIGIT_CLASSES = tuple(str(d) for d in range(10))  # the classes of a model that reads digits


@dataclass
class ModelFile:
    """A loaded model file: the rebuilt module (in eval mode) and its metadata."""

    model: nn.Module | None  # the rebuilt module, eval mode (None: only the header was read)
    arch: str  # registry name
    model_config: dict[str, Any]  # arguments of the architecture's config class
    normalization: Normalization  # applied to [0, 1] pixels before the model
    class_names: list[str]  # label of each output index
    metadata: dict[str, Any] = field(default_factory=dict)  # everything else stored in the file
    path: Path | None = None  # where it was loaded from

    @property
    def temperature(self) -> float:
        """Softmax temperature for calibrated confidences (1.0 = uncalibrated)."""
        return float(self.metadata.get("temperature", 1.0))

    @property
    def blank_penalty(self) -> float:
        """Nats taken off a line reader's blank before best-path decoding (0.0 = plain best path)."""
        return float(self.metadata.get("blank_penalty", 0.0))


def check_digit_classes(model_file: ModelFile) -> None:
    """Raise :class:`ModelFileError` unless the model's classes are the digits 0-9 (reading numbers needs them).

    A model trained on another dataset (e.g. Fashion-MNIST) classifies images, but its answers
    are not digits, so nothing may be read as a number with it.
    """
    if tuple(model_file.class_names) != DIGIT_CLASSES:
        dataset = (model_file.metadata.get("dataset") or {}).get("name") or "another dataset"
        shown = ", ".join(model_file.class_names[:3])
        raise ModelFileError(f"{model_file.path}: a model of {dataset} ({shown}, ...), not of the digits 0-9; "
                             "it cannot read digits or numbers")


def split_header(blob: bytes, what: str) -> tuple[dict[str, Any], bytes]:
    """(the JSON header, the tensor bytes after it) of a safetensors ``blob``; ``what`` names it in errors."""
    if len(blob) < 8:
        raise ModelFileError(f"{what} (too short)")
    n = int.from_bytes(blob[:8], "little")
    if n <= 0 or 8 + n > len(blob):
        raise ModelFileError(f"{what} (bad header)")
    try:
        header = json.loads(blob[8 : 8 + n])
    except ValueError as exc:
        raise ModelFileError(f"{what} (bad header)") from exc
    if not isinstance(header, dict):
        raise ModelFileError(f"{what} (bad header)")
    return header, blob[8 + n :]


def join_header(header: dict[str, Any], rest: bytes) -> bytes:
    """The inverse of :func:`split_header`: the header re-encoded (padded to 8 bytes as safetensors does)."""
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + rest


def header_record(header: dict[str, Any], key: str, what: str) -> dict[str, Any]:
    """The JSON record stored under ``key`` in a header's ``__metadata__``."""
    try:
        record = json.loads(header["__metadata__"][key])
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{what} (no digitrec metadata)") from exc
    if not isinstance(record, dict):
        raise ModelFileError(what)
    return record


def check_model_record(meta: dict[str, Any], path: Path) -> dict[str, Any]:
    """``meta`` if it is a model file's record this version can read, else a :class:`ModelFileError`."""
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a digitrec model file")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFileError(f"{path}: not a digitrec model file (bad format_version {version!r})")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format {version} is newer than this digitrec supports ({FORMAT_VERSION}); "
            "upgrade digitrec"
        )
    penalty = meta.get("blank_penalty", 0.0)
    # Decoding subtracts it from every blank: NaN, inf or a huge value would read noise as digits.
    if not (isinstance(penalty, (int, float)) and not isinstance(penalty, bool)
            and math.isfinite(penalty) and 0.0 <= penalty <= MAX_BLANK_PENALTY):
        raise ModelFileError(f"{path}: bad blank_penalty {penalty!r} "
                             f"(a number of nats from 0 to {MAX_BLANK_PENALTY:g})")
    return meta


def _file_header(path: Path) -> tuple[dict[str, Any], str]:
    """The JSON header of the model file at ``path``, read alone (not the weights), and the error prefix."""
    what = f"{path}: not a digitrec model file"
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else 0
            if n <= 0 or n > MAX_MODEL_BYTES:
                raise ModelFileError(f"{what} (bad header)")
            blob = head + fh.read(n)
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    return split_header(blob, what)[0], what


def read_metadata(name_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of a model file (or bundled name), reading only its header."""
    path = resolve_model_path(name_or_path)
    header, what = _file_header(path)
    return check_model_record(header_record(header, MODEL_KEY, what), path)


# Tensors a module keeps that are state, not learned weights (BatchNorm's statistics).
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def parameter_count(name_or_path: str | os.PathLike[str]) -> int:
    """The number of learned parameters in a model file, from its header's tensor shapes (no weights read)."""
    header, _ = _file_header(resolve_model_path(name_or_path))
    total = 0
    for name, info in header.items():
        if name == "__metadata__" or name.endswith(_BUFFER_SUFFIXES) or not isinstance(info, dict):
            continue
        count = 1
        for side in info.get("shape", []):
            count *= int(side)
        total += count
    return total


def packaged_file(*parts: str) -> Path | None:
    """A file shipped inside the package under ``weights/`` (e.g. a helper model), or None if absent."""
    entry = resources.files("digitrec").joinpath("weights", *parts)
    return Path(str(entry)) if entry.is_file() else None


# The helper models shipped inside the package, by role (digit models are bundled_models()).
BUNDLED_ROLES: dict[str, tuple[str, ...]] = {
    "line reader": ("linereader", "grey.safetensors"),  # the grey line reader `read` uses
    "piece verifier": ("verifier", "pieces.safetensors"),  # the segmenter's verifier
}


def bundled(role: str) -> Path | None:
    """The bundled model file for ``role`` (a key of :data:`BUNDLED_ROLES`), or None if this installation has none."""
    return packaged_file(*BUNDLED_ROLES[role])


def bundled_models() -> dict[str, Path]:
    """Models shipped inside the package: name -> path."""
    weights = resources.files("digitrec") / "weights"
    found: dict[str, Path] = {}
    if weights.is_dir():
        for entry in weights.iterdir():
            if entry.name.endswith(".safetensors"):
                found[entry.name.removesuffix(".safetensors")] = Path(str(entry))
    return found


def resolve_model_path(name_or_path: str | os.PathLike[str]) -> Path:
    """A bundled model's name (e.g. ``"seed"``) or a file path -> an existing file path."""
    text = str(name_or_path)
    bundled = bundled_models()
    if text in bundled and not Path(text).is_file():
        return bundled[text]
    path = Path(text)
    if path.is_dir():
        raise ModelFileError(f"{path}: is a directory, not a model file")
    if not path.is_file():
        hint = f"; bundled models: {', '.join(sorted(bundled))}" if bundled else ""
        raise ModelFileError(f"{text}: no such model file or bundled model{hint}")
    return path
