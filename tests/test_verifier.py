"""Tests for digitrec.read.verifier: labelling the segmenter's candidates, training and using the verifier."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import requires_mnist
from test_numbers import confidences, draw_number

from digitrec.data.preprocess import ink_map
from digitrec.errors import ConfigError, ModelFileError
from digitrec.infer.recogniser import load
from digitrec.models.checkpoint import bundled_models, load_model
from digitrec.read.segment import Candidate, candidates, segment
from digitrec.read.verifier import PIECE_CLASSES, VerifierConfig, bundled_verifier, whole_digit_scorer
from digitrec.train.verifier import align, label_candidates, save_verifier, train_verifier


def cand(start: int, end: int, score: float = 0.0) -> Candidate:
    return Candidate(start=start, end=end, box=(start, 0, end - start, 1), input=np.zeros((28, 28), np.float32),
                     score=score)


def one_hot(*digits: int) -> np.ndarray:
    return np.eye(10, dtype=np.float32)[list(digits)]


def test_align_picks_the_best_chain_that_reads_true():
    # Pieces 0, 1, 2. Candidates: [0], [1], [2], [0-1], [1-2], read as 7, 1, 4, 4, 1.
    cands = [cand(0, 1), cand(1, 2), cand(2, 3), cand(0, 2, score=1.0), cand(1, 3)]
    probs = one_hot(7, 1, 4, 4, 1)
    assert align(cands, [7, 1, 4], 3, probs) == {0, 1, 2}
    assert align(cands, [4, 4], 3, probs) == {3, 2}
    assert align(cands, [7, 1], 3, probs) == {0, 4}
    # Only [0]+[1-2] reads "71"; nothing at all reads "99".
    assert align(cands, [9, 9], 3, probs) is None
    # Two chains read true: the higher total score wins.
    tie = [cand(0, 1), cand(1, 2), cand(0, 2, score=-1.0), cand(0, 2, score=2.0)]
    assert align(tie, [3], 2, one_hot(5, 5, 3, 3)) == {3}


def test_whole_of_one_changes_nothing_and_doubt_on_runs_splits(seed):
    image = ink_map(draw_number())
    plain = segment(image, confidences(seed))
    same = segment(image, confidences(seed), whole=lambda x: np.ones(len(x)))
    assert [p.box for p in plain] == [p.box for p in same]
    cands, count = candidates(image, confidences(seed))
    assert count >= 3 and len(cands) > count  # runs of several pieces are candidates too
    # A verifier sure that nothing wider than one piece is a digit: more, smaller digits.
    single = np.array([1.0 if c.end - c.start == 1 else 1e-9 for c in cands])  # same order as segment's
    split = segment(image, confidences(seed), whole=lambda x: single)
    assert len(plain) < len(split) <= count


@pytest.fixture(scope="module")
def seed():
    return load("seed", verifier=None)


def test_a_missing_verifier_is_a_clear_error(tmp_path):
    with pytest.raises(ModelFileError, match="piece verifier: .*no such piece verifier file") as info:
        load("seed", verifier=tmp_path / "missing.safetensors")
    assert "bundled models" not in str(info.value) and "train-verifier" in str(info.value)
    with pytest.raises(ConfigError, match="at least 6 digit images"):
        label_candidates(lambda x: np.full((len(x), 10), 0.1), np.zeros((3, 28, 28), np.uint8), np.zeros(3),
                         VerifierConfig(lines=1))


def test_config_is_validated():
    with pytest.raises(ConfigError, match="lines must be"):
        VerifierConfig(lines=0).validate()
    with pytest.raises(ConfigError, match="touching"):
        VerifierConfig(touching=(1.5,)).validate()
    with pytest.raises(ConfigError, match="val fraction"):
        VerifierConfig(val_fraction=1.0).validate()
    assert VerifierConfig().train_config().model_config["num_classes"] == 2
    assert VerifierConfig().train_config().num_classes == 2
    # The MNIST trainer refuses a two-class recipe: its labels are ten digits.
    from digitrec.train.engine import train

    with pytest.raises(ConfigError, match="has 10 classes; this recipe has num_classes 2"):
        train(VerifierConfig().train_config())


def test_train_save_load_and_score(tmp_path):
    # Made-up candidates: "whole digits" are bright squares, the rest dim noise.
    rng = np.random.default_rng(0)
    x = (rng.random((400, 28, 28)) * 60).astype(np.uint8)
    y = (np.arange(400) % 2).astype(np.int64)
    x[y == 1, 8:20, 8:20] = 255
    config = VerifierConfig(lines=1, epochs=3, batch_size=32, lr=5e-3)
    result = train_verifier(x, y, config, device=torch.device("cpu"))
    assert result.val is not None and result.val.accuracy > 0.9
    path = save_verifier(tmp_path / "v.safetensors", result, config, labelled_with="seed",
                         candidates_count=len(y), positive_fraction=0.5, skipped_lines=0)
    mf = load_model(path, num_classes=2)
    assert mf.class_names == PIECE_CLASSES and mf.metadata["role"] == "piece verifier"
    whole = whole_digit_scorer(mf, torch.device("cpu"))
    p = whole(x[:20].astype(np.float32) / 255)
    assert p.shape == (20,) and ((p >= 0) & (p <= 1)).all()
    assert (p[y[:20] == 1] > 0.5).all() and (p[y[:20] == 0] < 0.5).all()
    # A verifier is not a digit model, and a digit model is not a verifier.
    with pytest.raises(ModelFileError, match="ten strings"):
        load(path, verifier=None)
    with pytest.raises(ModelFileError, match="piece verifier: .*list of 2 strings; it has 10 classes"):
        load("seed", verifier=bundled_models()["seed"])
    relabelled = load_model("seed")
    relabelled.class_names[:] = ["a", "b"]  # two classes, but not the verifier's
    with pytest.raises(ModelFileError, match="not a piece verifier"):
        whole_digit_scorer(relabelled, torch.device("cpu"))


def test_bundled_verifier_is_used_by_default():
    path = bundled_verifier()
    assert path is not None and path.is_file()
    assert load("seed", line_reader="none").verifier is not None  # the segmenter's default
    assert load("seed").verifier is None  # the grey line reader reads numbers without it
    assert load("seed", verifier=None).verifier is None
    assert load("seed", verifier="none").verifier is None
    meta = load_model(path, num_classes=2).metadata
    assert meta["role"] == "piece verifier" and meta["labelled_with"] == "best"


@requires_mnist
def test_label_candidates_on_real_lines(real_mnist, seed):
    config = VerifierConfig(lines=12, seed=3)
    x, y, skipped = label_candidates(seed.predict_proba, real_mnist.train_images[:2000],
                                     real_mnist.train_labels[:2000], config)
    assert x.dtype == np.uint8 and x.shape[1:] == (28, 28) and len(x) == len(y)
    assert skipped < config.lines
    # Each line read true contributes one positive per digit (2-6), and more negatives than that.
    assert 2 * (config.lines - skipped) <= y.sum() <= 6 * (config.lines - skipped)
    assert (y == 0).sum() > y.sum()
    again = label_candidates(seed.predict_proba, real_mnist.train_images[:2000], real_mnist.train_labels[:2000],
                             config)
    assert np.array_equal(x, again[0]) and np.array_equal(y, again[1])  # seeded


@requires_mnist
def test_cli_train_verifier(tmp_path, real_mnist):
    out = tmp_path / "v.safetensors"
    proc = subprocess.run(
        [sys.executable, "-m", "digitrec", "train-verifier", "--model", "seed", "--lines", "15", "--epochs", "1",
         "--threads", "1", "--out", str(out), "--json", "--data-dir", str(real_mnist.directory)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["model"] == str(out) and summary["candidates"] > 0 and 0 < summary["positive_fraction"] < 1
    assert load_model(out, num_classes=2).class_names == PIECE_CLASSES
    bad = subprocess.run([sys.executable, "-m", "digitrec", "train-verifier", "--lines", "0"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "digitrec", "train-verifier", "--arch", "nope", "--out",
                          str(tmp_path / "x.safetensors")], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "unknown" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_read_with_and_without_verifier(tmp_path):
    png = tmp_path / "n.png"
    draw_number().save(png)
    runs = {}
    for flag in ("bundled", "none"):
        proc = subprocess.run([sys.executable, "-m", "digitrec", "read", str(png), "--verifier", flag, "--json"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        runs[flag] = json.loads(proc.stdout)["number"]
    assert runs == {"bundled": "107", "none": "107"}
    bad = subprocess.run([sys.executable, "-m", "digitrec", "read", str(png), "--verifier", "seed"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.startswith("digitrec: error: piece verifier:")
    assert "Traceback" not in bad.stderr
