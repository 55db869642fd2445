"""Tests for digitrec.train.calibrate: temperature fitting, ECE, and metadata-only rewrites."""

from __future__ import annotations

import pytest
import torch

from digitrec.errors import ConfigError, ModelFileError
from digitrec.models.checkpoint import load_model, read_metadata, save_model, write_metadata
from digitrec.models.registry import create_model
from digitrec.train.calibrate import calibration_report, expected_calibration_error, fit_temperature, validation_split


def overconfident(n: int = 4000, true_t: float = 3.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits whose labels are drawn from softmax(logits / true_t): the right temperature is true_t."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 10, generator=g) * 6
    labels = torch.multinomial((logits / true_t).softmax(1), 1, generator=g).squeeze(1)
    return logits, labels


def test_fit_temperature_recovers_the_true_one():
    logits, labels = overconfident()
    assert fit_temperature(logits, labels) == pytest.approx(3.0, rel=0.1)


def test_calibration_lowers_nll_and_ece():
    report = calibration_report(*overconfident())
    assert report.nll_after < report.nll_before
    assert report.ece_after < report.ece_before / 2
    assert set(report.to_dict()) >= {"temperature", "ece_before", "ece_after", "nll_before", "nll_after", "count"}


def test_ece_of_perfectly_calibrated_and_confidently_wrong():
    assert expected_calibration_error(torch.eye(10), torch.arange(10)) == pytest.approx(0.0)
    assert expected_calibration_error(torch.eye(10), (torch.arange(10) + 1) % 10) == pytest.approx(1.0)


def test_fit_temperature_needs_images():
    with pytest.raises(ConfigError):
        fit_temperature(torch.empty(0, 10), torch.empty(0, dtype=torch.long))


def test_validation_split_needs_a_recipe():
    with pytest.raises(ConfigError, match="no training recipe"):
        validation_split({}, None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="without a validation split"):
        validation_split({"train_config": {"seed": 0, "val_size": 0, "limit": 0}}, None)  # type: ignore[arg-type]


def test_write_metadata_keeps_weight_bytes(tmp_path):
    torch.manual_seed(0)
    path = save_model(tmp_path / "m.safetensors", create_model("seed"), "seed", {})
    blob = path.read_bytes()
    out = write_metadata(path, {"temperature": 2.5, "note": "x" * 13}, out=tmp_path / "n.safetensors")
    new = out.read_bytes()
    n_old, n_new = int.from_bytes(blob[:8], "little"), int.from_bytes(new[:8], "little")
    assert blob[8 + n_old :] == new[8 + n_new :]  # tensor data byte for byte
    assert n_new % 8 == 0
    assert load_model(out).temperature == 2.5 and read_metadata(out)["note"] == "x" * 13
    with pytest.raises(ModelFileError, match="bad temperature"):
        write_metadata(path, {"temperature": -1.0})
    with pytest.raises(ModelFileError, match="refusing"):
        write_metadata(path, {"arch": "other"})
    assert path.read_bytes() == blob  # failed rewrites leave the file alone
