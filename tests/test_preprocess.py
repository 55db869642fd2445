"""Tests for digitrec.data.preprocess: any picture of a digit -> the 28x28 MNIST-convention input."""

from __future__ import annotations

import contextlib
import gc
import io
import warnings

import numpy as np
import pytest
import torch
from conftest import requires_mnist
from PIL import Image, ImageDraw

from digitrec.data.preprocess import (
    NORMALIZATION,
    center_by_mass,
    crop_to_ink,
    fit_in_box,
    normalize,
    open_image,
    to_grayscale,
    to_mnist,
    to_white_on_black,
)
from digitrec.errors import ImageError


def encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def ink_box(out: np.ndarray, threshold: float = 0.0) -> tuple[int, int]:
    """(height, width) of the bounding box of pixels above ``threshold``."""
    ys, xs = np.nonzero(out > threshold)
    return int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)


def centre_of_mass(out: np.ndarray) -> tuple[float, float]:
    ys, xs = np.mgrid[0 : out.shape[0], 0 : out.shape[1]]
    total = out.sum()
    return float((ys * out).sum() / total), float((xs * out).sum() / total)


def assert_mnist_like(out: np.ndarray) -> None:
    assert out.shape == (28, 28)
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.max() > 0.5  # there is bright ink
    border = np.concatenate([out[0], out[-1], out[:, 0], out[:, -1]])
    assert border.max() < 0.05  # on a black background


# --- to_grayscale -------------------------------------------------------------------------------


def _palette(colours: list[tuple[int, int, int]]) -> list[int]:
    flat = [c for rgb in colours for c in rgb]
    return flat + [0] * (768 - len(flat))


def _mode_image(mode: str) -> Image.Image:
    """A 10x10 image of ``mode`` with a light background and one dark "ink" pixel at (2, 3)."""
    if mode == "RGBA":  # transparent (black!) background, opaque black ink
        img = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
        img.putpixel((3, 2), (0, 0, 0, 255))
    elif mode == "LA":
        img = Image.new("LA", (10, 10), (0, 0))
        img.putpixel((3, 2), (0, 255))
    elif mode == "P":  # index 0 = white, 1 = black
        img = Image.new("P", (10, 10), 0)
        img.putpalette(_palette([(255, 255, 255), (0, 0, 0)]))
        img.putpixel((3, 2), 1)
    elif mode == "P-transparent":  # index 0 = black but transparent, 1 = black
        img = Image.new("P", (10, 10), 0)
        img.putpalette(_palette([(0, 0, 0), (0, 0, 0)]))
        img.info["transparency"] = 0
        img.putpixel((3, 2), 1)
    elif mode == "I;16":
        arr = np.full((10, 10), 65535, dtype=np.uint16)
        arr[2, 3] = 0
        img = Image.fromarray(arr)
    elif mode == "I":
        arr = np.full((10, 10), 255, dtype=np.int32)
        arr[2, 3] = 0
        img = Image.fromarray(arr)
    elif mode == "F":
        arr = np.ones((10, 10), dtype=np.float32)
        arr[2, 3] = 0.0
        img = Image.fromarray(arr)
    elif mode == "1":
        img = Image.new("1", (10, 10), 1)
        img.putpixel((3, 2), 0)
    elif mode == "CMYK":
        img = Image.new("CMYK", (10, 10), (0, 0, 0, 0))
        img.putpixel((3, 2), (0, 0, 0, 255))
    else:
        img = Image.new(mode, (10, 10), 255 if mode == "L" else (255, 255, 255))
        img.putpixel((3, 2), 0 if mode == "L" else (0, 0, 0))
    assert img.mode == mode.split("-")[0]
    return img


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "P-transparent", "I;16", "I", "F", "1", "CMYK", "L", "RGB"])
def test_to_grayscale_modes(mode):
    gray = to_grayscale(_mode_image(mode))
    assert gray.shape == (10, 10)
    assert gray.dtype == np.float32
    assert gray[2, 3] == pytest.approx(0.0, abs=1e-6)  # ink stays black
    background = np.delete(gray.ravel(), 2 * 10 + 3)
    np.testing.assert_allclose(background, 1.0, atol=1e-6)  # paper (or transparency) is white


def test_to_grayscale_rgba_partial_alpha_blends_with_white():
    img = Image.new("RGBA", (2, 1), (0, 0, 0, 128))
    assert to_grayscale(img)[0, 0] == pytest.approx(1 - 128 / 255, abs=1 / 255)


@pytest.mark.parametrize(
    ("values", "dtype", "expected"),
    [
        ([0, 32768, 65535], np.uint16, [0.0, 32768 / 65535, 1.0]),  # 16-bit range
        ([0, 100, 255], np.int32, [0.0, 100 / 255, 1.0]),  # 8-bit values in an I image
        ([0.0, 0.25, 1.0], np.float32, [0.0, 0.25, 1.0]),  # F already in [0, 1]
    ],
    ids=["I;16", "I", "F"],
)
def test_to_grayscale_high_bit_depth_scaling(values, dtype, expected):
    gray = to_grayscale(Image.fromarray(np.array([values], dtype=dtype)))
    np.testing.assert_allclose(gray[0], expected, atol=1e-6)


# --- the individual steps -----------------------------------------------------------------------


def test_to_white_on_black_inverts_only_light_backgrounds():
    dark_on_light = np.ones((10, 10), np.float32)
    dark_on_light[4:6, 4:6] = 0.0
    np.testing.assert_array_equal(to_white_on_black(dark_on_light), 1.0 - dark_on_light)
    light_on_dark = 1.0 - dark_on_light
    assert to_white_on_black(light_on_dark) is light_on_dark


def test_crop_fit_centre_steps():
    gray = np.zeros((50, 60), np.float32)
    gray[10:20, 5:45] = 1.0  # a 10x40 bar
    cropped = crop_to_ink(gray)
    assert cropped.shape == (10, 40)
    fitted = fit_in_box(cropped)
    assert fitted.shape == (5, 20)  # longer side 20, aspect ratio kept
    assert fitted.min() >= 0.0 and fitted.max() <= 1.0
    framed = center_by_mass(fitted)
    assert framed.shape == (28, 28)
    cy, cx = centre_of_mass(framed)
    assert abs(cy - 13.5) <= 0.5 and abs(cx - 13.5) <= 0.5
    with pytest.raises(ImageError, match="no digit found"):
        crop_to_ink(np.full((5, 5), 0.1, np.float32))


def test_center_by_mass_keeps_off_centre_mass_inside_frame():
    glyph = np.zeros((20, 20), np.float32)
    glyph[:, -1] = 1.0  # all mass on the right edge
    framed = center_by_mass(glyph)
    assert framed.sum() == pytest.approx(glyph.sum())  # nothing clipped


# --- to_mnist on drawn and real digits ----------------------------------------------------------


def test_to_mnist_drawn_digit(digit_image):
    out = to_mnist(digit_image)
    assert_mnist_like(out)
    assert max(ink_box(out)) in (19, 20, 21)
    cy, cx = centre_of_mass(out)
    assert abs(cy - 13.5) <= 1.0 and abs(cx - 13.5) <= 1.0


def test_to_mnist_is_position_invariant(digit_image):
    elsewhere = Image.new("L", (500, 400), 255)
    elsewhere.paste(digit_image, (180, 190))
    np.testing.assert_allclose(to_mnist(elsewhere), to_mnist(digit_image), atol=1e-6)


def test_to_mnist_white_on_black_input_is_not_inverted(digit_image):
    inverted = Image.eval(digit_image, lambda v: 255 - v)
    np.testing.assert_allclose(to_mnist(inverted), to_mnist(digit_image), atol=1e-6)


def test_to_mnist_same_for_every_source_kind(tmp_path, digit_image, digit_png):
    path = tmp_path / "digit.png"
    path.write_bytes(digit_png)
    expected = to_mnist(digit_image)
    for source in (path, str(path), digit_png, io.BytesIO(digit_png), np.asarray(digit_image)):
        np.testing.assert_allclose(to_mnist(source), expected, atol=1e-6)


@requires_mnist
def test_to_mnist_passes_mnist_image_through_unchanged(real_mnist):
    img = real_mnist.test_images[0]
    expected = img.astype(np.float32) / 255.0
    for source in (img, Image.fromarray(img)):
        out = to_mnist(source)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, expected)


def test_to_mnist_passes_synthetic_mnist_like_image_through():
    img = np.zeros((28, 28), np.uint8)
    img[3:9, 2:5] = 255  # deliberately off-centre: a pass-through must not re-centre it
    np.testing.assert_array_equal(to_mnist(img), img / np.float32(255))


@pytest.mark.parametrize(
    "blank",
    [
        Image.new("L", (100, 80), 255),
        Image.new("L", (100, 80), 0),
        Image.new("RGBA", (50, 50), (0, 0, 0, 0)),
        np.full((40, 40), 255, np.uint8),
    ],
    ids=["white", "black", "transparent", "white-array"],
)
def test_to_mnist_blank_image_is_an_error(blank):
    with pytest.raises(ImageError, match="no digit found"):
        to_mnist(blank)


@pytest.mark.parametrize("blank", [np.zeros((28, 28), np.uint8), Image.new("L", (28, 28), 0)],
                         ids=["array", "pil"])
def test_to_mnist_blank_28x28_black_is_an_error(blank):
    with pytest.raises(ImageError, match="no digit found"):
        to_mnist(blank)


# --- bad inputs ---------------------------------------------------------------------------------


def test_to_mnist_rejects_directory(tmp_path):
    with pytest.raises(ImageError, match="is a directory"):
        to_mnist(tmp_path)


def test_to_mnist_rejects_missing_path(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        to_mnist(tmp_path / "missing.png")


def test_to_mnist_rejects_non_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is a text file, not a PNG\n")
    with pytest.raises(ImageError, match="not a recognised image format") as info:
        to_mnist(path)
    assert str(path) in str(info.value)
    with pytest.raises(ImageError, match="not a recognised image format"):
        to_mnist(b"\x00\x01\x02garbage")


def test_to_mnist_rejects_truncated_png(tmp_path, digit_png):
    half = digit_png[: len(digit_png) // 2]
    with pytest.raises(ImageError, match="truncated or corrupt"):
        to_mnist(half)
    path = tmp_path / "half.png"
    path.write_bytes(half)
    with pytest.raises(ImageError, match="truncated or corrupt") as info:
        to_mnist(path)
    assert "\n" not in str(info.value)


def test_too_large_image_is_refused(monkeypatch):
    monkeypatch.setattr("digitrec.data.decode.MAX_PIXELS", 100)
    img = Image.new("L", (20, 20), 255)
    with pytest.raises(ImageError, match="too large"):
        to_mnist(img)
    with pytest.raises(ImageError, match="too large"):
        to_mnist(encode(img))
    with pytest.raises(ImageError, match="too large"):
        to_mnist(np.zeros((20, 20), np.uint8))
    assert to_mnist(np.pad(np.full((4, 4), 255, np.uint8), 3)).shape == (28, 28)  # 100 px: fine


def test_animated_gif_uses_first_frame():
    first = Image.new("L", (60, 60), 255)
    ImageDraw.Draw(first).rectangle([27, 5, 33, 55], fill=0)  # vertical bar
    second = Image.new("L", (60, 60), 255)
    ImageDraw.Draw(second).rectangle([5, 27, 55, 33], fill=0)  # horizontal bar
    gif = encode(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    assert Image.open(io.BytesIO(gif)).n_frames == 2
    out = to_mnist(gif)
    h, w = ink_box(out, 0.2)
    assert h > 2 * w  # the vertical bar of frame 0
    np.testing.assert_allclose(out, to_mnist(first), atol=1e-6)


def test_exif_orientation_is_honoured():
    # A horizontal bar with a heavy blob at its left end, stored as a JPEG.
    img = Image.new("L", (200, 200), 255)
    draw = ImageDraw.Draw(img)
    draw.rectangle([40, 90, 160, 110], fill=0)
    draw.ellipse([30, 70, 70, 130], fill=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    plain = to_mnist(encode(img, "JPEG"))
    rotated = to_mnist(encode(img, "JPEG", exif=exif.tobytes()))
    h, w = ink_box(plain, 0.2)
    assert w > 1.5 * h  # stored: wide
    assert np.argmax((plain > 0.2).sum(axis=0)) < 14  # blob on the left
    h, w = ink_box(rotated, 0.2)
    assert h > 1.5 * w  # displayed: tall
    assert np.argmax((rotated > 0.2).sum(axis=1)) < 14  # left end turned clockwise to the top


@pytest.mark.parametrize("kind", ["animated-gif", "truncated-png"])
def test_open_image_closes_files_it_opens(tmp_path, digit_png, kind):
    path = tmp_path / f"{kind}.img"
    if kind == "animated-gif":
        frames = [Image.new("L", (40, 40), 255), Image.new("L", (40, 40), 0)]
        ImageDraw.Draw(frames[0]).rectangle([15, 5, 25, 35], fill=0)
        path.write_bytes(encode(frames[0], "GIF", save_all=True, append_images=frames[1:]))
    else:
        path.write_bytes(digit_png[: len(digit_png) // 2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with contextlib.suppress(ImageError):
            to_mnist(path)
        gc.collect()  # anything left unclosed is finalised (and warns) here at the latest
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_open_image_returns_loaded_first_frame(digit_png):
    img = open_image(digit_png)
    assert img.size == (300, 200)
    assert img.mode == "L"


# --- NumPy inputs -------------------------------------------------------------------------------


@pytest.fixture
def digit_u8(digit_image) -> np.ndarray:
    return np.asarray(digit_image, dtype=np.uint8)


@pytest.mark.parametrize(
    "convert",
    [
        lambda a: a.astype(np.uint16) * np.uint16(257),
        lambda a: a.astype(np.float32) / 255.0,
        lambda a: a.astype(np.float64),  # float 0..255 is recognised by its range
        lambda a: np.stack([a, a, a], axis=-1),
        lambda a: np.stack([a, a, a, np.full_like(a, 255)], axis=-1),
        lambda a: a[..., None],
        # RGBA with a transparent *black* background and opaque black ink: composited on white.
        lambda a: np.stack([np.zeros_like(a)] * 3 + [255 - a], axis=-1),
    ],
    ids=["uint16", "float01", "float255", "rgb", "rgba", "hw1", "rgba-transparent"],
)
def test_numpy_inputs_agree(digit_u8, convert):
    np.testing.assert_allclose(to_mnist(convert(digit_u8)), to_mnist(digit_u8), atol=1e-5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_numpy_non_finite_is_an_error(digit_u8, bad):
    arr = digit_u8.astype(np.float32) / 255.0
    arr[0, 0] = bad
    with pytest.raises(ImageError, match="NaN or infinite"):
        to_mnist(arr)


@pytest.mark.parametrize(
    "shape", [(784,), (28, 28, 2), (28, 28, 5), (2, 28, 28, 1), (0, 10), (0, 10, 3)]
)
def test_numpy_bad_shape_is_an_error(shape):
    with pytest.raises(ImageError):
        to_mnist(np.zeros(shape, np.uint8))


# --- normalize ----------------------------------------------------------------------------------


def test_normalize_uint8_and_float_agree():
    u8 = torch.tensor([[0, 51, 128, 255]], dtype=torch.uint8)
    a = normalize(u8)
    b = normalize(u8.float() / 255.0)
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, b)
    expected = (torch.tensor([[0, 51, 128, 255]]) / 255.0 - NORMALIZATION.mean) / NORMALIZATION.std
    torch.testing.assert_close(a, expected)
    assert a[0, 0].item() == pytest.approx(-0.1307 / 0.3081)


@pytest.mark.parametrize("source", [None, 5, 3.5, object()], ids=["none", "int", "float", "object"])
def test_unsupported_input_types_are_image_errors(source):
    with pytest.raises(ImageError, match="unsupported image input"):
        to_mnist(source)


def test_empty_path_is_an_image_error():
    with pytest.raises(ImageError, match="empty image path"):
        to_mnist("")


def test_bytearray_and_memoryview_work_like_bytes(digit_png):
    expected = to_mnist(digit_png)
    np.testing.assert_array_equal(to_mnist(bytearray(digit_png)), expected)
    np.testing.assert_array_equal(to_mnist(memoryview(digit_png)), expected)


def test_text_mode_file_is_an_image_error(tmp_path, digit_png):
    path = tmp_path / "d.png"
    path.write_bytes(digit_png)
    with open(path, encoding="utf-8") as fh, pytest.raises(ImageError, match="cannot read"):
        to_mnist(fh)


@pytest.mark.parametrize("array", [np.array([["a", "b"], ["c", "d"]]), np.ones((4, 4), complex),
                                   np.full((4, 4), None)], ids=["str", "complex", "object"])
def test_unsupported_array_dtypes_are_image_errors(array):
    with pytest.raises(ImageError, match="unsupported array dtype"):
        to_mnist(array)


def test_wide_integer_arrays_infer_their_range(digit_image):
    """np.asarray of a 16-bit image is int32 in 0..65535; it must not saturate at 255."""
    as_uint16 = (np.asarray(digit_image, dtype=np.uint16) * 257).astype(np.uint16)
    np.testing.assert_allclose(to_mnist(as_uint16.astype(np.int32)), to_mnist(as_uint16), atol=1e-6)


def test_a_callers_pil_image_keeps_its_frame(tmp_path):
    frames = [Image.new("L", (40, 40), 255) for _ in range(2)]
    ImageDraw.Draw(frames[0]).line([(20, 5), (20, 35)], fill=0, width=4)
    ImageDraw.Draw(frames[1]).line([(5, 20), (35, 20)], fill=0, width=4)
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with Image.open(path) as img:
        img.seek(1)
        to_mnist(img)
        assert img.tell() == 1


# --- real-world pipeline (issue 5) --------------------------------------------------------------

from digitrec.data.preprocess import NoDigitError, clean_ink, ink_map, limit_size, remove_background  # noqa: E402


def test_uneven_light_and_grey_paper_give_the_same_digit(digit_image):
    base = np.asarray(digit_image, np.float32) / 255.0
    h, w = base.shape
    ramp = np.linspace(0.45, 0.95, w, dtype=np.float32)[None, :]  # strong side light
    lit = (base * 0.8 + 0.2) * ramp  # grey ink on grey paper under the ramp
    out = to_mnist(lit)
    assert_mnist_like(out)
    assert np.abs(out - to_mnist(digit_image)).mean() < 0.05


def test_dark_photo_polarity_is_detected(digit_image):
    dim = (np.asarray(digit_image, np.float32) / 255.0) * 0.35 + 0.05  # paper 0.4, ink 0.05
    assert np.abs(to_mnist(dim) - to_mnist(digit_image)).mean() < 0.05


def test_remove_background_flattens_a_gradient():
    ramp = np.tile(np.linspace(0.0, 0.6, 120, dtype=np.float32), (80, 1))
    assert remove_background(ramp).max() < 0.02


def test_clean_ink_drops_specks_and_keeps_grey_edges():
    ink = np.zeros((100, 100), np.float32)
    ink[20:80, 45:55] = 0.8
    ink[20:80, 44] = ink[20:80, 55] = 0.5  # soft edges
    ink[5, 5] = 0.8  # a speck
    out = clean_ink(ink)
    assert out[5, 5] == 0.0
    assert out[50, 50] == 1.0 and 0.0 < out[50, 44] < 1.0


@pytest.mark.parametrize("seed", range(5))
def test_noisy_blank_pages_are_no_digit(seed):
    rng = np.random.default_rng(seed)
    page = np.clip(0.8 + 0.1 * np.linspace(-1, 1, 200)[None, :] + rng.normal(0, 0.02, (150, 200)), 0, 1)
    with pytest.raises(NoDigitError, match="no digit found"):
        to_mnist(page.astype(np.float32))


def test_limit_size_shrinks_large_pictures():
    out, scale = limit_size(np.zeros((3000, 1500), np.float32))
    assert max(out.shape) == 1024 and scale == pytest.approx(3000 / 1024, rel=1e-3)
    assert ink_map(np.zeros((10, 10), np.uint8)).ink.max() == 0.0


@requires_mnist
def test_mnist_test_accuracy_is_unchanged_through_the_pipeline(real_mnist):
    """Already-MNIST-like input passes through unchanged, so accuracy cannot move.

    The same digits as tiny black-on-white 28x28 scans take the full pipeline (polarity,
    light, cleaning, re-framing). Re-framing alone (crop, fit 20 px, centre: MNIST's own
    steps) costs about 0.3 pp on the validation split; the cleaning steps must add nothing.
    """
    from digitrec.data.preprocess import glyph_to_mnist
    from digitrec.infer.recogniser import load

    rec = load("seed", backend="torch")
    images, labels = real_mnist.test_images[:1000], real_mnist.test_labels[:1000]
    passed = np.stack([to_mnist(im) for im in images])
    np.testing.assert_array_equal(passed, images.astype(np.float32) / 255.0)
    direct = np.array([p.digit for p in rec.predict_arrays(images)])
    assert np.array_equal(direct, [p.digit for p in rec.predict_arrays(passed)])
    reframed = np.array([p.digit for p in rec.predict_arrays(np.stack([glyph_to_mnist(im / 255.0) for im in images]))])
    scans = np.array([p.digit for p in rec.predict([255 - im for im in images])])
    assert (scans == labels).mean() >= (reframed == labels).mean() - 0.005
    assert (scans == labels).mean() >= (direct == labels).mean() - 0.015


def test_cmyk_and_16bit_files_are_read(tmp_path, digit_image):
    cmyk = digit_image.convert("CMYK")
    np.testing.assert_allclose(to_mnist(encode(cmyk, "JPEG", quality=95)), to_mnist(digit_image), atol=0.1)
    sixteen = Image.fromarray((np.asarray(digit_image, np.uint16) * 257).astype(np.uint16))
    path = tmp_path / "d16.png"
    sixteen.save(path)
    np.testing.assert_allclose(to_mnist(path), to_mnist(digit_image), atol=1e-5)


def test_decompression_bomb_is_a_clear_error(monkeypatch):
    big = encode(Image.new("L", (400, 400), 255))  # small file, many pixels
    monkeypatch.setattr("digitrec.data.decode.MAX_PIXELS", 1000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # Pillow's own guard trips first
    with pytest.raises(ImageError, match="too large"):
        to_mnist(big)


def test_one_colour_images_are_no_digit():
    for colour in (0, 128, 255):
        with pytest.raises(NoDigitError):
            to_mnist(Image.new("RGB", (64, 48), (colour, colour, colour)))


# --- decoding: the allowed formats and big phone photos ---------------------------------------

from digitrec.data.preprocess import IMAGE_FORMATS, decode_image, image_size  # noqa: E402


def big_page(size: tuple[int, int] = (8000, 6000)) -> Image.Image:
    """A 48-megapixel grey page with one thick dark "7" (cheap: mostly flat, so JPEG is quick)."""
    img = Image.new("L", size, 240)
    ImageDraw.Draw(img).line([(3000, 2000), (4400, 2000), (3600, 4400)], fill=20, width=240)
    return img


def ink_bounds(gray: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), exclusive ends, of the pixels above ``threshold``."""
    ys, xs = np.nonzero(gray > threshold)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.mark.parametrize(("fmt", "mode"), [("EPS", "L"), ("PPM", "RGB"), ("PPM", "L")])  # PPM of L is PGM
def test_formats_outside_the_allow_list_are_not_decoded(tmp_path, monkeypatch, digit_image, fmt, mode):
    data = encode(digit_image.convert(mode), fmt)
    consulted = []  # Pillow must not even try the plugin (EPS would hand the file to Ghostscript)
    factory, accept = Image.OPEN[fmt]
    monkeypatch.setitem(Image.OPEN, fmt, (lambda *a: consulted.append(fmt) or factory(*a), accept))
    path = tmp_path / f"digit.{fmt.lower()}"
    path.write_bytes(data)
    for source in (data, path, io.BytesIO(data)):
        with pytest.raises(ImageError, match="not a recognised image format") as info:
            to_mnist(source)
        message = str(info.value)
        assert "\n" not in message and "PNG, JPEG, BMP, GIF, TIFF, WEBP" in message
        with pytest.raises(ImageError, match="not a recognised image format"):
            image_size(source if not isinstance(source, io.BytesIO) else io.BytesIO(data))
    assert consulted == []
    # A PIL image the caller opened is decoded by its own plugin: refused until it is loaded.
    monkeypatch.setitem(Image.OPEN, fmt, (factory, accept))
    if fmt == "PPM":
        lazy = Image.open(io.BytesIO(data))
        with pytest.raises(ImageError, match="PPM images are not decoded"):
            to_mnist(lazy)
        lazy.load()
        assert_mnist_like(to_mnist(lazy))


def test_allowed_formats_are_all_decoded(digit_image):
    assert IMAGE_FORMATS == ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
    for fmt in IMAGE_FORMATS:
        out = to_mnist(encode(digit_image, fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {})))
        assert np.abs(out - to_mnist(digit_image)).mean() < 0.02, fmt


def test_a_48_megapixel_jpeg_is_read_at_half_size_with_boxes_in_its_pixels():
    page = big_page()
    data = encode(page, "JPEG", quality=85)
    assert image_size(data) == (8000, 6000)
    decoded = decode_image(data)
    assert decoded.image.size == (4000, 3000) and decoded.scale == 2.0 and decoded.size == (8000, 6000)
    out = to_mnist(data)
    assert_mnist_like(out)
    assert np.abs(out - to_mnist(page.resize((800, 600), Image.Resampling.BOX))).mean() < 0.02
    cleaned = ink_map(data)
    assert cleaned.shape == (6000, 8000) and max(cleaned.ink.shape) == 1024
    # The ink's box, scaled back, lands on the drawn stroke in the 8000x6000 file's pixels.
    found = np.array(ink_bounds(cleaned.ink, 0.0)) * cleaned.scale
    drawn = np.array(ink_bounds(255 - np.asarray(page), 128))  # uint8: 48 MB, not 192
    np.testing.assert_allclose(found, drawn, atol=2 * cleaned.scale)


def test_big_non_jpeg_images_are_still_refused(monkeypatch, digit_image):
    monkeypatch.setattr("digitrec.data.decode.MAX_PIXELS", 300 * 200 - 1)
    for fmt in ("PNG", "WEBP", "TIFF"):
        with pytest.raises(ImageError, match="too large .*only JPEG is read at a reduced size"):
            to_mnist(encode(digit_image, fmt))


def test_jpeg_draft_takes_the_least_reduction_that_fits(monkeypatch, digit_image):
    data = encode(digit_image, "JPEG", quality=95)  # 300x200
    for limit, reduction in [(300 * 200, 1), (150 * 100, 2), (150 * 100 - 1, 4), (38 * 25, 8)]:
        monkeypatch.setattr("digitrec.data.decode.MAX_PIXELS", limit)
        decoded = decode_image(data)
        assert decoded.scale == reduction and decoded.size == (300, 200)
        assert decoded.image.size == (-(-300 // reduction), -(-200 // reduction))
    monkeypatch.setattr("digitrec.data.decode.MAX_PIXELS", 38 * 25 - 1)
    with pytest.raises(ImageError, match="too large .*even at 1/8 scale"):
        to_mnist(data)
    # A PIL image is the caller's: never drafted (that would change it), refused as before.
    monkeypatch.setattr("digitrec.data.decode.MAX_PIXELS", 150 * 100)
    lazy = Image.open(io.BytesIO(data))
    with pytest.raises(ImageError, match="too large"):
        to_mnist(lazy)
    assert lazy.size == (300, 200)


def test_drafted_jpeg_keeps_exif_orientation_and_the_input_shape(monkeypatch):
    img = Image.new("L", (800, 400), 255)
    ImageDraw.Draw(img).rectangle([100, 150, 300, 250], fill=0)  # ink on the left, stored wide
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed turned 90 degrees clockwise: 400 wide, 800 high
    data = encode(img, "JPEG", quality=95, exif=exif.tobytes())
    monkeypatch.setattr("digitrec.data.decode.MAX_PIXELS", 50_000)  # half size, 80,000 pixels, is over
    decoded = decode_image(data)
    assert decoded.scale == 4 and decoded.image.size == (100, 200) and decoded.size == (400, 800)
    cleaned = ink_map(data)
    assert cleaned.shape == (800, 400) and cleaned.scale == 4
    # Turned clockwise, the stored box x 100..300, y 150..250 shows at x 150..250, y 100..300.
    found = np.array(ink_bounds(cleaned.ink, 0.0)) * cleaned.scale
    np.testing.assert_allclose(found, [150, 100, 250, 300], atol=2 * cleaned.scale)
