"""Training checkpoints: everything needed to resume a run, as safetensors + JSON (no pickle).

A checkpoint holds the model, the optimiser state, the EMA and best-so-far weights, the RNG
states (torch, shuffling, augmentation) and the history, written atomically after every epoch,
so a run killed at any moment resumes from its last completed epoch and ends as if never
stopped. The LR schedule is a pure function of the step count, so the step is its whole state.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from digitrec.errors import ModelFileError
from digitrec.models.checkpoint import write_blob
from digitrec.models.header import header_record, split_header

__all__ = [
    "STATE_FORMAT", "save_train_state", "read_train_state", "load_train_state", "pack_optimizer", "unpack_optimizer",
]

STATE_FORMAT = "digitrec-train-state"
_STATE_VERSION = 1
_META_KEY = "digitrec-train-state"


def pack_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (``"<param>.<key>"``) and a JSON-ready rest."""
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value
            else:
                plain.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "plain": plain}


def unpack_optimizer(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`pack_optimizer`: a dict for ``optimizer.load_state_dict``."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    for index, values in rest.get("plain", {}).items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": rest["param_groups"]}


def save_train_state(path: str | os.PathLike[str], groups: dict[str, dict[str, torch.Tensor]],
                     meta: dict[str, Any]) -> Path:
    """Write tensor ``groups`` (name -> {key: tensor}) and JSON ``meta`` to ``path`` atomically."""
    tensors = {
        f"{group}/{key}": value.detach().cpu().contiguous().clone()
        for group, values in groups.items()
        for key, value in values.items()
    }
    record = {"format": STATE_FORMAT, "format_version": _STATE_VERSION, **meta}
    return write_blob(path, st_save(tensors, metadata={_META_KEY: json.dumps(record)}), "checkpoint")


def read_train_state(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a checkpoint file, or a one-line :class:`ModelFileError`."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read checkpoint ({exc.strerror or exc})") from exc


def load_train_state(path: str | os.PathLike[str], blob: bytes | None = None,
                     ) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_train_state`: (tensor groups, meta).

    ``blob`` is the file's content when it was read already (a distributed run reads it on rank 0
    and sends it to the others); ``path`` then only names it in errors.
    """
    p = Path(path)
    if blob is None:
        blob = read_train_state(p)
    what = f"{p}: not a digitrec training checkpoint"
    meta = header_record(split_header(blob, what)[0], _META_KEY, what)
    try:
        flat = st_load(blob)
    except (ValueError, SafetensorError, RuntimeError) as exc:
        raise ModelFileError(what) from exc
    if meta.get("format") != STATE_FORMAT:
        raise ModelFileError(f"{p}: not a digitrec training checkpoint")
    if meta.get("format_version") != _STATE_VERSION:
        raise ModelFileError(f"{p}: unsupported checkpoint version {meta.get('format_version')!r}")
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for name, value in flat.items():
        group, key = name.split("/", 1)
        groups.setdefault(group, {})[key] = value
    return groups, meta
