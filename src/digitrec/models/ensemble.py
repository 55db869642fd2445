"""Combine trained model files into one ensemble model file (averaged probabilities).

The result is an ordinary digitrec model file of the registered ``ensemble`` architecture, so
``load_model``, ``evaluate``, ``predict`` and every command use it like a single model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from digitrec.errors import ConfigError
from digitrec.models.checkpoint import ModelFile, load_model, save_model
from digitrec.models.registry import create_model, model_config_dict

__all__ = ["build_ensemble", "save_ensemble", "ensemble_files"]


def build_ensemble(members: Sequence[ModelFile]) -> nn.Module:
    """An ``ensemble`` model holding copies of the loaded ``members``' weights (on the CPU).

    Members must share the input normalisation and class names (else :class:`ConfigError`);
    each keeps its own temperature.
    """
    if len(members) < 2:
        raise ConfigError("an ensemble needs at least two models")
    first = members[0]
    for mf in members[1:]:
        if mf.normalization != first.normalization:
            raise ConfigError(f"{mf.path}: normalisation {mf.normalization} differs from {first.path}'s")
        if mf.class_names != first.class_names:
            raise ConfigError(f"{mf.path}: class names differ from {first.path}'s")
    config = {"members": [
        {"arch": mf.arch, "model_config": dict(mf.model_config), "temperature": mf.temperature} for mf in members
    ]}
    model = create_model("ensemble", config)
    for slot, mf in zip(model.members, members):  # type: ignore[arg-type]
        slot.load_state_dict(mf.model.state_dict())
    return model.eval()


def save_ensemble(
    path: str | os.PathLike[str], model: nn.Module, members: Sequence[ModelFile], *,
    metrics: dict[str, Any] | None = None, half: bool = False,
) -> Path:
    """Write ``model`` (from :func:`build_ensemble` on ``members``) as a model file at ``path``.

    The metadata records each member's file name, recipe and metrics; ``metrics`` (e.g. one
    final test evaluation of the ensemble) are stored as the ensemble's own. ``half`` stores
    the weights in float16 (see :func:`~digitrec.models.checkpoint.save_model`).
    """
    provenance = [
        {
            "source": mf.path.name if mf.path else None,
            "arch": mf.arch,
            "train_config": mf.metadata.get("train_config"),
            "metrics": mf.metadata.get("metrics"),
            "dataset": mf.metadata.get("dataset"),
        }
        for mf in members
    ]
    extra: dict[str, Any] = {"ensemble_members": provenance, "temperature": 1.0}
    if metrics:
        extra["metrics"] = dict(metrics)
    first = members[0]
    return save_model(path, model, "ensemble", model_config_dict(model),
                      normalization=first.normalization, class_names=first.class_names, extra=extra, half=half)


def ensemble_files(
    sources: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *, half: bool = False,
    test: tuple[np.ndarray, np.ndarray] | None = None, device: str | torch.device = "cpu", precision: str = "auto",
) -> Path:
    """Load the model files (or bundled names) ``sources`` and write their ensemble to ``out``.

    ``half`` stores float16 weights (and measures those); ``test`` (images, labels) is evaluated
    once for the record and stored as the ensemble's metrics: nothing is chosen with it.
    """
    from digitrec.infer.evaluate import evaluate  # inference sits above models; needed only for the test
    from digitrec.runtime import resolve_device, resolve_precision

    members = [load_model(s, "cpu") for s in sources]
    model = build_ensemble(members)
    if half:
        model.half().float()  # the weights as they will be stored, so the test measures the file
    metrics: dict[str, Any] = {}
    if test is not None:
        dev = resolve_device(device)
        result = evaluate(model.to(dev), test[0], test[1], device=dev, precision=resolve_precision(precision, dev),
                          normalization=members[0].normalization)
        metrics = {"test_loss": result.loss, "test_accuracy": result.accuracy}
    return save_ensemble(out, model.cpu(), members, metrics=metrics, half=half)
