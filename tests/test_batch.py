"""Batch reading (digitrec.infer.batch and the CLI on folders): discovery, order, error rows, JSONL/CSV, resume."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import one_line_error
from PIL import Image, ImageDraw

from digitrec.errors import ConfigError
from digitrec.infer.batch import (
    ModelSpec,
    RowWriter,
    check_inputs,
    columns,
    discover,
    read_chunks,
    resume_output,
    run_batch,
)

BAD = "b_bad.png"  # not an image at all, between good files


def write_images(folder: Path, count: int) -> list[Path]:
    """``count`` 28x28 PNGs of a "7" (white on black, so read without cleaning: fast), drawn at varying places
    and widths so that the answers differ, plus a broken file sorted among them."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        img = Image.new("L", (28, 28), 0)
        dx, dy = i % 5, (i // 5) % 4
        ImageDraw.Draw(img).line([(6 + dx, 5 + dy), (20 + dx, 5 + dy), (11 + dx - i % 3, 23)], fill=255,
                                 width=2 + i % 2)
        path = folder / f"a{i:04d}.png"
        img.save(path)
        paths.append(path)
    (folder / BAD).write_bytes(b"this is not a picture")
    return paths


def run(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "digitrec", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_discover_folders_globs_and_files_in_order(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ["d/b.png", "d/a.JPG", "d/sub/c.webp", "d/.hidden.png", "d/notes.txt", "d/z.tif", "e1.png",
                 "e2.png", "e3.bmp", "plain.dat"]:
        (tmp_path / name).write_bytes(b"")
    os.symlink(tmp_path / "d" / "sub", tmp_path / "d" / "link")  # not followed: no file twice, no cycle
    os.chdir(tmp_path)
    found = list(discover(["plain.dat", "d", "e*.png", "missing.png"]))
    assert found == ["plain.dat", "d/a.JPG", "d/b.png", "d/sub/c.webp", "d/z.tif", "e1.png", "e2.png",
                     "missing.png"]
    it = discover(["d"])
    assert next(it) == "d/a.JPG"  # lazy: a generator, not a list built up front
    check_inputs(["d", "e*.png", "missing.png"])  # a missing plain file becomes an error row later
    (tmp_path / "empty").mkdir()
    for bad, needle in [("empty", "no image files in this folder"), ("nothing*.png", "in this pattern")]:
        with pytest.raises(ConfigError, match=needle):
            check_inputs([bad])


def test_pool_rows_equal_single_process_rows_in_order_with_error_rows(tmp_path: Path) -> None:
    write_images(tmp_path / "imgs", 40)
    paths = list(discover([str(tmp_path / "imgs")]))
    spec = ModelSpec()
    one = [row for chunk in read_chunks(iter(paths), spec, jobs=1, chunk_size=7) for row in chunk]
    pool_chunks = list(read_chunks(iter(paths), spec, jobs=2, chunk_size=7))
    pool = [row for chunk in pool_chunks for row in chunk]
    assert [len(c) for c in pool_chunks] == [7] * 5 + [6]
    assert [row["path"] for row in one] == paths  # input order
    assert pool == one
    bad = [row for row in one if row["error"] is not None]
    assert [row["path"] for row in bad] == [str(tmp_path / "imgs" / BAD)]
    assert "not a recognised image format" in bad[0]["error"] and bad[0]["digit"] is None
    good = [row for row in one if row["error"] is None]
    assert all(set(row) == set(columns("digits")) for row in one)
    assert all(row["digit"] in range(10) and abs(sum(row["probabilities"]) - 1) < 1e-4 for row in good)
    assert len({row["confidence"] for row in good}) > 10  # real, differing answers
    # The rows are the single-file answers: the same model on one file at a time.
    from digitrec.infer.recogniser import load

    rec = load("seed", verifier=None, line_reader=None)
    for row in good[:3]:
        assert rec.predict(row["path"]).to_dict() == {k: v for k, v in row.items() if k not in ("path", "error")}


def test_writer_formats_and_resume_output(tmp_path: Path) -> None:
    rows = [{"path": "x,1.png", "digit": 3, "confidence": 0.5, "unsure": True, "top3": [{"digit": 3,
             "probability": 0.5}], "probabilities": [0.5] * 2, "error": None},
            {"path": "y.png", "digit": None, "confidence": None, "unsure": None, "top3": None, "probabilities": None,
             "error": "y.png: broken"}]
    for fmt in ("jsonl", "csv"):
        out = tmp_path / f"out.{fmt}"
        with RowWriter(out, fmt, "digits") as writer:
            assert not out.exists()  # created on the first rows only
            writer.write(rows[:1])
            writer.write(rows[1:])
        text = out.read_text()
        if fmt == "jsonl":
            assert [json.loads(line) for line in text.splitlines()] == rows
        else:
            table = list(csv.reader(text.splitlines()))
            assert table[0] == list(columns("digits"))
            assert table[1] == ["x,1.png", "3", "0.5", "true", '[{"digit": 3, "probability": 0.5}]', "[0.5, 0.5]", ""]
            assert table[2] == ["y.png", "", "", "", "", "", "y.png: broken"]
        whole = out.read_bytes()
        with open(out, "ab") as fh:
            fh.write(b'"z.png' if fmt == "csv" else b'{"path": "z.p')  # a run killed while writing a row
        assert resume_output(out, fmt, "digits") == {"x,1.png", "y.png"}
        assert out.read_bytes() == whole  # the torn row is cut off
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="not a CSV of this command"):
        resume_output(tmp_path / "other.csv", "csv", "digits")
    (tmp_path / "other.jsonl").write_text("not json\n")
    with pytest.raises(ConfigError, match="line 1 is not a row"):
        resume_output(tmp_path / "other.jsonl", "jsonl", "digits")


def test_run_batch_resume_skips_done_files_and_refuses_to_overwrite(tmp_path: Path) -> None:
    write_images(tmp_path / "imgs", 12)
    spec = ModelSpec(task="numbers")
    full, part = tmp_path / "full.csv", tmp_path / "part.csv"
    summary = run_batch([str(tmp_path / "imgs")], spec, out=full, fmt="csv", chunk_size=5)
    assert (summary.rows, summary.errors, summary.skipped) == (13, 1, 0)
    lines = full.read_text().splitlines(keepends=True)
    part.write_text("".join(lines[:6]) + lines[6][:9])  # 5 rows and a torn sixth
    seen: list[int] = []
    summary = run_batch([str(tmp_path / "imgs")], spec, out=part, fmt="csv", resume=True, chunk_size=5,
                        on_rows=lambda rows: seen.append(len(rows)))
    assert (summary.rows, summary.skipped) == (8, 5) and seen == [5, 3]
    assert part.read_bytes() == full.read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        run_batch([str(tmp_path / "imgs")], spec, out=full, fmt="csv")
    assert full.read_bytes() == part.read_bytes()


def test_cli_killed_run_resumes_to_the_same_file(tmp_path: Path) -> None:
    # One file per chunk (one fsync each): slow enough (seconds) to be killed half-way.
    write_images(tmp_path / "imgs", 2000)
    out, ref = tmp_path / "out.jsonl", tmp_path / "ref.jsonl"
    argv = [sys.executable, "-m", "digitrec", "predict", "imgs", "--out", "out.jsonl", "--jobs", "1",
            "--chunk-size", "1", "-q"]
    proc = subprocess.Popen(argv, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 20):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done = out.read_bytes().count(b"\n")
    assert 20 <= done < 2001, done  # killed in the middle
    with open(out, "ab") as fh:
        fh.write(b'{"path": "imgs/a04')  # as if it had died inside a write
    resumed = run("predict", "imgs", "--out", "out.jsonl", "--resume", "--jobs", "2", "-q", cwd=tmp_path)
    assert resumed.returncode == 1, resumed.stderr  # one file could not be read
    assert f"{done} done before" in resumed.stdout and "1 could not be read" in resumed.stdout
    whole = run("predict", "imgs", "--out", "ref.jsonl", "--jobs", "1", "-q", cwd=tmp_path)
    assert whole.returncode == 1, whole.stderr
    assert out.read_bytes() == ref.read_bytes()
    assert ref.read_bytes().count(b"\n") == 2001
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_cli_folder_to_stdout_matches_single_files_and_bad_input(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "imgs", 3)
    batch = run("predict", "imgs", "--json", "--jobs", "1", cwd=tmp_path)
    single = run("predict", *(str(p.relative_to(tmp_path)) for p in paths), "imgs/" + BAD, "--json", cwd=tmp_path)
    assert batch.returncode == single.returncode == 1
    by_path = {json.loads(line)["path"]: line for line in single.stdout.splitlines()}
    assert sorted(batch.stdout.splitlines()) == sorted(by_path.values())
    assert json.loads(batch.stdout.splitlines()[-1])["path"] == "imgs/" + BAD  # sorted after a0002.png
    text = run("read", "imgs/a000[01].png", "--jobs", "1", "-q", cwd=tmp_path)
    assert text.returncode == 0 and [line.split(":")[0] for line in text.stdout.splitlines()] == \
        ["imgs/a0000.png", "imgs/a0001.png"]
    (tmp_path / "empty").mkdir()
    one_line_error(run("predict", "empty", "--out", "x.jsonl", cwd=tmp_path), "empty: no image files")
    one_line_error(run("predict", "imgs", "--show", "s.png", cwd=tmp_path), "--show takes one image file")
    one_line_error(run("read", "imgs", "--resume", cwd=tmp_path), "--resume needs --out")
    one_line_error(run("predict", "imgs", "--out", "imgs", cwd=tmp_path), "is a directory")
    (tmp_path / "old.csv").write_text("keep me\n")
    one_line_error(run("read", "imgs", "--out", "old.csv", cwd=tmp_path), "already exists")
    assert (tmp_path / "old.csv").read_text() == "keep me\n"
    one_line_error(run("read", "imgs", "--out", "old.csv", "--resume", cwd=tmp_path), "not a CSV of this command")
    usage = run("predict", "imgs", "--jobs", "0", cwd=tmp_path)
    assert usage.returncode == 2 and "--jobs" in usage.stderr
    assert not (tmp_path / "x.jsonl").exists()
