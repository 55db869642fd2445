"""The model file: safetensors weights plus one JSON metadata record, written atomically.

Loading never unpickles anything: safetensors holds only raw tensors, and the metadata is JSON.
The metadata stores everything needed to rebuild and use the model (architecture and config,
normalisation, class names) and to trust it (training recipe, dataset checksums, metrics).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from digitrec import __version__
from digitrec.data.preprocess import NORMALIZATION, Normalization
from digitrec.errors import ConfigError, DigitrecError, ModelFileError, first_line
from digitrec.fileio import atomic_write
from digitrec.models.header import (
    FORMAT,
    FORMAT_VERSION,
    MAX_MODEL_BYTES,
    MODEL_KEY,
    ModelFile,
    bundled_models,
    check_model_record,
    header_record,
    join_header,
    packaged_file,
    read_metadata,
    resolve_model_path,
    split_header,
)
from digitrec.models.registry import TASKS, check_line_output, check_model_output, create_model, get_model_spec

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
    return write_blob(path, st_save(tensors, metadata={MODEL_KEY: json.dumps(meta)}), "model file")


def write_blob(path: str | os.PathLike[str], blob: bytes, what: str) -> Path:
    """Write ``blob`` to ``path`` atomically; an OS error becomes a one-line :class:`ModelFileError`."""
    out = Path(path)
    try:
        with atomic_write(out) as fh:
            fh.write(blob)
    except OSError as exc:
        raise ModelFileError(f"cannot write {what} {out}: {exc.strerror or exc}") from exc
    return out


def _read_blob(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise ModelFileError(f"{path}: too large for a digitrec model ({size:,} bytes)")
        return path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def _parse_metadata(blob: bytes, path: Path) -> dict[str, Any]:
    what = f"{path}: not a digitrec model file"
    header, _ = split_header(blob, what)
    return check_model_record(header_record(header, MODEL_KEY, what), path)


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
    :data:`~digitrec.models.registry.TASKS`). Raises :class:`ModelFileError` with a one-line reason for
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
    class_names = meta.get("class_names", [str(i) for i in range(10)])
    _check_numbers(Normalization(**meta["normalization"]), meta.get("temperature", 1.0), class_names,
                   len(class_names) if isinstance(class_names, list) else 10)
    check_model_record(meta, path)
    header, rest = split_header(blob, f"{path}: not a digitrec model file")
    header["__metadata__"][MODEL_KEY] = json.dumps(meta)
    new_blob = join_header(header, rest)
    try:
        st_load(new_blob)  # never write a file that would not load
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: cannot rewrite metadata ({exc})") from exc
    return write_blob(out if out is not None else path, new_blob, "model file")
