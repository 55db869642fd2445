"""Distributed training (digitrec.train.distributed): real gloo process groups of 2 ranks on loopback, through torchrun.

The API tests train on made-up images in a script run by torchrun; the CLI tests run
``digitrec train --nproc 2`` on a few real MNIST images (the CLI reads checksum-verified MNIST
only). Every rendezvous is on 127.0.0.1 at a port that was free a moment ago.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import free_port, requires_mnist
from safetensors.torch import load_file

from digitrec.models.checkpoint import load_model
from digitrec.models.header import read_metadata
from digitrec.train.resume import load_train_state

# Each rank trains the notebook recipe on 512 made-up images (448 after the validation split:
# 7 global batches of 64) and saves its own final weights; rank 0 also writes the model file.
# No augmentation: each rank draws its own random transforms, which 1 process cannot repeat.
CHILD = """
import json, sys
import numpy as np
from safetensors.torch import save_file
from digitrec.data.mnist import MNIST
from digitrec.train.distributed import in_torchrun, join
from digitrec.train.engine import TrainConfig, train

out = sys.argv[1]
rng = np.random.default_rng(0)
data = MNIST(train_images=rng.integers(0, 256, (512, 28, 28), dtype=np.uint8), train_labels=np.arange(512) % 10,
             test_images=rng.integers(0, 256, (50, 28, 28), dtype=np.uint8), test_labels=np.arange(50) % 10,
             directory=None, sha256={})
dist = join("cpu") if in_torchrun() else None
config = TrainConfig(epochs=2, batch_size=64, val_size=64, precision="fp32")
result = train(config, data=data, dist=dist)
rank = dist.rank if dist else 0
save_file({k: v.contiguous() for k, v in result.model.state_dict().items()}, f"{out}.rank{rank}")
if rank == 0:
    result.save(out)
    print(json.dumps(result.metrics()))
if dist:
    dist.barrier()
    dist.close()
"""

# A recipe small enough for a few seconds an epoch on 2 busy cores, with augmentation so each
# rank's random stream is part of what a resume must restore.
RECIPE = ["--limit", "1088", "--val-size", "64", "--batch-size", "64", "--precision", "fp32", "--aug-rotate", "10",
          "--no-plot", "-q"]


def torchrun(nproc: int, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc),
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def digitrec(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "digitrec", *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("digitrec: error:")]


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


# --- the API under torchrun ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def child_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """The child trained by torchrun with 1 and with 2 processes: the model file of each."""
    root = tmp_path_factory.mktemp("ddp")
    script = root / "child.py"
    script.write_text(CHILD)
    outs = {}
    for nproc in (1, 2):
        out = root / f"model-{nproc}.safetensors"
        proc = torchrun(nproc, str(script), str(out))
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs[nproc] = out
    return outs


def test_both_ranks_end_with_identical_weights(child_runs: dict[int, Path]) -> None:
    out = child_runs[2]
    rank0, rank1 = load_file(f"{out}.rank0"), load_file(f"{out}.rank1")
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    # ... and the model file holds them.
    assert max_difference(rank0, load_file(out)) == 0.0


def test_two_processes_match_one_on_the_same_global_batch(child_runs: dict[int, Path]) -> None:
    # The same global batches (DistributedSampler, seed 0): the weights differ only by the order of
    # the float sums (two half-batch means averaged instead of one mean), far below what learning changes.
    one, two = load_file(child_runs[1]), load_file(child_runs[2])
    assert max_difference(one, two) < 1e-4
    m1, m2 = read_metadata(child_runs[1])["metrics"], read_metadata(child_runs[2])["metrics"]
    assert m1["val_accuracy"] == m2["val_accuracy"]
    assert m1["train_loss"] == pytest.approx(m2["train_loss"], abs=1e-4)
    # Rank 0 alone tested: the test set is in the file's metrics, once.
    assert "test_accuracy" in m2 and m2["epochs_completed"] == 2


# --- the CLI: digitrec train --nproc --------------------------------------------------------------


@pytest.mark.parametrize(("flags", "message"), [
    (["--nproc", "0"], "--nproc: must be >= 1"),
    (["--nproc", "two"], "--nproc: expected an integer"),
])
def test_bad_nproc_is_a_usage_error(tmp_path: Path, flags: list[str], message: str) -> None:
    proc = digitrec("train", *flags, "--out", str(tmp_path / "m.safetensors"))
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(("flags", "message"), [
    (["--nproc", "3"], "batch size 100 is not divisible by --nproc 3"),
    (["--nproc", "2", "--device", "cuda:1"], "--nproc takes --device auto, cpu or cuda"),
])
def test_nproc_that_cannot_work_is_refused_before_starting(tmp_path: Path, flags: list[str], message: str) -> None:
    proc = digitrec("train", *flags, "--out", str(tmp_path / "m.safetensors"))
    assert proc.returncode == 1
    assert len(error_lines(proc.stderr)) == 1
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())


def test_rendezvous_failure_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:  # the rendezvous port is taken
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = digitrec("train", "--nproc", "2", "--out", str(tmp_path / "m.safetensors"),
                        env={"MASTER_PORT": str(busy.getsockname()[1])})
    assert proc.returncode == 1
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and "cannot start 2 training processes" in lines[0] and "address already in use" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir())


def _rank_pid(launcher: int, local_rank: int) -> int | None:
    # The ranks are the launcher's children; each one's environment says which it is.
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == launcher and f"LOCAL_RANK={local_rank}".encode() in env:
            return int(entry.name)
    return None


@pytest.mark.slow
@requires_mnist
def test_nproc_2_model_file_dying_rank_and_resume(tmp_path: Path) -> None:
    # One uninterrupted run (its model file checked), one whose rank 1 is killed, then its resume.
    epochs = 4
    recipe = ["--nproc", "2", "--epochs", str(epochs), *RECIPE]
    whole = tmp_path / "whole" / "m.safetensors"
    whole.parent.mkdir()
    proc = digitrec("train", *recipe, "--out", str(whole), "--checkpoint", str(whole.with_suffix(".ckpt")), "--json",
                    env={"MASTER_PORT": str(free_port())})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1  # rank 0 alone reports
    report = json.loads(lines[0])
    assert report["processes"] == 2 and report["model"] == str(whole) and report["epochs_completed"] == epochs
    assert sorted(p.name for p in whole.parent.iterdir()) == ["m.ckpt", "m.safetensors"]  # no temporary files
    loaded = load_model(whole)  # an ordinary model file: no DDP wrapper in it
    assert loaded.arch == "seed" and loaded.model is not None
    assert loaded.model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert loaded.metadata["metrics"]["test_accuracy"] == report["test_accuracy"]
    assert loaded.metadata["dataset"]["train_size"] == 1024

    out, ckpt = tmp_path / "m.safetensors", tmp_path / "m.ckpt"
    launcher = subprocess.Popen([sys.executable, "-m", "digitrec", "train", *recipe, "--out", str(out),
                                 "--checkpoint", str(ckpt)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL, env={**os.environ, "MASTER_PORT": str(free_port())})
    try:
        deadline = time.monotonic() + 240
        while not ckpt.exists() and launcher.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        victim = _rank_pid(launcher.pid, 1)
        assert victim is not None and ckpt.exists(), "no checkpoint or no rank 1 to kill"
        os.kill(victim, signal.SIGKILL)
        _, stderr = launcher.communicate(timeout=120)
    finally:
        launcher.kill()
    assert launcher.returncode == 1
    assert len(error_lines(stderr)) == 1 and "rank 1" in stderr and "SIGKILL" in stderr, stderr
    assert "Traceback" not in stderr
    assert not out.exists()  # no model file, whole or half
    killed_at = len(load_train_state(ckpt)[1]["history"])
    assert 1 <= killed_at < epochs

    # One process cannot take over the shards and random streams of two.
    proc = digitrec("train", *recipe[2:], "--out", str(out), "--checkpoint", str(ckpt), "--resume")
    assert proc.returncode == 1
    assert error_lines(proc.stderr) == [f"digitrec: error: {ckpt}: checkpoint was written by 2 processes; "
                                        "resume it the same way"]
    proc = digitrec("train", *recipe, "--out", str(out), "--checkpoint", str(ckpt), "--resume",
                    env={"MASTER_PORT": str(free_port())})
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = load_file(whole), load_file(out)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_metadata(out)["metrics"] == {**read_metadata(whole)["metrics"],
                                             "train_seconds": read_metadata(out)["metrics"]["train_seconds"]}


@pytest.mark.slow
@requires_mnist
def test_two_processes_one_epoch_on_real_mnist_reach_98_percent(tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    proc = digitrec("train", "--nproc", "2", "--epochs", "1", "--no-plot", "-q", "--out", str(out), "--json",
                    env={"MASTER_PORT": str(free_port())}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["processes"] == 2 and report["test_accuracy"] >= 0.98
