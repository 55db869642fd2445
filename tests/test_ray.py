"""digitrec.ray against a local Ray started here (2 CPUs, no dashboard): rows identical to the one-process path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port
from test_batch import BAD, write_images

from digitrec.infer.batch import ModelSpec, discover, read_chunks

ray = pytest.importorskip("ray", reason="the ray extra is not installed")


@pytest.fixture(scope="module")
def local_ray():
    from digitrec.ray import connect

    started = connect(None, num_cpus=2)
    yield
    if started:
        ray.shutdown()


@pytest.mark.parametrize("task", ["digits", "numbers"])
def test_ray_rows_equal_single_process_rows(local_ray: None, tmp_path: Path, task: str) -> None:
    import digitrec.ray

    write_images(tmp_path / "imgs", 10)
    spec = ModelSpec(task=task)
    paths = list(discover([str(tmp_path / "imgs")]))
    local = [row for chunk in read_chunks(iter(paths), spec, jobs=1, chunk_size=4) for row in chunk]
    on_ray = [row for chunk in digitrec.ray.ray_chunks(iter(paths), spec, jobs=2, chunk_size=4) for row in chunk]
    assert on_ray == local  # same values, same order, same keys
    assert [row["path"] for row in local if row["error"]] == [str(tmp_path / "imgs" / BAD)]
    if task == "numbers":
        return  # the Dataset API once is enough (each run starts actors: seconds)
    ds = digitrec.ray.read_images(str(tmp_path / "imgs"), model="seed", task=task, concurrency=2, batch_size=3)
    rows = ds.take_all()
    assert sorted(rows, key=lambda r: r["path"]) == sorted(local, key=lambda r: r["path"])


def test_cli_unreachable_address_is_one_line_and_no_output(tmp_path: Path) -> None:
    write_images(tmp_path / "imgs", 2)
    proc = subprocess.run([sys.executable, "-m", "digitrec", "predict", "imgs", "--engine", "ray", "--address",
                           f"127.0.0.1:{free_port()}", "--out", "out.jsonl"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot reach Ray at 127.0.0.1:" in lines[0], proc.stderr
    assert not (tmp_path / "out.jsonl").exists()
    proc = subprocess.run([sys.executable, "-m", "digitrec", "predict", "imgs", "--address", "auto"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1 and "--address is for --engine ray" in proc.stderr
