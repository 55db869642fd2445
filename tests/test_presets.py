"""Tests for digitrec.cfg.presets: the table of named recipes and `train --preset`."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from digitrec.cfg.presets import PRESETS, list_presets, preset_config
from digitrec.errors import ConfigError
from digitrec.train.engine import TrainConfig

FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def test_table_is_plain_and_complete():
    assert list_presets()[:2] == ["notebook", "best"]
    for name, overrides in PRESETS.items():
        assert isinstance(overrides, dict) and set(overrides) <= FIELDS, name
        preset_config(name).validate()  # every preset is a valid recipe


def test_notebook_is_the_default_recipe():
    assert preset_config("notebook") == TrainConfig()


def test_best_is_built_for_accuracy_and_selects_on_validation_only():
    best = preset_config("best")
    assert best.arch == "vgg" and best.augment.enabled and best.ema_decay > 0
    assert best.keep_best and best.val_size > 0


def test_fast_is_a_short_one_cycle_recipe_on_the_fast_net():
    fast = preset_config("fast")
    assert fast.arch == "fast" and fast.schedule == "onecycle" and fast.epochs == 1
    assert not fast.augment.enabled and fast.val_size > 0


def test_overrides_win_and_bad_names_are_config_errors():
    assert preset_config("best", seed=2, epochs=1).seed == 2
    assert preset_config("best", epochs=1).epochs == 1
    with pytest.raises(ConfigError, match="unknown preset 'fastest'; available: notebook, best, fast"):
        preset_config("fastest")
    with pytest.raises(ConfigError, match="colour"):
        preset_config("best", colour=3)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "digitrec", *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env=os.environ.copy())


def test_cli_unknown_preset_is_one_line_error(tmp_path):
    proc = cli("train", "--preset", "nope", "--out", str(tmp_path / "m.safetensors"))
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0
    assert "unknown preset 'nope'" in proc.stderr


def test_cli_models_lists_presets():
    proc = cli("models", "--json")
    assert proc.returncode == 0, proc.stderr
    listed = {p["name"]: p["overrides"] for p in json.loads(proc.stdout)["presets"]}
    assert listed == {name: json.loads(json.dumps(o)) for name, o in PRESETS.items()}
