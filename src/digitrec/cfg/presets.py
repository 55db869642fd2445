"""Named training recipes: one table mapping a preset name to TrainConfig overrides.

``digitrec train --preset NAME`` starts from ``TrainConfig()`` with these overrides; flags given
explicitly on the command line override the preset. Add a recipe by adding a row.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from digitrec.cfg.train import TrainConfig
from digitrec.errors import ConfigError

__all__ = ["PRESETS", "list_presets", "preset_config"]

# The accuracy design of `best` (and `fashion`): VGG-style BN CNN, one-cycle AdamW, label
# smoothing, EMA of the weights, the best epoch chosen on the validation split.
_VGG_ONECYCLE: dict[str, Any] = {
    "arch": "vgg",
    "batch_size": 128,
    "lr": 3e-3,
    "optimizer": "adamw",
    "weight_decay": 1e-2,
    "schedule": "onecycle",
    "warmup": 0.2,
    "label_smoothing": 0.1,
    "ema_decay": 0.999,
    "keep_best": True,
}

PRESETS: dict[str, dict[str, Any]] = {
    # The reference notebook: seed CNN, Adam 1e-3, batch 100, 10 epochs, no augmentation.
    "notebook": {},
    # Accuracy: VGG-style BN CNN, random affine augmentation, one-cycle AdamW, label smoothing,
    # EMA of the weights, best epoch chosen on the validation split. No early stopping: the
    # one-cycle schedule fixes the length, and a plateau at peak LR is not convergence. 30
    # epochs (the first version had 15): published runs of this design train for tens.
    "best": {
        **_VGG_ONECYCLE,
        "epochs": 30,
        "aug_rotate": 10.0,
        "aug_shift": 2.5,
        "aug_scale": 0.1,
        "aug_shear": 8.0,
    },
    # Speed: 99% in as little training as possible. A narrow BN CNN that down-samples at once
    # (stride-2 first convolution, ~0.94 M multiply-adds per image), one epoch of one-cycle Adam
    # at a high peak; the whole set stays in memory as for every recipe. Batch 128 rather than
    # 256: twice the updates in the one epoch, for little extra time; label smoothing helped
    # one-epoch validation accuracy too (bench/speed.py times it; README has the comparison).
    "fast": {
        "arch": "fast",
        "epochs": 1,
        "batch_size": 128,
        "lr": 2e-2,
        "schedule": "onecycle",
        "warmup": 0.25,
        "label_smoothing": 0.1,
    },
    # Fashion-MNIST (--dataset fashion-mnist): the `best` design, shorter, with augmentation that
    # suits clothes photographed upright and centred: small shifts and zooms, a little rotation,
    # no shear. 8 epochs rather than 30: one measured run had to fit a loaded 2-core machine (docs/datasets.md).
    "fashion": {
        **_VGG_ONECYCLE,
        "epochs": 8,
        "aug_rotate": 5.0,
        "aug_shift": 2.0,
        "aug_scale": 0.1,
    },
}


def list_presets() -> list[str]:
    """Names of the presets, in table order."""
    return list(PRESETS)


def preset_config(name: str, **overrides: Any) -> TrainConfig:
    """``TrainConfig`` of preset ``name`` with ``overrides`` on top; :class:`ConfigError` if unknown."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(list_presets())}")
    try:
        return dataclasses.replace(TrainConfig(), **{**PRESETS[name], **overrides})
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc
