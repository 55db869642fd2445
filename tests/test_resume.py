"""Checkpoint and resume: a run killed with SIGKILL resumes and ends exactly as an uninterrupted one."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from digitrec.errors import ConfigError, ModelFileError
from digitrec.train.engine import TrainConfig, fit
from digitrec.train.resume import load_train_state, save_train_state

CPU = torch.device("cpu")

EPOCHS = 4
# The child trains the accuracy recipe (augmentation, one-cycle AdamW, label smoothing, EMA,
# best-epoch selection: every piece of state a resume must restore) on 600 made-up images,
# prints one line per completed epoch, and writes its final metrics as JSON.
CHILD = """
import json, sys
import numpy as np
from digitrec.data.mnist import MNIST
from digitrec.cfg.presets import preset_config
from digitrec.train.engine import train

ckpt, out = sys.argv[1] or None, sys.argv[2]
rng = np.random.default_rng(0)
data = MNIST(train_images=rng.integers(0, 256, (600, 28, 28), dtype=np.uint8),
             train_labels=np.arange(600) % 10, test_images=rng.integers(0, 256, (50, 28, 28), dtype=np.uint8),
             test_labels=np.arange(50) % 10, directory=None, sha256={})
class Lines:
    def on_epoch_end(self, record):
        print(f"epoch {record.epoch}", file=sys.stderr, flush=True)
config = preset_config("best", epochs=EPOCHS, val_size=100, batch_size=50, precision="fp32",
                       model_config={"width": 8})
result = train(config, data=data, device="cpu", callback=Lines(), checkpoint=ckpt, resume=ckpt is not None)
result.save(out)
print(json.dumps(result.metrics()))
""".replace("EPOCHS", str(EPOCHS))


def child(ckpt: Path | None, out: Path) -> list[str]:
    return [sys.executable, "-c", CHILD, str(ckpt or ""), str(out)]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def test_kill_9_then_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    full = tmp_path / "full.safetensors"
    done = run(child(None, full))
    assert done.returncode == 0, done.stderr
    reference = json.loads(done.stdout)

    ckpt, out = tmp_path / "run.ckpt", tmp_path / "resumed.safetensors"
    proc = subprocess.Popen(child(ckpt, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.strip() == "epoch 2":
                break
        os.kill(proc.pid, signal.SIGKILL)  # no cleanup, no chance to flush anything
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()  # it died before the end
    _, meta = load_train_state(ckpt)
    killed_at = len(meta["history"])
    assert 2 <= killed_at < EPOCHS

    resumed = run(child(ckpt, out))
    assert resumed.returncode == 0, resumed.stderr
    # Only the remaining epochs ran.
    assert resumed.stderr.split() == [w for e in range(killed_at + 1, EPOCHS + 1) for w in ("epoch", str(e))]
    report = json.loads(resumed.stdout)
    assert report == {**reference, "train_seconds": report["train_seconds"]}
    a, b = load_file(full), load_file(out)
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a), "resumed weights differ from the uninterrupted run"


def tiny_data(n: int = 128) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n) % 10


def test_resume_refuses_a_different_recipe(tmp_path: Path) -> None:
    x, y = tiny_data()
    config = TrainConfig(epochs=1, batch_size=64, precision="fp32", model_config={"hidden": 8})
    ckpt = tmp_path / "run.ckpt"
    fit(config, x, y, device=CPU, checkpoint=ckpt)
    with pytest.raises(ConfigError, match="different recipe"):
        fit(dataclasses.replace(config, lr=0.01), x, y, device=CPU, checkpoint=ckpt, resume=True)


def test_resume_accepts_a_checkpoint_from_before_new_recipe_fields(tmp_path: Path) -> None:
    # A checkpoint written before a field existed (e.g. aug_elastic) ran with its default.
    x, y = tiny_data()
    config = TrainConfig(epochs=2, batch_size=64, precision="fp32", model_config={"hidden": 8})
    ckpt = tmp_path / "run.ckpt"
    fit(dataclasses.replace(config, epochs=1), x, y, device=CPU, checkpoint=ckpt)
    groups, meta = load_train_state(ckpt)
    for key in ("aug_elastic", "aug_elastic_sigma", "num_classes"):
        del meta["config"][key]
    meta["config"]["epochs"] = 2
    save_train_state(ckpt, groups, {k: v for k, v in meta.items() if k not in ("format", "format_version")})
    resumed = fit(config, x, y, device=CPU, checkpoint=ckpt, resume=True)
    assert [r.epoch for r in resumed.history] == [1, 2]
    # A field that differs from its default still tells recipes apart.
    meta["config"]["aug_elastic"] = 5.0
    save_train_state(ckpt, groups, {k: v for k, v in meta.items() if k not in ("format", "format_version")})
    with pytest.raises(ConfigError, match="different recipe"):
        fit(config, x, y, device=CPU, checkpoint=ckpt, resume=True)


def test_resume_without_checkpoint_is_config_error() -> None:
    x, y = tiny_data()
    with pytest.raises(ConfigError, match="resume needs a checkpoint"):
        fit(TrainConfig(epochs=1), x, y, device=CPU, resume=True)


def test_resume_of_a_finished_run_trains_nothing_more(tmp_path: Path) -> None:
    x, y = tiny_data()
    config = TrainConfig(epochs=2, batch_size=64, precision="fp32", model_config={"hidden": 8}, ema_decay=0.9)
    ckpt = tmp_path / "run.ckpt"
    first = fit(config, x, y, device=CPU, checkpoint=ckpt)
    calls: list[int] = []

    class Count:
        def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
            calls.append(epoch)

    again = fit(config, x, y, device=CPU, checkpoint=ckpt, resume=True, callback=Count())
    assert calls == [] and len(again.history) == 2
    sa, sb = first.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_checkpoint_is_safetensors_with_json_state(tmp_path: Path) -> None:
    x, y = tiny_data()
    config = TrainConfig(epochs=1, batch_size=64, precision="fp32", model_config={"hidden": 8},
                         optimizer="sgd", ema_decay=0.9, keep_best=True)
    ckpt = tmp_path / "run.ckpt"
    fit(config, x[:100], y[:100], device=CPU, val_images=x[100:], val_labels=y[100:], checkpoint=ckpt)
    tensors = load_file(ckpt)  # plain tensors: nothing to unpickle
    groups = {k.split("/")[0] for k in tensors}
    assert groups == {"model", "optimizer", "ema", "best", "rng"}
    _, meta = load_train_state(ckpt)
    assert meta["config"] == json.loads(json.dumps(config.to_dict()))
    assert meta["best_epoch"] == 1 and len(meta["history"]) == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_not_a_checkpoint_is_model_file_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFileError, match="not a digitrec training checkpoint"):
        load_train_state(bad)


def cli(*args: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "digitrec", *args])


def test_cli_checkpoint_flags_are_checked_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    proc = cli("train", "--resume", "--out", str(out))
    assert proc.returncode == 1 and "--resume needs --checkpoint FILE" in proc.stderr
    proc = cli("train", "--checkpoint", str(out), "--out", str(out), "--no-plot")
    assert proc.returncode == 1 and "given for two outputs" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
