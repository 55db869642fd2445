"""Configs and their flags: every command-line field is a flag with its bounds; old import paths still work."""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys
import warnings

import pytest

from digitrec.cfg import FinetuneConfig, LineTrainConfig, TrainConfig, VerifierConfig
from digitrec.cli.main import build_parser
from digitrec.serve.config import ServeConfig

COMMANDS = {"train": TrainConfig, "train-line-reader": LineTrainConfig, "train-verifier": VerifierConfig,
            "finetune": FinetuneConfig, "serve": ServeConfig}


def _help(command: str) -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[command].format_help()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_line_field_is_a_flag_with_its_help(command: str) -> None:
    text = _help(command)
    for f in dataclasses.fields(COMMANDS[command]):
        flag = f.metadata.get("name") or "--" + f.name.replace("_", "-")
        if f.metadata.get("flag"):
            assert flag in text, flag
            assert f.metadata["help"].split()[0] in text  # the field's own words, not a copy elsewhere
        else:
            assert flag not in text, flag


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "digitrec", *argv], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("argv, flag", [
    (["train", "--warmup", "2"], "--warmup"),  # high=1
    (["train", "--lr", "0"], "--lr"),  # above=0
    (["train", "--optimizer", "lion"], "--optimizer"),  # choices
    (["train-line-reader", "--steps", "0"], "--steps"),  # low=1
    (["finetune", "x.csv", "--replay", "5"], "--replay"),  # high=4
    (["serve", "--port", "70000"], "--port"),  # high=65535
    (["serve", "--timeout", "nan"], "--timeout"),  # finite only
])
def test_field_bounds_are_usage_errors(argv: list[str], flag: str) -> None:
    proc = _run(*argv)
    assert proc.returncode == 2 and flag in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_given_flags_override_the_preset_and_the_rest_keep_it() -> None:
    from digitrec.cfg.presets import preset_config
    from digitrec.cli.flags import given_fields

    args = build_parser().parse_args(["train", "--preset", "best", "--epochs", "2"])
    config = preset_config(args.preset, **given_fields(args, TrainConfig))
    assert config.epochs == 2 and config.arch == preset_config("best").arch


def test_old_import_paths_give_the_new_modules_with_a_warning() -> None:
    from digitrec.compat import MOVED

    for old, new in MOVED.items():
        sys.modules.pop(f"digitrec.{old}", None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = importlib.import_module(f"digitrec.{old}")
        assert module is importlib.import_module(new)
        assert module.__spec__.name == new  # the module keeps its own spec
        assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught)


def test_digitrec_train_is_the_package_and_the_function() -> None:
    import digitrec.train.engine  # noqa: F401  (binds the package on digitrec, as any submodule import does)

    assert callable(digitrec.train) and digitrec.train.TrainConfig is TrainConfig
    assert set(digitrec.__all__) >= {"load", "train", "finetune", "evaluate", "TrainConfig"}
    assert all(hasattr(digitrec, name) for name in digitrec.__all__)
