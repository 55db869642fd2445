"""Fine-tuning on a user's own labelled images: data checks, augmentation, tiny runs, the model file, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import requires_mnist
from PIL import Image, ImageDraw
from test_cli import assert_one_line_error

import digitrec
from digitrec.data.paper import _font
from digitrec.errors import ConfigError, DatasetError
from digitrec.models.checkpoint import load_model, read_metadata
from digitrec.read.linereader import bundled_line_reader
from digitrec.train.finetune import KIND_DEFAULTS, FinetuneConfig, augment_scan, finetune, load_labelled

NUMBERS = ["12", "305", "7", "4821", "90", "66", "1234", "58", "703", "19", "2", "840"]


def _number_png(path: Path, text: str, shade: int = 200) -> None:
    """A printed-looking number on grey paper, about 40 px tall, as a cheque amount is cut out."""
    font = _font(30)
    img = Image.new("L", (24 + 22 * len(text), 48), shade)
    ImageDraw.Draw(img).text((12, 6), text, fill=30, font=font)
    img.save(path)


@pytest.fixture(scope="module")
def numbers_csv(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("numbers")
    (folder / "images").mkdir()
    rows = ["file,label"]
    for i, text in enumerate(NUMBERS):
        _number_png(folder / "images" / f"n{i}.png", text, shade=170 + 5 * i)
        rows.append(f"images/n{i}.png,{text}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder / "labels.csv"


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("digits")
    for d in range(10):
        (folder / str(d)).mkdir()
        for k, size in enumerate((34, 40)):
            img = Image.new("L", (48, 56), 235)
            ImageDraw.Draw(img).text((10, 4), str(d), fill=20, font=_font(size))
            img.save(folder / str(d) / f"{k}.png")
    return folder


def _write_csv(folder: Path, rows: list[str]) -> Path:
    path = folder / "labels.csv"
    path.write_text("file,label\n" + "\n".join(rows) + "\n")
    return path


# --- the data ----------------------------------------------------------------------------------------


def test_a_csv_of_numbers_is_loaded_in_order_with_a_digest(numbers_csv):
    data = load_labelled(numbers_csv)
    assert data.kind == "numbers" and len(data) == len(NUMBERS)
    assert data.labels == tuple(NUMBERS) and data.files[0] == "images/n0.png"
    assert all(img.ndim == 2 and img.dtype == np.float32 for img in data.images)
    assert len(data.sha256) == 64 and data.sha256 == load_labelled(numbers_csv).sha256
    assert data.summary()["images"] == len(NUMBERS)


def test_leading_zeros_are_kept(tmp_path, numbers_csv):
    path = _write_csv(tmp_path, [f"{numbers_csv.parent}/images/n0.png,0012"])
    assert load_labelled(path).labels == ("0012",)


def test_bad_rows_are_listed_with_their_line_numbers(tmp_path, numbers_csv):
    (tmp_path / "broken.png").write_bytes(b"not a picture")
    good = f"{numbers_csv.parent}/images/n1.png"
    other = f"{numbers_csv.parent}/images/n2.png"
    path = _write_csv(tmp_path, [f"{good},305", "missing.png,12", f"{good},305", f"{other},7a", "broken.png,4"])
    with pytest.raises(DatasetError) as info:
        load_labelled(path)
    message = str(info.value)
    assert "\n" not in message and "4 bad row(s)" in message and "--skip-bad" in message
    assert "line 3: missing.png: no such file" in message
    assert "line 4:" in message and "listed twice" in message
    assert "line 5: label '7a' is not digits" in message
    assert "line 6: broken.png" in message


def test_skip_bad_keeps_the_good_rows_and_says_what_it_left_out(tmp_path, numbers_csv):
    good = f"{numbers_csv.parent}/images/n1.png"
    data = load_labelled(_write_csv(tmp_path, [f"{good},305", "missing.png,12"]), skip_bad=True)
    assert data.labels == ("305",) and len(data.skipped) == 1 and data.skipped[0].startswith("line 3")


@pytest.mark.parametrize("text, needle", [("", "empty CSV"), ("name,digits\nx.png,1\n", "header 'file,label'"),
                                          ("file,label\n", "no labelled images")])
def test_a_csv_that_is_not_file_label_is_refused(tmp_path, text, needle):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(DatasetError, match=needle):
        load_labelled(path)


def test_an_image_folder_of_digits(digit_folder, tmp_path):
    data = load_labelled(digit_folder)
    assert data.kind == "digits" and len(data) == 20 and sorted(set(data.labels)) == [str(d) for d in range(10)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no labelled images"):
        load_labelled(tmp_path / "empty")
    (tmp_path / "cats").mkdir()
    (tmp_path / "3").mkdir()
    with pytest.raises(DatasetError, match="'cats', 'empty' are not 0-9"):
        load_labelled(tmp_path)
    with pytest.raises(DatasetError, match="no such CSV file or folder"):
        load_labelled(tmp_path / "nowhere.csv")


def test_too_few_images_for_the_validation_share(tmp_path, numbers_csv):
    data = load_labelled(_write_csv(tmp_path, [f"{numbers_csv.parent}/images/n1.png,305"]))
    with pytest.raises(DatasetError, match="cannot hold out"):
        finetune(data, config=FinetuneConfig(replay=0.0, epochs=1))


@pytest.mark.parametrize("change", [{"val_size": 0.0}, {"val_size": 1.0}, {"epochs": 0}, {"lr": -1.0},
                                    {"replay": -0.5}, {"precision": "fp8"}, {"patience": -1},
                                    {"keep": "first"}])
def test_config_is_validated(change):
    with pytest.raises(ConfigError):
        FinetuneConfig(**change).validate()


def test_replay_loads_mnist_itself_when_not_given(numbers_csv, monkeypatch):
    """As train() does; a failure to find MNIST is its own one-line DatasetError."""
    ft = sys.modules["digitrec.train.finetune"]  # the module (digitrec.finetune is the function)

    def no_mnist():
        raise DatasetError("MNIST not found")

    monkeypatch.setattr(ft, "load_mnist", no_mnist)
    with pytest.raises(DatasetError, match="MNIST not found"):
        finetune(numbers_csv, config=FinetuneConfig(replay=0.5, epochs=1))
    # Without replay, MNIST is not needed.
    assert finetune(numbers_csv, config=FinetuneConfig(replay=0.0, epochs=1, batch_size=4)).metrics["epochs"] == 1


# --- augmentation ------------------------------------------------------------------------------------


def test_augment_scan_varies_the_picture_within_range_and_is_seeded(numbers_csv):
    gray = load_labelled(numbers_csv).images[3]
    a = augment_scan(gray, np.random.default_rng(1))
    b = augment_scan(gray, np.random.default_rng(1))
    c = augment_scan(gray, np.random.default_rng(2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.dtype == np.float32 and a.min() >= 0.0 and a.max() <= 1.0
    assert 0.6 * gray.shape[1] < a.shape[1] < 1.6 * gray.shape[1]
    # The ink is still there and still dark on light paper.
    assert np.median(a) > 0.5 and a.min() < 0.45


# --- tiny runs ---------------------------------------------------------------------------------------


def test_finetuning_the_line_reader_writes_a_model_read_uses(numbers_csv, tmp_path):
    seen = []
    config = FinetuneConfig(epochs=2, batch_size=4, replay=0.0, val_size=0.25, precision="fp32", patience=0)
    result = finetune(numbers_csv, config=config, progress=lambda e, n, h: seen.append((e, n, h["val_exact"])))
    assert [s[:2] for s in seen] == [(1, 2), (2, 2)]
    m = result.metrics
    assert m["val_images"] == 3 and m["train_images"] == 9 and m["epochs"] == 2
    assert 0.0 <= m["val_before"] <= 1.0 and 0.0 <= m["val_after"] <= 1.0
    path = result.save(tmp_path / "mine.safetensors")
    meta = read_metadata(path)
    assert meta["input"] == "paper" and meta["finetune"]["data"]["sha256"] == load_labelled(numbers_csv).sha256
    assert meta["finetune"]["config"]["batch_size"] == 4 and len(meta["finetune"]["history"]) == 2
    # The fields left open are stored as the kind's defaults they took.
    assert meta["finetune"]["config"]["lr"] == KIND_DEFAULTS["numbers"]["lr"]
    assert load_model(path, num_classes=11, task="lines").temperature == pytest.approx(result.temperature)
    # The file is a number reader like the bundled one: digitrec.load takes it as the model.
    rec = digitrec.load(path)
    reading = rec.read(str(numbers_csv.parent / "images" / "n1.png"))
    assert reading.number is None or reading.number.isdigit()
    assert rec.predict(np.zeros((28, 28), np.float32)).digit is None  # single digits: the bundled digit model
    with pytest.raises(digitrec.ModelFileError, match="line reader"):
        digitrec.load(path, line_reader=None)


@pytest.mark.parametrize("keep", ["best", "last"])
def test_the_kept_model_is_the_chosen_epoch_or_the_start(numbers_csv, keep):
    # A learning rate this small leaves the weights about where they were: an epoch may or may not beat the start.
    config = FinetuneConfig(epochs=2, batch_size=4, replay=0.0, val_size=0.25, lr=1e-9, precision="fp32", keep=keep)
    result = finetune(numbers_csv, config=config)
    m = result.metrics
    scores, start = [h["val_exact"] for h in result.history], m["val_start"]  # what the epochs had to beat
    assert m["best_epoch"] == (1 + scores.index(max(scores)) if max(scores) > start else 0)
    if keep == "best":
        assert m["kept_epoch"] == m["best_epoch"]
    else:
        assert m["kept_epoch"] == (2 if scores[-1] >= start else 0)
    if m["kept_epoch"] == 0:
        base = load_model(bundled_line_reader(), num_classes=11, task="lines")
        for k, v in base.model.state_dict().items():
            assert np.array_equal(v.numpy(), result.model.state_dict()[k].numpy()), k


def test_finetuning_a_digit_model_on_an_image_folder(digit_folder, tmp_path):
    config = FinetuneConfig(epochs=2, batch_size=8, replay=0.0, val_size=0.2, precision="fp32")
    result = finetune(digit_folder, "seed", config)
    m = result.metrics
    assert m["val_images"] == 4 and m["train_images"] == 16 and "mnist_test_before" not in m
    path = result.save(tmp_path / "digits.safetensors")
    meta = read_metadata(path)
    assert meta["arch"] == "seed" and meta["finetune"]["data"]["kind"] == "digits"
    pred = digitrec.load(path).predict(str(digit_folder / "7" / "0.png"))
    assert pred.digit is None or 0 <= pred.digit <= 9


@pytest.fixture(scope="module")
def relabelled_digits(tmp_path_factory) -> Path:
    """Printed digits filed one class up (a 3 under 4/): the start reads none right, so epochs differ."""
    folder = tmp_path_factory.mktemp("relabelled")
    for d in range(10):
        (folder / str((d + 1) % 10)).mkdir()
        for k, size in enumerate((30, 34, 40, 44)):
            img = Image.new("L", (48, 56), 235)
            ImageDraw.Draw(img).text((8, 2), str(d), fill=20, font=_font(size))
            img.save(folder / str((d + 1) % 10) / f"{k}.png")
    return folder


@pytest.mark.parametrize("keep", ["best", "last"])
def test_a_digit_model_keeps_the_chosen_epoch_or_the_start(relabelled_digits, keep):
    config = FinetuneConfig(epochs=4, batch_size=8, replay=0.0, val_size=0.25, lr=5e-3, precision="fp32", keep=keep)
    result = finetune(relabelled_digits, "seed", config)
    m, scores = result.metrics, [h["val_exact"] for h in result.history]
    assert m["val_before"] < max(scores)  # the epochs learnt the new filing: there is a choice to make
    if keep == "last":
        assert m["kept_epoch"] == (4 if scores[-1] >= m["val_before"] else 0)
    else:
        assert m["kept_epoch"] == m["best_epoch"] > 0 and scores[m["best_epoch"] - 1] == max(scores)
    # The model holds the kept epoch's weights: it reads the validation share as that epoch did.
    assert m["val_after"] == pytest.approx(scores[m["kept_epoch"] - 1] if m["kept_epoch"] else m["val_before"])


@requires_mnist
def test_replay_mixes_mnist_in_and_mnist_is_measured_before_and_after(digit_folder, real_mnist):
    config = FinetuneConfig(epochs=1, batch_size=8, replay=1.0, val_size=0.2, precision="fp32")
    m = finetune(digit_folder, "seed", config, mnist=real_mnist).metrics
    assert m["replayed_images"] == 16
    assert m["mnist_test_before"] > 0.98 and 0.0 < m["mnist_test_after"] <= 1.0


@requires_mnist
def test_line_replay_runs_with_generated_lines(numbers_csv, real_mnist):
    config = FinetuneConfig(epochs=1, batch_size=4, replay=0.5, val_size=0.25, precision="fp32")
    assert finetune(numbers_csv, config=config, mnist=real_mnist).metrics["epochs"] == 1


# --- the CLI -----------------------------------------------------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "digitrec", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ}, timeout=300, stdin=subprocess.DEVNULL)


def test_cli_finetune_then_read(numbers_csv, tmp_path):
    proc = _cli("finetune", str(numbers_csv), "--epochs", "1", "--batch-size", "4", "--replay", "0",
                "--val-size", "0.25", "--keep", "best", "--out", "mine.safetensors", "--json", "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["model"] == "mine.safetensors" and out["data"]["images"] == len(NUMBERS) and out["val_images"] == 3
    assert out["kept_epoch"] == out["best_epoch"] in (0, 1)  # --keep best reached the config
    proc = _cli("read", "--model", "mine.safetensors", str(numbers_csv.parent / "images" / "n0.png"), "--json",
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "number" in json.loads(proc.stdout)


def test_cli_finetune_refuses_bad_rows_and_writes_nothing(tmp_path, numbers_csv):
    path = _write_csv(tmp_path, [f"{numbers_csv.parent}/images/n1.png,305", "gone.png,1", "x.png,1-2"])
    proc = _cli("finetune", str(path), "--replay", "0", "--out", "never.safetensors", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "line 3: gone.png: no such file" in lines[0] and "line 4" in lines[0]
    assert not (tmp_path / "never.safetensors").exists()
    proc = _cli("finetune", str(path), "--replay", "0", "--val-size", "1.5", cwd=tmp_path)
    assert_one_line_error(proc, 2, "--val-size")  # refused while parsing the flags, before any work


@pytest.mark.parametrize("metrics, words", [
    ({"kept_epoch": 60, "epochs": 60, "best_epoch": 28}, "kept epoch 60 of 60; best on validation: epoch 28"),
    ({"kept_epoch": 0, "epochs": 60, "best_epoch": 0}, "kept the starting weights"),
])
def test_cli_says_which_epoch_was_kept(metrics, words):
    from digitrec.cli.train import _kept

    assert _kept(metrics).startswith(words)
