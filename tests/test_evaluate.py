"""Tests for digitrec.infer.evaluate: metrics on hand-made answers and batched evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from digitrec.data.preprocess import NORMALIZATION
from digitrec.infer.evaluate import (
    confusion_matrix,
    evaluate,
    evaluate_probabilities,
    per_class_metrics,
    predict_logits,
)

CPU = torch.device("cpu")


class LookupModel(nn.Module):
    """Returns a fixed logit row per image, chosen by the image's (uniform) pixel value 0..255.

    The input arrives normalised, so the pixel value is recovered from the top-left pixel.
    """

    def __init__(self, table: dict[int, list[float]]) -> None:
        super().__init__()
        logits = torch.zeros(256, 10)
        for code, row in table.items():
            logits[code] = torch.tensor(row)
        self.register_buffer("logits", logits)
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (1, 28, 28)
        self.calls.append(len(x))
        pixel = x[:, 0, 0, 0].float() * NORMALIZATION.std + NORMALIZATION.mean
        return self.logits[torch.round(pixel * 255).long()]


def images_with_codes(codes: list[int]) -> np.ndarray:
    return np.stack([np.full((28, 28), c, np.uint8) for c in codes])


def log_softmax(rows: np.ndarray) -> np.ndarray:
    shifted = rows - rows.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


# --- confusion matrix and per-class metrics -----------------------------------------------------


def test_confusion_matrix_known_answer():
    labels = np.array([0, 0, 1, 2, 2, 2])
    preds = np.array([0, 1, 1, 2, 2, 0])
    expected = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    np.testing.assert_array_equal(confusion_matrix(labels, preds, num_classes=3), expected)
    cm10 = confusion_matrix(labels, preds)
    assert cm10.shape == (10, 10) and cm10.sum() == 6
    np.testing.assert_array_equal(cm10[:3, :3], expected)


def test_per_class_metrics_known_answer():
    cm = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    m = per_class_metrics(cm)
    np.testing.assert_allclose(m["precision"], [1 / 2, 1 / 2, 2 / 2])
    np.testing.assert_allclose(m["recall"], [1 / 2, 1 / 1, 2 / 3])
    np.testing.assert_allclose(m["f1"], [0.5, 2 / 3, 0.8])
    np.testing.assert_array_equal(m["support"], [2, 1, 3])


def test_per_class_metrics_undefined_is_zero_not_nan():
    # Class 2 is never predicted; class 3 never occurs and is never predicted.
    cm = confusion_matrix(np.array([0, 1, 2]), np.array([0, 0, 1]), num_classes=4)
    with np.errstate(all="raise"):  # no division warnings either
        m = per_class_metrics(cm)
    for key in ("precision", "recall", "f1"):
        assert not np.isnan(m[key]).any(), key
    np.testing.assert_allclose(m["precision"], [0.5, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(m["recall"], [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(m["f1"], [2 / 3, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(m["support"], [1, 1, 1, 0])


# --- evaluate with a model whose outputs are known ----------------------------------------------

TABLE = {
    0: [3.0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # label 0: right, confident
    1: [0, 1.0, 0.5, 0, 0, 0, 0, 0, 0, 0],  # label 1: right
    2: [0, 0, 0, 0, 0, 2.0, 0, 0, 0, 0],  # label 2: predicted 5, wrong
    3: [0.0] * 10,  # label 3: uniform, argmax 0, wrong
}
CODES = [0, 1, 2, 3]
LABELS = np.array([0, 1, 2, 3])


@pytest.mark.parametrize("batch_size", [1, 3, 1000])
def test_evaluate_known_logits(batch_size):
    model = LookupModel(TABLE).train()
    result = evaluate(model, images_with_codes(CODES), LABELS, device=CPU, batch_size=batch_size)
    logits = np.array([TABLE[c] for c in CODES])
    logp = log_softmax(logits)
    assert result.accuracy == pytest.approx(0.5)
    assert result.loss == pytest.approx(-logp[np.arange(4), LABELS].mean(), rel=1e-6)
    np.testing.assert_array_equal(result.predictions, [0, 1, 5, 0])
    np.testing.assert_allclose(result.confidences, np.exp(logp.max(axis=1)), rtol=1e-6)
    assert result.errors == 2
    assert result.confusion[2, 5] == 1 and result.confusion[3, 0] == 1 and result.confusion.sum() == 4
    np.testing.assert_array_equal(result.support[:4], [1, 1, 1, 1])
    assert result.precision[0] == pytest.approx(0.5)  # predicted 0 twice, right once
    assert result.precision[5] == 0.0 and result.recall[2] == 0.0
    assert model.calls == [min(batch_size, 4 - i) for i in range(0, 4, batch_size)]
    assert model.training  # restored after evaluation


def test_evaluate_temperature_scales_logits():
    model = LookupModel(TABLE)
    base = evaluate(model, images_with_codes(CODES), LABELS, device=CPU)
    hot = evaluate(model, images_with_codes(CODES), LABELS, device=CPU, temperature=2.0)
    logp = log_softmax(np.array([TABLE[c] for c in CODES]) / 2.0)
    assert hot.loss == pytest.approx(-logp[np.arange(4), LABELS].mean(), rel=1e-6)
    np.testing.assert_array_equal(hot.predictions, base.predictions)
    assert (hot.confidences <= base.confidences + 1e-7).all()


def test_evaluate_accepts_tensors_and_float_images():
    model = LookupModel(TABLE)
    u8 = images_with_codes(CODES)
    a = evaluate(model, torch.from_numpy(u8), torch.from_numpy(LABELS), device=CPU)
    b = evaluate(model, u8.astype(np.float32) / 255.0, LABELS, device=CPU)
    assert a.accuracy == b.accuracy == 0.5
    assert a.loss == pytest.approx(b.loss)


def test_eval_result_to_dict():
    result = evaluate(LookupModel(TABLE), images_with_codes(CODES), LABELS, device=CPU)
    d = result.to_dict()
    assert set(d) == {"loss", "accuracy", "errors", "count", "per_class", "confusion_matrix"}
    assert d["count"] == 4 and d["errors"] == 2 and d["accuracy"] == 0.5
    assert set(d["per_class"]) == {str(c) for c in range(10)}
    assert d["per_class"]["1"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert d["confusion_matrix"][2][5] == 1
    assert json.loads(json.dumps(d)) == d  # JSON-ready: plain Python types only


def test_predict_logits_shapes_and_empty():
    model = LookupModel(TABLE)
    images = torch.from_numpy(images_with_codes([2, 0]))
    out3 = predict_logits(model, images, device=CPU)
    out4 = predict_logits(model, images.unsqueeze(1), device=CPU)
    assert out3.dtype == torch.float32 and out3.shape == (2, 10)
    torch.testing.assert_close(out3, out4)
    torch.testing.assert_close(out3, torch.tensor([TABLE[2], TABLE[0]]))
    assert predict_logits(model, images[:0], device=CPU).shape == (0, 10)


@pytest.mark.parametrize(
    ("labels", "needle"),
    [(np.array([1, 2, 3]), "labels of shape"), (np.array([0, 1, 2, 3, 10]), "digits 0-9"),
     (np.array([0, 1, 2, 3, -1]), "digits 0-9"), (np.array([0.7, 1, 2, 3, 4]), "integers")],
)
def test_evaluate_rejects_bad_labels(labels, needle):
    from digitrec.errors import DatasetError
    from digitrec.models.registry import create_model

    images = np.zeros((5, 28, 28), np.uint8)
    with pytest.raises(DatasetError, match=needle):
        evaluate(create_model("seed"), images, labels, device=torch.device("cpu"))


def test_evaluate_probabilities_matches_evaluate_on_the_same_answers():
    rng = np.random.default_rng(3)
    table = {c: rng.normal(size=10).tolist() for c in range(20)}
    images = images_with_codes(list(range(20)))
    labels = rng.integers(0, 10, 20)
    direct = evaluate(LookupModel(table), images, labels, device=CPU, temperature=1.5)
    rows = np.array([table[c] for c in range(20)]) / 1.5
    probs = np.exp(log_softmax(rows)).astype(np.float32)
    other = evaluate_probabilities(probs, labels)  # as an int8 ONNX graph hands them back
    np.testing.assert_array_equal(other.predictions, direct.predictions)
    np.testing.assert_array_equal(other.confusion, direct.confusion)
    assert other.accuracy == direct.accuracy
    assert other.loss == pytest.approx(direct.loss, rel=1e-5)
    np.testing.assert_allclose(other.confidences, direct.confidences, rtol=1e-5)


def test_evaluate_probabilities_keeps_a_zero_probability_finite():
    probs = np.array([[1.0] + [0.0] * 9, [0.0, 1.0] + [0.0] * 8], np.float32)
    result = evaluate_probabilities(probs, np.array([1, 1]))  # the first image's true class got 0
    assert np.isfinite(result.loss) and result.accuracy == 0.5
