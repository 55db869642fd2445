"""Tests for digitrec.data.datasets: the table, lookup, checksums, folders with classes.txt, the CLI's --dataset."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_idx_bytes, one_line_error, write_mnist_dir
from PIL import Image

from digitrec.data.datasets import (
    DATASETS,
    DIGITS,
    dataset_info,
    dataset_names,
    dataset_status,
    find_dataset_dir,
    load_dataset,
    read_dataset_dir,
)
from digitrec.data.mnist import MNIST_FILES
from digitrec.errors import ConfigError, DatasetError, ModelFileError
from digitrec.fileio import CACHE_DIR_ENV

FASHION = DATASETS["fashion-mnist"]
requires_fashion = pytest.mark.skipif(
    find_dataset_dir(FASHION) is None,
    reason="Fashion-MNIST not found (apt-get install dataset-fashion-mnist, or set DIGITREC_FASHION_MNIST_DIR)",
)
CLOTHES = ("top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "digitrec", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=180, stdin=subprocess.DEVNULL)


def write_classes_dir(directory: Path, names: tuple[str, ...], n_train: int = 40, n_test: int = 20) -> Path:
    """A made-up IDX folder with labels 0..len(names)-1 and its classes.txt."""
    write_mnist_dir(directory, n_train, n_test)
    k = len(names)
    for split, n in (("train", n_train), ("test", n_test)):
        (directory / f"{MNIST_FILES[(split, 'labels')]}.gz").write_bytes(
            gzip.compress(make_idx_bytes((np.arange(n) % k).astype(np.uint8))))
    (directory / "classes.txt").write_text("\n".join(names) + "\n")
    return directory


def with_fashion(monkeypatch: pytest.MonkeyPatch, **changes: object) -> None:
    monkeypatch.setitem(DATASETS, "fashion-mnist", dataclasses.replace(FASHION, **changes))


# --- the table ------------------------------------------------------------------------------


def test_table_rows_are_complete():
    assert dataset_names()[:2] == ["mnist", "fashion-mnist"]
    for info in DATASETS.values():
        assert set(info.sha256) == set(MNIST_FILES.values()), info.name
        assert all(len(h) == 64 and int(h, 16) >= 0 for h in info.sha256.values())
        assert len(info.class_names) == 10 and len(set(info.class_names)) == 10
        assert info.mirrors and all(m.startswith(("http://", "https://")) and m.endswith("/") for m in info.mirrors)
    assert DATASETS["mnist"].class_names == DIGITS
    assert FASHION.class_names[0] == "T-shirt/top" and FASHION.class_names[9] == "Ankle boot"
    assert FASHION.system_dir == "/usr/share/datasets/fashion-mnist" and FASHION.package == "dataset-fashion-mnist"


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="mnist, fashion-mnist"):
        dataset_info("cifar")
    with pytest.raises(ConfigError, match="or a folder of IDX files"):
        load_dataset("no-such-dataset-or-folder")


# --- where a named dataset is found ---------------------------------------------------------


def test_resolution_order_explicit_setting_package_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(FASHION.env, raising=False)
    system, env, explicit = tmp_path / "usr-share", tmp_path / "env", tmp_path / "explicit"
    with_fashion(monkeypatch, system_dir=str(system))
    info = DATASETS["fashion-mnist"]
    assert find_dataset_dir(info) is None
    cache = tmp_path / "cache" / "fashion-mnist"
    write_mnist_dir(cache, 1, 1)
    assert find_dataset_dir(info) == cache
    write_mnist_dir(system, 1, 1)
    assert find_dataset_dir(info) == system  # the package's copy before the cache
    write_mnist_dir(env, 1, 1)
    monkeypatch.setenv(info.env, str(env))
    assert find_dataset_dir(info) == env
    write_mnist_dir(explicit, 1, 1)
    assert find_dataset_dir(info, explicit) == explicit
    (explicit / "t10k-labels-idx1-ubyte.gz").unlink()
    assert find_dataset_dir(info, explicit) is None  # an explicit folder is authoritative: no fallback


def test_wrong_checksum_is_one_line_and_verify_false_reads_it(tmp_path):
    fake = tmp_path / "fake-fashion"
    write_mnist_dir(fake, 20, 10)
    with pytest.raises(DatasetError, match=r"SHA-256 .* expected c59f468a2f67") as exc:
        load_dataset("fashion-mnist", fake, download=False)
    assert "\n" not in str(exc.value)
    data = load_dataset("fashion-mnist", fake, download=False, verify=False)
    assert data.name == "fashion-mnist" and data.class_names == FASHION.class_names
    status = dataset_status("fashion-mnist", fake)
    assert not status.ok and not any(f["ok"] for f in status.files.values())


def test_download_verifies_checksums_and_writes_nothing_bad(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    write_mnist_dir(mirror, 20, 10)  # .gz files, as mirrors serve them
    sums = {base: hashlib.sha256(gzip.decompress((mirror / f"{base}.gz").read_bytes())).hexdigest()
            for base in MNIST_FILES.values()}
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(FASHION.env, raising=False)
    bad = dict(sums, **{"t10k-labels-idx1-ubyte": "0" * 64})
    with_fashion(monkeypatch, system_dir=None, mirrors=(mirror.as_uri() + "/",), sha256=bad)
    with pytest.raises(DatasetError, match="checksum mismatch.*DIGITREC_FASHION_MNIST_DIR"):
        load_dataset("fashion-mnist")
    cache = tmp_path / "cache" / "fashion-mnist"
    assert not (cache / "t10k-labels-idx1-ubyte.gz").exists()
    assert not [p for p in cache.iterdir() if p.suffix == ".tmp"]
    with_fashion(monkeypatch, system_dir=None, mirrors=(mirror.as_uri() + "/",), sha256=sums)
    data = load_dataset("fashion-mnist")
    assert data.directory == cache and data.train_images.shape == (20, 28, 28)
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", tmp_path / "empty", download=False)


@requires_fashion
def test_the_installed_fashion_mnist_verifies():
    status = dataset_status("fashion-mnist")
    assert status.ok, status.files
    assert status.class_counts == {"train": [6000] * 10, "test": [1000] * 10}


# --- a folder of IDX files ------------------------------------------------------------------


def test_folder_with_classes_txt(tmp_path):
    folder = write_classes_dir(tmp_path / "three", ("cat", "dog", "bird"))
    data = load_dataset(folder)
    assert data.class_names == ("cat", "dog", "bird") and data.name == str(folder)
    assert set(data.train_labels.tolist()) == {0, 1, 2} and data.train_labels.dtype == np.int64
    assert dataset_status(folder).class_names == ["cat", "dog", "bird"]
    (folder / "classes.txt").unlink()
    assert load_dataset(folder).class_names == ("0", "1", "2")  # no names: the labels' numbers


@pytest.mark.parametrize(("text", "needle"), [
    ("cat\ndog\n", "names 2 classes, but the labels run 0..2"),
    ("cat\ndog\nbird\nfish\n", "names 4 classes"),
    ("cat\n\nbird\n", "line 2 is empty"),
    ("cat\ncat\nbird\n", "repeat"),
])
def test_bad_classes_txt(tmp_path, text, needle):
    folder = write_classes_dir(tmp_path / "three", ("cat", "dog", "bird"))
    (folder / "classes.txt").write_text(text)
    with pytest.raises(DatasetError, match=needle) as exc:
        read_dataset_dir(folder)
    assert "\n" not in str(exc.value)
    status = dataset_status(folder)
    assert not status.ok and needle.split(",")[0] in str(status.error)


def test_folder_errors(tmp_path):
    folder = write_classes_dir(tmp_path / "three", ("cat", "dog", "bird"))
    (folder / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="missing train-images-idx3-ubyte"):
        load_dataset(folder)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(make_idx_bytes(np.zeros((40, 32, 32), np.uint8))))
    with pytest.raises(DatasetError, match="must be 28x28"):
        load_dataset(folder)
    with pytest.raises(ConfigError, match="--data-dir is for a named dataset"):
        load_dataset(folder, tmp_path)


def test_training_takes_the_class_count_and_stores_the_names(tmp_path):
    from digitrec.cfg.train import TrainConfig
    from digitrec.infer.evaluate import evaluate_model_file
    from digitrec.models.checkpoint import load_model
    from digitrec.train.engine import train

    data = load_dataset(write_classes_dir(tmp_path / "three", ("cat", "dog", "bird")))
    result = train(TrainConfig(epochs=1, batch_size=16, val_size=8, precision="fp32"), data=data, device="cpu")
    path = result.save(tmp_path / "m.safetensors")
    mf = load_model(path, num_classes=3)
    assert mf.class_names == ["cat", "dog", "bird"] and mf.metadata["dataset"]["name"] == str(data.directory)
    run_ = evaluate_model_file(str(path), data, device="cpu")
    assert run_.class_names == ("cat", "dog", "bird") and run_.result.confusion.shape == (3, 3)
    write_mnist_dir(tmp_path / "digits")
    digits = load_dataset(tmp_path / "digits")  # labels 0-9, no classes.txt: a digit dataset
    with pytest.raises(ConfigError, match=r"its classes \(cat, dog, bird\) are not those of"):
        evaluate_model_file(str(path), digits, device="cpu")


def test_reading_numbers_refuses_a_model_of_other_classes(tmp_path):
    import torch

    from digitrec.infer.recogniser import load
    from digitrec.models.checkpoint import save_model
    from digitrec.models.registry import create_model

    torch.manual_seed(0)
    path = save_model(tmp_path / "clothes.safetensors", create_model("seed").eval(), "seed", {},
                      class_names=list(CLOTHES), extra={"dataset": {"name": "fashion-mnist"}})
    rec = load(path, backend="torch", line_reader=None, verifier=None)
    image = np.random.default_rng(0).integers(0, 256, (1, 28, 28), dtype=np.uint8)
    assert rec.predict_arrays(image)[0].digit in range(10)  # classifying still works
    with pytest.raises(ModelFileError, match="a model of fashion-mnist .* not of the digits 0-9"):
        rec.read(np.full((28, 60), 200, np.uint8))


# --- the command line -----------------------------------------------------------------------


def test_cli_folder_dataset_end_to_end(tmp_path):
    folder = write_classes_dir(tmp_path / "clothes", CLOTHES, n_train=60, n_test=20)
    proc = run("data", "--dataset", str(folder), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and report["class_names"] == list(CLOTHES) and report["class_counts"]["test"] == [2] * 10

    samples = tmp_path / "samples.png"
    proc = run("samples", "--dataset", str(folder), "--out", str(samples))
    assert proc.returncode == 0, proc.stderr
    assert Image.open(samples).size[0] > 200

    model = tmp_path / "m.safetensors"
    proc = run("train", "--dataset", str(folder), "--epochs", "1", "--val-size", "10", "--batch-size", "25",
               "--precision", "fp32", "--out", str(model), "--no-plot", "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["model"] == str(model)

    proc = run("evaluate", "--dataset", str(folder), "--model", str(model), "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "on the " + str(folder) + " test set (20 images)" in proc.stdout and "sneaker" in proc.stdout

    # On MNIST (the default): refused from the model's header, before MNIST is looked for or downloaded.
    one_line_error(run("evaluate", "--model", str(model), env={"DIGITREC_DATA_DIR": str(tmp_path / "none")}),
                   "are not those of mnist")

    image = tmp_path / "bar.png"
    picture = np.full((80, 80), 255, np.uint8)
    picture[20:60, 35:45] = 0  # a dark stroke on white paper
    Image.fromarray(picture).save(image)
    line = one_line_error(run("read", "--model", str(model), "--backend", "torch", "--line-reader", "none",
                              "--verifier", "none", str(image)), "not of the digits 0-9")
    assert str(folder) in line  # names the dataset it was trained on

    proc = run("predict", "--model", str(model), "--backend", "torch", str(image))
    assert proc.returncode == 0, proc.stderr
    assert any(f"({name})" in proc.stdout for name in CLOTHES)


def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path):
    folder = write_classes_dir(tmp_path / "three", ("cat", "dog", "bird"))
    (folder / "classes.txt").write_text("cat\ndog\n")
    out = tmp_path / "out"
    out.mkdir()
    one_line_error(run("train", "--dataset", str(folder), "--epochs", "1", "--out", str(out / "m.safetensors")),
                   "names 2 classes")
    one_line_error(run("samples", "--dataset", str(tmp_path / "nowhere"), "--out", str(out / "s.png")),
                   "unknown dataset")
    fake = tmp_path / "fake"
    write_mnist_dir(fake, 20, 10)
    one_line_error(run("train", "--dataset", "fashion-mnist", "--data-dir", str(fake), "--out", str(out / "f.st")),
                   "SHA-256", "c59f468a2f67")
    assert list(out.iterdir()) == []


def test_cli_help_names_the_datasets():
    proc = run("train", "--help")
    assert proc.returncode == 0
    assert "fashion-mnist" in proc.stdout and "classes.txt" in proc.stdout and "fashion" in proc.stdout
