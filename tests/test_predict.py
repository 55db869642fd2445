"""Tests for digitrec.infer.recogniser: the Recogniser's inputs, outputs and the bundled model."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from conftest import requires_mnist
from PIL import Image

import digitrec
from digitrec.data.preprocess import to_mnist
from digitrec.errors import ImageError, ModelFileError
from digitrec.infer.recogniser import Prediction, Recogniser, load
from digitrec.models.checkpoint import load_model, save_model
from digitrec.models.registry import create_model


@pytest.fixture
def rec(tiny_model_file) -> Recogniser:
    return load(tiny_model_file)


def check_prediction(p: Prediction) -> None:
    assert isinstance(p, Prediction)
    probs = np.array(p.probabilities)
    assert probs.shape == (10,)
    assert (probs >= 0).all()
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert p.digit == int(np.argmax(probs))
    assert p.confidence == max(p.probabilities)
    assert len(p.top) == 3
    assert p.top[0] == (p.digit, p.confidence)
    assert [q for _, q in p.top] == sorted((q for _, q in p.top), reverse=True)
    assert [q for _, q in p.top] == sorted(p.probabilities, reverse=True)[:3]
    assert all(p.probabilities[d] == q for d, q in p.top)
    assert p.input.shape == (28, 28) and p.input.dtype == np.float32


def test_load_gives_recogniser(rec, tiny_model_file):
    assert isinstance(rec, Recogniser)
    assert str(rec.device) == "cpu" and rec.precision == "fp32"  # a torch.device, or "cpu" from a cached graph
    assert rec.name == "tiny"
    assert rec.metadata["arch"] == "seed"
    assert digitrec.load is load


def test_predict_single_inputs_agree(rec, tmp_path, digit_image, digit_png):
    path = tmp_path / "digit.png"
    path.write_bytes(digit_png)
    sources = {
        "path": path,
        "str": str(path),
        "pil": digit_image,
        "numpy": np.asarray(digit_image),
        "bytes": digit_png,
        "file": io.BytesIO(digit_png),
    }
    predictions = {kind: rec.predict(source) for kind, source in sources.items()}
    expected_input = to_mnist(digit_image)
    for kind, p in predictions.items():
        check_prediction(p)
        np.testing.assert_allclose(p.input, expected_input, atol=1e-6, err_msg=kind)
        np.testing.assert_allclose(p.probabilities, predictions["pil"].probabilities, atol=1e-6,
                                   err_msg=kind)


def test_prepare_is_to_mnist(rec, digit_image):
    np.testing.assert_array_equal(rec.prepare(digit_image), to_mnist(digit_image))


def test_predict_list_returns_list(rec, digit_image, digit_png):
    out = rec.predict([digit_image, digit_png, np.asarray(digit_image)])
    assert isinstance(out, list) and len(out) == 3
    for p in out:
        check_prediction(p)
    np.testing.assert_allclose(out[0].probabilities, out[1].probabilities, atol=1e-6)
    assert rec.predict([]) == []
    assert isinstance(rec.predict((digit_image,)), list)


def test_predict_batch_array_returns_list(rec):
    rng = np.random.default_rng(0)
    batch = np.zeros((5, 28, 28), np.uint8)
    batch[:, 6:22, 10:18] = rng.integers(100, 256, (5, 16, 8), dtype=np.uint8)
    out = rec.predict(batch)
    assert isinstance(out, list) and len(out) == 5
    for p, img in zip(out, batch):
        check_prediction(p)
        np.testing.assert_array_equal(p.input, img.astype(np.float32) / 255)  # MNIST-like: as is
    single = rec.predict(batch[2])
    np.testing.assert_allclose(single.probabilities, out[2].probabilities, atol=1e-6)


def test_predict_colour_array_is_one_image(rec, digit_image):
    rgb = np.stack([np.asarray(digit_image)] * 3, axis=-1)
    p = rec.predict(rgb)
    assert isinstance(p, Prediction)
    np.testing.assert_allclose(p.probabilities, rec.predict(digit_image).probabilities, atol=1e-6)


def test_predict_arrays_uint8_and_float_agree(rec):
    rng = np.random.default_rng(1)
    u8 = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    a = rec.predict_arrays(u8)
    b = rec.predict_arrays(u8.astype(np.float64) / 255.0)
    for pa, pb in zip(a, b):
        np.testing.assert_allclose(pa.probabilities, pb.probabilities, atol=1e-6)
        np.testing.assert_allclose(pa.input, pb.input, atol=1e-6)


@pytest.mark.parametrize("shape", [(28, 28), (3, 28, 27), (2, 1, 28, 28)])
def test_predict_arrays_rejects_bad_shapes(rec, shape):
    with pytest.raises(ImageError, match=r"expected prepared images of shape \(N, 28, 28\)"):
        rec.predict_arrays(np.zeros(shape, np.float32))


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_predict_proba_matches_predict_arrays(tiny_model_file, backend):
    if backend == "onnx":
        pytest.importorskip("onnxruntime")
    rec = load(tiny_model_file, backend=backend)
    rng = np.random.default_rng(2)
    images = rng.integers(1, 256, (150, 28, 28), dtype=np.uint8)  # above the engine's chunk size
    probs = rec.predict_proba(images)
    assert probs.shape == (150, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # Against the model itself, outside any backend: normalise, logits / temperature, softmax.
    mf = load_model(tiny_model_file)  # the weights (rec may answer from a cached graph without them)
    x = (torch.from_numpy(images).float()[:, None] / 255.0 - mf.normalization.mean) / mf.normalization.std
    with torch.no_grad():
        expected = (mf.model.eval()(x) / mf.temperature).softmax(dim=1).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert (probs.argmax(axis=1) == [p.digit for p in rec.predict_arrays(images)]).all()
    assert rec.predict_proba(np.zeros((0, 28, 28), np.uint8)).shape == (0, 10)
    with pytest.raises(ImageError, match="expected prepared images"):
        rec.predict_proba(np.zeros((2, 28, 27), np.float32))
    with pytest.raises(ImageError, match="finite floats"):
        rec.predict_proba(np.full((1, 28, 28), np.nan, np.float32))
    # 0-255 grey levels passed as floats are refused, not read as a blown-out white image.
    with pytest.raises(ImageError, match=r"must lie in \[0, 1\].*pass uint8"):
        rec.predict_proba(images.astype(np.float32))
    with pytest.raises(ImageError, match=r"must lie in \[0, 1\]"):
        rec.predict_arrays(np.full((1, 28, 28), -0.5, np.float32))


def test_predict_bad_image_is_image_error(rec, tmp_path, digit_image):
    with pytest.raises(ImageError):
        rec.predict(tmp_path / "missing.png")
    # A blank page is no error any more: it is answered "no digit found", also inside a list.
    blank, drawn = rec.predict([Image.new("L", (40, 40), 255), digit_image])
    assert blank.digit is None and blank.unsure and blank.probabilities == ()
    assert drawn.digit is not None


def test_to_dict(rec, digit_image):
    p = rec.predict(digit_image)
    d = p.to_dict()
    assert set(d) == {"digit", "confidence", "top3", "probabilities", "unsure"}
    assert d["unsure"] == (p.confidence < rec.min_confidence)
    assert d["digit"] == p.digit and d["confidence"] == p.confidence
    assert d["top3"] == [{"digit": dg, "probability": q} for dg, q in p.top]
    assert d["probabilities"] == list(p.probabilities)
    assert json.loads(json.dumps(d)) == d


def test_temperature_softens_probabilities(tmp_path, digit_image):
    torch.manual_seed(0)
    model = create_model("seed").eval()
    cold = load(save_model(tmp_path / "t1.safetensors", model, "seed", {}))
    hot = load(save_model(tmp_path / "t3.safetensors", model, "seed", {}, extra={"temperature": 3.0}))
    p1, p3 = cold.predict(digit_image), hot.predict(digit_image)
    assert p1.digit == p3.digit
    assert p3.confidence < p1.confidence
    assert sum(p3.probabilities) == pytest.approx(1.0, abs=1e-5)


def test_load_errors(tmp_path, tiny_model_file):
    with pytest.raises(ModelFileError, match="no such model file"):
        load(tmp_path / "missing.safetensors")
    with pytest.raises(digitrec.ConfigError, match="invalid precision"):
        load(tiny_model_file, precision="fp8")
    with pytest.raises(digitrec.ConfigError, match="device"):
        load(tiny_model_file, device="tpu")
    assert load(tiny_model_file, precision="bf16").precision == "bf16"


def test_bundled_seed_metadata():
    rec = load("seed")
    assert rec.name == "seed"
    assert rec.metadata["arch"] == "seed"
    assert rec.metadata["metrics"]["test_accuracy"] >= 0.98


@requires_mnist
def test_bundled_seed_on_mnist(real_mnist):
    rec = digitrec.load("seed")
    preds = rec.predict(real_mnist.test_images[:100])
    digits = np.array([p.digit for p in preds])
    assert (digits == real_mnist.test_labels[:100]).mean() >= 0.97
    assert preds[0].digit == 7  # the first test image is a 7


def scanned(digit: np.ndarray, size: int, paper: float, ink: float, fill: bool) -> np.ndarray:
    """An MNIST digit as a small grey scan: dark ink on paper, ``size`` px, cropped to its ink if ``fill``."""
    if fill:  # postal-code scans: the digit stretched to fill its frame, touching every border
        rows, cols = np.flatnonzero(digit.max(axis=1) > 0), np.flatnonzero(digit.max(axis=0) > 0)
        digit = digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    g = np.asarray(Image.fromarray(digit).resize((size, size), Image.Resampling.BILINEAR), np.float32) / 255.0
    return (paper - g * (paper - ink)).astype(np.float32)


@requires_mnist
@pytest.mark.parametrize(("size", "paper", "ink", "fill"), [(16, 1.0, 0.0, True), (16, 0.8, 0.3, False),
                                                           (28, 0.8, 0.62, False)],
                         ids=["16px-filling-its-frame", "16px-grey", "faint"])
def test_predict_finds_tiny_and_faint_digits(real_mnist, size, paper, ink, fill):
    """Small scans and faint pencil are read, not answered "no digit" (as postal-code scans were)."""
    rec = load("seed")
    noise = np.random.default_rng(0).normal(0.0, 0.01, (100, size, size)).astype(np.float32)
    preds = rec.predict([np.clip(scanned(d, size, paper, ink, fill) + n, 0, 1)
                         for d, n in zip(real_mnist.test_images[:100], noise)])
    assert sum(p.digit is None for p in preds) <= 3
    assert np.mean([p.digit == y for p, y in zip(preds, real_mnist.test_labels[:100])]) >= 0.8


def test_bundled_seed_reads_a_drawn_digit(digit_image):
    assert load("seed").predict(digit_image).digit == 7


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [("PNG", "L"), ("PNG", "RGBA"), ("PNG", "I;16"), ("PNG", "1"), ("JPEG", "RGB"), ("JPEG", "CMYK"),
     ("BMP", "RGB"), ("GIF", "P"), ("TIFF", "L"), ("TIFF", "I;16"), ("WEBP", "RGB")],
)
def test_bundled_seed_reads_every_file_format(tmp_path, digit_image, fmt, mode):
    """The same drawn 7, saved in each supported format and mode, reads as 7 from a file."""
    img = digit_image.convert(mode) if mode != "I;16" else Image.fromarray(
        (np.asarray(digit_image, dtype=np.uint16) * 257).astype(np.uint16)
    )
    path = tmp_path / f"seven.{fmt.lower()}"
    img.save(path, format=fmt)
    with Image.open(path) as check:
        assert check.format == fmt
    assert load("seed").predict(path).digit == 7


def test_empty_batches_give_empty_lists(rec):
    assert rec.predict(np.zeros((0, 28, 28), np.uint8)) == []
    assert rec.predict_arrays(np.zeros((0, 28, 28), np.float32)) == []


def test_non_finite_prepared_images_are_refused(rec):
    bad = np.zeros((2, 28, 28), np.float32)
    bad[1, 3, 3] = np.nan
    with pytest.raises(ImageError, match="finite"):
        rec.predict_arrays(bad)


def test_load_validates_a_torch_device(tiny_model_file):
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    with pytest.raises(digitrec.ConfigError, match="CUDA"):
        load(tiny_model_file, device=torch.device("cuda"))


def _cheque_paper(h: int, w: int, seed: int, pattern: float = 0.15) -> np.ndarray:
    """Grey security paper: a mid-grey tone with a guilloche ``pattern`` darker than it."""
    from digitrec.data.paper import _guilloche

    return (0.78 - pattern * _guilloche(h, w, np.random.default_rng(seed))).astype(np.float32)


@requires_mnist
def test_predict_reads_digits_cut_from_patterned_paper(real_mnist):
    """A digit cut out of a cheque (grey guilloche paper, 40-50 px) is read, not answered "no digit".

    The global cleaning loses these (75% "no digit" on 600 digits cut from the development
    cheques); the local grey path finds them.
    """
    rec = load("seed")
    crops = []
    for i, d in enumerate(real_mnist.test_images[:60]):
        h = 40 + i % 11
        g = np.asarray(Image.fromarray(d).resize((h, h), Image.Resampling.BILINEAR), np.float32) / 255.0
        crops.append(np.clip(_cheque_paper(h, h, i) - 0.55 * g, 0, 1))
    preds = rec.predict(crops)
    assert sum(p.digit is None for p in preds) <= 3
    assert np.mean([p.digit == y for p, y in zip(preds, real_mnist.test_labels[:60])]) >= 0.8


def test_the_grey_crop_path_finds_no_digit_in_patterned_paper():
    """The same paper without a digit: its pattern is fainter than any pen, so the grey path finds no ink.

    (The global cleaning, tried first, still takes this pattern for a digit in half of these
    crops: a known gap, see docs/segmenter.md.)
    """
    from digitrec.data.preprocess import NoDigitError, grey_digit_ink

    for k in range(10):
        with pytest.raises(NoDigitError):
            grey_digit_ink(_cheque_paper(44, 30 + k, k))
    # A real stroke on that paper is found.
    paper = _cheque_paper(44, 34, 0)
    paper[6:38, 15:19] -= 0.5
    assert grey_digit_ink(np.clip(paper, 0, 1)).any()
