"""The CLI through a subprocess, as users run it: exit codes, one-line errors, outputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import requires_mnist
from PIL import Image, ImageDraw

from digitrec.data.mnist import find_data_dir


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 180):
    return subprocess.run(
        [sys.executable, "-m", "digitrec", *args],
        capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})},
        timeout=timeout, stdin=subprocess.DEVNULL,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory) -> Path:
    """A hand-drawn-looking '1': a dark stroke on white paper, off-centre on a big canvas."""
    path = tmp_path_factory.mktemp("img") / "one.png"
    img = Image.new("RGB", (240, 180), "white")
    ImageDraw.Draw(img).line([(150, 30), (150, 150)], fill="black", width=12)
    img.save(path)
    return path


@pytest.fixture(scope="module")
def quick_model(tmp_path_factory) -> Path:
    """A model trained by the CLI in a couple of seconds on 1,200 MNIST images."""
    if find_data_dir() is None:
        pytest.skip("MNIST not available")
    out = tmp_path_factory.mktemp("model") / "quick.safetensors"
    proc = run("train", "--limit", "1200", "--val-size", "200", "--epochs", "1", "--out", str(out),
               "--no-plot", "--json", "-q", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["model"] == str(out) and report["epochs_completed"] == 1
    assert report["threads"] == 1
    assert 0.0 <= report["test_accuracy"] <= 1.0
    return out


@pytest.mark.parametrize("command", ["", "data", "samples", "summary", "train", "evaluate", "predict", "ensemble",
                                     "models"])
def test_help_everywhere(command: str) -> None:
    proc = run(*([command] if command else []), "--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: digitrec")


def test_version() -> None:
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("digitrec ")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--threads", "0"], "--threads"),
        (["calibrate", "--model", "seed", "--threads", "x"], "--threads"),
        (["train", "--lr", "-1"], "--lr"),
        (["train", "--batch-size", "x"], "--batch-size"),
        (["train", "--precision", "fp8"], "--precision"),
        (["evaluate", "--split", "val"], "--split"),
        (["predict", "--mnist-index", "-3"], "--mnist-index"),
        (["nosuchcommand"], "invalid choice"),
    ],
)
def test_bad_flags_are_one_line_usage_errors(args: list[str], needle: str) -> None:
    assert_one_line_error(run(*args), 2, needle)


def test_missing_command_is_an_error() -> None:
    assert_one_line_error(run(), 2, "required")


def test_debug_shows_traceback(tmp_path: Path) -> None:
    proc = run("--debug", "predict", "--model", str(tmp_path / "nope.safetensors"), "x.png")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_unknown_arch(tmp_path: Path) -> None:
    assert_one_line_error(run("summary", "--arch", "nope"), 1, "unknown architecture", "seed")


def test_summary_table_and_diagram(tmp_path: Path) -> None:
    proc = run("summary", "--diagram", str(tmp_path / "model.svg"))
    assert proc.returncode == 0, proc.stderr
    assert "Total params: 225,034 (879.04 KB)" in proc.stdout
    for shape in ("(None, 32, 26, 26)", "(None, 64, 5, 5)", "(None, 1600)", "(None, 10)"):
        assert shape in proc.stdout
    assert b"<svg" in (tmp_path / "model.svg").read_bytes()[:2000]


def test_summary_json() -> None:
    proc = run("summary", "--json")
    report = json.loads(proc.stdout)
    assert report["total_params"] == 225_034
    assert [l["output_shape"] for l in report["layers"] if l["params"]] == [[32, 26, 26], [64, 11, 11], [128], [10]]


def test_bad_diagram_suffix_leaves_nothing(tmp_path: Path) -> None:
    assert_one_line_error(run("summary", "--diagram", str(tmp_path / "m.xyz")), 1, ".xyz")
    assert list(tmp_path.iterdir()) == []


@requires_mnist
def test_data_report() -> None:
    proc = run("data", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True
    assert report["class_counts"]["test"] == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert report["files"]["train-images-idx3-ubyte"]["shape"] == [60000, 28, 28]


def test_data_missing_says_where_to_put_files(tmp_path: Path) -> None:
    env = {"DIGITREC_DATA_DIR": str(tmp_path / "empty"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    assert_one_line_error(run("data", env=env), 1, "DIGITREC_DATA_DIR")


@requires_mnist
def test_samples(tmp_path: Path) -> None:
    out = tmp_path / "samples.png"
    proc = run("samples", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "(60000, 28, 28)" in proc.stdout
    assert Image.open(out).size[0] > 200


@requires_mnist
def test_train_writes_model_and_curves(tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    proc = run("train", "--limit", "600", "--val-size", "100", "--epochs", "2", "--out", str(out), "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    assert "Epoch 2/2:" in proc.stderr and "val_accuracy" in proc.stderr
    assert out.is_file() and (tmp_path / "m-history.png").is_file()
    assert "test:" in proc.stdout and "saved model to" in proc.stdout
    assert leftovers(tmp_path) == []


def test_train_refuses_directory_as_output(tmp_path: Path) -> None:
    assert_one_line_error(run("train", "--out", str(tmp_path)), 1, "directory")


@requires_mnist
def test_ctrl_c_keeps_last_completed_epoch(tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    proc = subprocess.Popen(
        [sys.executable, "-m", "digitrec", "train", "--limit", "3000", "--val-size", "100", "--epochs", "500",
         "--out", str(out), "--no-plot", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        # A shell's background job (`make test &`) ignores SIGINT, and children inherit that, so
        # Python would never raise KeyboardInterrupt; give the child the default, as a terminal does.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        # Off a terminal there are no bars, only one line per completed epoch: wait for the first
        # (skipping anything else a library might print first).
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if line.startswith("Epoch 1/500:"):
                break
        assert seen and seen[-1].startswith("Epoch 1/500:"), seen
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    report = json.loads(stdout)
    assert report["interrupted"] is True and 1 <= report["epochs_completed"] < 500
    from digitrec.models.checkpoint import read_metadata

    meta = read_metadata(out)
    assert meta["interrupted"] is True and len(meta["history"]) == report["epochs_completed"]
    assert leftovers(tmp_path) == []


@requires_mnist
def test_evaluate_json_and_plots(quick_model: Path, tmp_path: Path) -> None:
    proc = run("evaluate", "--model", str(quick_model), "--json", "--confusion", str(tmp_path / "c.png"),
               "--errors", str(tmp_path / "e.png"))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert 0.5 < report["accuracy"] <= 1.0 and report["loss"] > 0
    assert np.asarray(report["confusion_matrix"]).sum() == 10_000
    assert (tmp_path / "c.png").is_file() and (tmp_path / "e.png").is_file()


@requires_mnist
def test_bundled_model_meets_its_claim(tmp_path: Path) -> None:
    # Run where nothing should appear: evaluate writes figures only when asked for them.
    proc = run("evaluate", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["accuracy"] >= 0.99
    assert "confusion_plot" not in report and list(tmp_path.iterdir()) == []
    text = run("evaluate").stdout
    assert "precision" in text and "confusion matrix" in text


@requires_mnist
@pytest.mark.parametrize("name", ["best", "ensemble"])
def test_bundled_accuracy_models_meet_their_claims(name: str) -> None:
    from digitrec.models.checkpoint import read_metadata

    claimed = read_metadata(name)["metrics"]["test_accuracy"]
    proc = run("evaluate", "--model", name, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    # The file records the test accuracy measured when it was made (bf16 autocast on the
    # training machine); fp32 or another CPU may differ by an image or two.
    assert abs(report["accuracy"] - claimed) <= 2e-4
    assert report["accuracy"] >= 0.996


@pytest.mark.parametrize(
    "content, needle",
    [(b"", "not a digitrec model"), (b"garbage" * 100, "not a digitrec model")],
)
def test_corrupt_model_file(tmp_path: Path, digit_png: Path, content: bytes, needle: str) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(content)
    assert_one_line_error(run("predict", "--model", str(bad), str(digit_png)), 1, needle)


def test_missing_model(digit_png: Path) -> None:
    assert_one_line_error(run("predict", "--model", "nope", str(digit_png)), 1, "nope")


def test_predict_image_file(digit_png: Path) -> None:
    proc = run("predict", str(digit_png), "--json")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["path"] == str(digit_png) and record["digit"] == 1
    assert 0 < record["confidence"] <= 1 and len(record["top3"]) == 3


def test_batch_predict_goes_on_past_bad_files(tmp_path: Path, digit_png: Path) -> None:
    text_file = tmp_path / "notes.png"
    text_file.write_text("not an image")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(digit_png.read_bytes()[:200])
    # (A folder among the inputs is read as a batch: tests/test_batch.py.)
    proc = run("predict", str(digit_png), str(tmp_path / "missing.png"), str(text_file),
               str(truncated), str(digit_png), "--json")
    assert proc.returncode == 1
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [("error" in r) for r in records] == [False, True, True, True, False]
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("digitrec: error: ") for e in errors)
    assert "Traceback" not in proc.stderr


@requires_mnist
def test_predict_mnist_index_and_show(tmp_path: Path) -> None:
    proc = run("predict", "--mnist-index", "0", "--json", "--show", str(tmp_path / "p.png"))
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["true_label"] == 7 and record["digit"] == 7 and record["path"] == "mnist:test:0"
    assert Image.open(tmp_path / "p.png").format == "PNG"


@requires_mnist
def test_predict_random_is_seedable() -> None:
    a, b = (run("predict", "--random", "--seed", "5", "--json").stdout for _ in range(2))
    assert a == b and json.loads(a)["path"].startswith("mnist:test:")


def test_predict_needs_an_input() -> None:
    assert_one_line_error(run("predict"), 1, "--mnist-index")


def test_models_lists_seed() -> None:
    proc = run("models", "--json")
    assert proc.returncode == 0
    listing = json.loads(proc.stdout)
    assert "seed" in [a["name"] for a in listing["architectures"]]
    assert {"seed", "best", "ensemble"} <= {b["name"] for b in listing["bundled"]}


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--history-plot", "curves.jpg", "--out", "m.safetensors"],
        ["evaluate", "--confusion", "c.bmp"],
        ["samples", "--out", "s.gif"],
        ["predict", "--mnist-index", "0", "--show", "p.tiff"],
    ],
)
def test_bad_figure_name_fails_before_any_work(tmp_path: Path, args: list[str]) -> None:
    """A typo in a figure's name must not cost a training run or leave a model behind."""
    proc = run(*args, cwd=tmp_path, env={"DIGITREC_DATA_DIR": str(tmp_path / "no-data")})
    assert_one_line_error(proc, 1, "unsupported plot format")
    assert list(tmp_path.iterdir()) == []


def test_one_file_for_two_outputs_is_refused_before_training(tmp_path: Path) -> None:
    proc = run("train", "--out", "same.png", "--history-plot", "same.png", cwd=tmp_path,
               env={"DIGITREC_DATA_DIR": str(tmp_path / "no-data")})
    assert_one_line_error(proc, 1, "two outputs")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_fails_before_any_work(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    target = blocker / "model.safetensors"  # a folder that can never be created
    proc = run("train", "--out", str(target), env={"DIGITREC_DATA_DIR": str(tmp_path / "no-data")})
    assert_one_line_error(proc, 1, str(target))  # the user's path, not a temporary name


def test_seed_range_and_exclusive_inputs() -> None:
    assert_one_line_error(run("train", "--seed", str(2**64)), 2, "--seed")
    assert_one_line_error(run("predict", "--mnist-index", "1", "--random"), 2, "not allowed")


# --- real-world input (issue 5) -----------------------------------------------------------------


def _number_png(tmp_path: Path) -> Path:
    from PIL import Image, ImageDraw

    img = Image.new("L", (400, 160), 235)
    d = ImageDraw.Draw(img)
    d.line([(50, 30), (50, 120)], fill=20, width=8)
    d.ellipse([100, 30, 170, 120], outline=20, width=8)
    d.line([(220, 30), (290, 30), (250, 120)], fill=20, width=8)
    path = tmp_path / "number.png"
    img.save(path)
    return path


def test_read_json_and_show(tmp_path: Path) -> None:
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.new("L", (80, 60), 255).save(blank)
    number = _number_png(tmp_path)
    r = run("read", str(number), str(blank), "--json")
    assert r.returncode == 0, r.stderr
    first, second = (json.loads(line) for line in r.stdout.splitlines())
    assert first["path"] == str(number) and first["number"] == "107" and len(first["digits"]) == 3
    assert second == {"path": str(blank), "number": None, "confidence": 0.0, "unsure": True, "digits": []}
    shown = tmp_path / "read.png"
    r = run("read", str(number), "--show", str(shown), "--min-confidence", "1")
    assert r.returncode == 0 and "107" in r.stdout and "UNSURE" in r.stdout and shown.stat().st_size > 0


def test_read_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    r = run("read", str(bad), str(_number_png(tmp_path)))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "107" in r.stdout
    r = run("read", str(bad), "--min-confidence", "2")
    assert r.returncode == 2 and "from 0 to 1" in r.stderr


def test_formats_outside_the_allow_list_are_one_line_errors(tmp_path: Path, digit_png: Path) -> None:
    paths = []
    for fmt, mode in (("EPS", "L"), ("PPM", "RGB"), ("PPM", "L")):  # PPM of a grey image is PGM
        path = tmp_path / f"one-{mode}.{fmt.lower()}"
        Image.open(digit_png).convert(mode).save(path, format=fmt)
        paths.append(str(path))
    proc = run("predict", *paths, "--json")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 3
    for path, error in zip(paths, errors):
        assert path in error and "not a recognised image format" in error and "PNG, JPEG" in error
    assert_one_line_error(run("read", paths[0]), 1, "not a recognised image format")


def test_read_a_48_megapixel_photo_with_boxes_in_its_pixels(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    img = Image.new("L", (8000, 6000), 240)  # over the 40 MP limit: a JPEG is read at half size
    ImageDraw.Draw(img).line([(3000, 2000), (4400, 2000), (3600, 4400)], fill=20, width=240)
    img.save(photo, quality=85)
    shown = tmp_path / "read.png"
    r = run("read", str(photo), "--json", "--show", str(shown))
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout)
    assert record["number"] == "7"
    # The stroke spans x 3000..4514, y 1881..4438 of the 8000x6000 file.
    # The grey reader finds columns at 32 px line height (here ~80 photo pixels a line pixel), then fits
    # the box to the ink: within 100 px; a box left in the half-size decoding would be ~1,500 px off.
    np.testing.assert_allclose(record["digits"][0]["box"], [3000, 1881, 1515, 2558], atol=100)
    assert shown.stat().st_size > 0


def test_predict_blank_is_no_digit_and_show_input(tmp_path: Path) -> None:
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.new("L", (80, 60), 255).save(blank)
    r = run("predict", str(blank), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["digit"] is None
    seen = tmp_path / "seen.png"
    r = run("predict", str(_number_png(tmp_path)), "--show-input", str(seen))
    assert r.returncode == 0, r.stderr
    assert Image.open(seen).size == (28, 28)


@requires_mnist
def test_calibrate_keeps_weights(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from digitrec.models.checkpoint import bundled_models, read_metadata

    out = tmp_path / "cal.safetensors"
    r = run("calibrate", "--model", "seed", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["ece_after"] <= report["ece_before"] and report["nll_after"] <= report["nll_before"]
    a, b = load_file(bundled_models()["seed"]), load_file(out)
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    assert read_metadata(out)["temperature"] == pytest.approx(report["temperature"])


def test_calibrate_refuses_to_overwrite_a_bundled_model_or_a_recipe_less_file(tmp_path: Path,
                                                                              tiny_model_file: Path) -> None:
    bundled = run("calibrate", "--model", "seed")
    assert bundled.returncode == 1
    assert bundled.stderr.strip() == "digitrec: error: seed is a bundled model; give --out FILE for the calibrated copy"
    bare = run("calibrate", "--model", str(tiny_model_file), "--out", str(tmp_path / "c.safetensors"))
    assert bare.returncode == 1 and "no training recipe stored" in bare.stderr
    assert not (tmp_path / "c.safetensors").exists()


def test_threads_flag_is_restored_after_an_in_process_main(tmp_path: Path) -> None:
    import torch

    from digitrec.cli.main import main

    before = torch.get_num_threads()
    torch.set_num_threads(3)  # not 1, so that leaking --threads 1 would show
    try:
        # A bundled model without --out is refused, after the thread count was set.
        assert main(["calibrate", "--model", "seed", "--threads", "1", "--data-dir", str(tmp_path)]) == 1
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
