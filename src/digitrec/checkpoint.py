"""The model file: safetensors weights plus one JSON metadata record, written atomically.

Loading never unpickles anything: safetensors holds only raw tensors, and the metadata is JSON.
The metadata stores everything needed to rebuild and use the model (architecture and config,
normalisation, class names) and to trust it (training recipe, dataset checksums, metrics).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from . import __version__
from .errors import ConfigError, DigitrecError, ModelFileError, first_line
from .fileio import atomic_write
from .models import TASKS, check_line_output, check_model_output, create_model, get_model_spec
from .preprocess import NORMALIZATION, Normalization

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ModelFile",
    "save_model",
    "load_model",
    "read_metadata",
    "write_metadata",
    "write_blob",
    "bundled_models",
    "resolve_model_path",
    "packaged_file",
]

FORMAT = "digitrec-model"
FORMAT_VERSION = 1
_META_KEY = "digitrec"
_MAX_MODEL_BYTES = 512 * 1024 * 1024  # refuse absurd files before reading them into memory


@dataclass
class ModelFile:
    """A loaded model file: the rebuilt module (in eval mode) and its metadata."""

    model: nn.Module
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


def save_model(
    path: str | os.PathLike[str],
    model: nn.Module,
    arch: str,
    model_config: dict[str, Any],
    *,
    normalization: Normalization = NORMALIZATION,
    class_names: list[str] | None = None,
    extra: dict[str, Any] | None = None,
    half: bool = False,
) -> Path:
    """Write ``model`` and its metadata to ``path`` atomically; returns the path.

    ``half`` stores floating-point tensors as float16 (half the size; loading converts them
    back to the model's float32), for bundling large models such as ensembles.
    """
    meta: dict[str, Any] = dict(extra or {})
    meta.update(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        digitrec_version=__version__,
        arch=arch,
        model_config=dict(model_config),
        normalization={"mean": normalization.mean, "std": normalization.std},
        class_names=class_names or [str(i) for i in range(10)],
    )
    # clone(): safetensors refuses tensors that share storage; contiguous(): channels_last.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    return write_blob(path, st_save(tensors, metadata={_META_KEY: json.dumps(meta)}), "model file")


def write_blob(path: str | os.PathLike[str], blob: bytes, what: str) -> Path:
    """Write ``blob`` to ``path`` atomically; an OS error becomes a one-line :class:`ModelFileError`."""
    out = Path(path)
    try:
        with atomic_write(out) as fh:
            fh.write(blob)
    except OSError as exc:
        raise ModelFileError(f"cannot write {what} {out}: {exc.strerror or exc}") from exc
    return out


def packaged_file(*parts: str) -> Path | None:
    """A file shipped inside the package under ``weights/`` (e.g. a helper model), or None if absent."""
    entry = resources.files("digitrec").joinpath("weights", *parts)
    return Path(str(entry)) if entry.is_file() else None


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


def _read_blob(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > _MAX_MODEL_BYTES:
            raise ModelFileError(f"{path}: too large for a digitrec model ({size:,} bytes)")
        return path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def _parse_metadata(blob: bytes, path: Path) -> dict[str, Any]:
    # safetensors layout: u64 little-endian header length, then a JSON header.
    if len(blob) < 8:
        raise ModelFileError(f"{path}: not a digitrec model file (too short)")
    n = int.from_bytes(blob[:8], "little")
    if n <= 0 or 8 + n > len(blob):
        raise ModelFileError(f"{path}: not a digitrec model file (bad header)")
    try:
        header = json.loads(blob[8 : 8 + n])
        meta = json.loads(header["__metadata__"][_META_KEY])
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{path}: not a digitrec model file (no digitrec metadata)") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a digitrec model file")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFileError(f"{path}: not a digitrec model file (bad format_version {version!r})")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format {meta['format_version']} is newer than this digitrec "
            f"supports ({FORMAT_VERSION}); upgrade digitrec"
        )
    return meta


def _finite_positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _check_numbers(norm: Normalization, temperature: object, class_names: object, num_classes: int = 10) -> None:
    # A zero std or temperature would turn every answer into NaN; refuse the file instead.
    if not (_finite_positive(norm.std) and isinstance(norm.mean, (int, float)) and math.isfinite(norm.mean)):
        raise ModelFileError(f"bad normalisation {norm}")
    if not _finite_positive(temperature):
        raise ModelFileError(f"bad temperature {temperature!r}")
    if not (isinstance(class_names, list) and len(class_names) == num_classes
            and all(isinstance(c, str) for c in class_names)):
        what = "ten strings (digits 0-9)" if num_classes == 10 else f"{num_classes} strings"
        found = f"; it has {len(class_names)} classes" if isinstance(class_names, list) else ""
        raise ModelFileError(f"class_names must be a list of {what}{found}")


def read_metadata(name_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of a model file, without building the model."""
    path = resolve_model_path(name_or_path)
    return _parse_metadata(_read_blob(path), path)


def load_model(
    name_or_path: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    *,
    num_classes: int = 10,
    task: str = "digits",
) -> ModelFile:
    """Load a model file (or a bundled model by name) onto ``device``, in eval mode.

    ``num_classes`` is the number of classes the caller reads (digit models: ten; the piece
    verifier: two; the line reader: eleven) and ``task`` what the model must read (see
    :data:`~digitrec.models.TASKS`). Raises :class:`ModelFileError` with a one-line reason for
    anything wrong with the file.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; available: {', '.join(TASKS)}")
    path = resolve_model_path(name_or_path)
    blob = _read_blob(path)
    meta = _parse_metadata(blob, path)
    try:
        tensors = st_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: corrupt model file ({exc})") from exc
    try:
        stored_task = get_model_spec(meta["arch"]).task
        if stored_task != task:
            raise ConfigError(f"a model for {stored_task} ({meta['arch']}), not for {task}")
        model = create_model(meta["arch"], meta.get("model_config") or {})
        model.load_state_dict(tensors, strict=True)
        norm = Normalization(**meta["normalization"])
        class_names = meta.get("class_names", [str(i) for i in range(10)])
        temperature = meta.get("temperature", 1.0)
        _check_numbers(norm, temperature, class_names, num_classes)
        if task == "lines":
            check_line_output(model, num_classes=len(class_names))
        else:
            check_model_output(model, num_classes=len(class_names))
    except DigitrecError as exc:
        raise ModelFileError(f"{path}: {exc}") from exc
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: weights do not match the stored architecture ({first_line(exc)})") from exc
    # channels_last: the layout predict_logits feeds; a mismatch makes oneDNN convert every batch.
    model.to(device).to(memory_format=torch.channels_last).eval()  # type: ignore[call-overload]
    return ModelFile(
        model=model,
        arch=meta["arch"],
        model_config=dict(meta.get("model_config") or {}),
        normalization=norm,
        class_names=list(class_names),
        metadata=meta,
        path=path,
    )


def write_metadata(
    name_or_path: str | os.PathLike[str],
    updates: dict[str, Any],
    *,
    out: str | os.PathLike[str] | None = None,
) -> Path:
    """Change metadata keys of a model file without touching its weights; returns the path written.

    The tensor bytes are copied verbatim (bit-identical weights); only the JSON header is
    rewritten. ``out`` defaults to the file itself, replaced atomically.
    """
    path = resolve_model_path(name_or_path)
    blob = _read_blob(path)
    meta = _parse_metadata(blob, path)
    reserved = {"format", "format_version", "arch", "model_config", "normalization", "class_names"} & set(updates)
    if reserved:
        raise ModelFileError(f"refusing to change {', '.join(sorted(reserved))}: they describe the weights")
    meta.update(updates)
    _check_numbers(Normalization(**meta["normalization"]), meta.get("temperature", 1.0),
                   meta.get("class_names", [str(i) for i in range(10)]))
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    header["__metadata__"][_META_KEY] = json.dumps(meta)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads the header to 8 bytes with spaces
    new_blob = len(text).to_bytes(8, "little") + text + blob[8 + n :]
    try:
        st_load(new_blob)  # never write a file that would not load
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: cannot rewrite metadata ({exc})") from exc
    return write_blob(out if out is not None else path, new_blob, "model file")
