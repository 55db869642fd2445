"""Shared fixtures and helpers: made-up IDX datasets, drawn digits, a tiny model file, the real MNIST, a free port."""

from __future__ import annotations

import gzip
import io
import os
import socket
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from digitrec.data.mnist import DATA_DIR_ENV, MNIST_FILES, find_data_dir, load_mnist
from digitrec.fileio import CACHE_DIR_ENV
from digitrec.models.checkpoint import save_model
from digitrec.models.registry import create_model

# Tests that need the real MNIST skip where no copy is found (CI always has one: .ci/run checks).
requires_mnist = pytest.mark.skipif(
    find_data_dir() is None, reason="real MNIST not found (set DIGITREC_DATA_DIR)"
)


def pytest_configure(config: pytest.Config) -> None:
    """One fresh user cache for the session (and the CLI processes it starts): exported ONNX graphs
    from earlier sessions or other checkouts must not decide which path a test takes. A copy of
    MNIST found in the real cache stays in use, through the data-directory setting."""
    found = find_data_dir()
    if found is not None and not os.environ.get(DATA_DIR_ENV):
        os.environ[DATA_DIR_ENV] = str(found)
    os.environ[CACHE_DIR_ENV] = tempfile.mkdtemp(prefix="digitrec-test-cache-")

# numpy dtype -> IDX type code (third magic byte).
_IDX_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(">i2"): 0x0B,
    np.dtype(">i4"): 0x0C,
    np.dtype(">f4"): 0x0D,
    np.dtype(">f8"): 0x0E,
}


def make_idx_bytes(array: np.ndarray) -> bytes:
    """Encode ``array`` (uint8/int8 or a big-endian dtype) as the bytes of one IDX file."""
    code = _IDX_CODES[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_mnist_dir(
    directory: Path, n_train: int = 50, n_test: int = 20, *, seed: int = 0, gz: bool = True
) -> dict[tuple[str, str], np.ndarray]:
    """Write a made-up four-file MNIST-format dataset into ``directory``; returns its arrays."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        ("train", "images"): rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        ("train", "labels"): (np.arange(n_train) % 10).astype(np.uint8),
        ("test", "images"): rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        ("test", "labels"): ((np.arange(n_test) * 3) % 10).astype(np.uint8),
    }
    for key, base in MNIST_FILES.items():
        raw = make_idx_bytes(arrays[key])
        if gz:
            (directory / f"{base}.gz").write_bytes(gzip.compress(raw))
        else:
            (directory / base).write_bytes(raw)
    return arrays


@pytest.fixture
def idx_bytes():
    """The IDX encoder, as a fixture for tests that build their own files."""
    return make_idx_bytes


@pytest.fixture
def make_mnist_dir():
    """The made-up dataset writer, for tests that need more than one directory."""
    return write_mnist_dir


@dataclass(frozen=True)
class TinyDataset:
    directory: Path  # holds the four gzip-compressed IDX files
    arrays: dict[tuple[str, str], np.ndarray]  # (split, kind) -> what was written


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> TinyDataset:
    """A made-up MNIST directory (50 train / 20 test images, .gz) and the arrays in it."""
    directory = tmp_path / "tiny-mnist"
    return TinyDataset(directory, write_mnist_dir(directory))


@pytest.fixture
def tiny_idx_dir(tiny_dataset: TinyDataset) -> Path:
    """The directory of ``tiny_dataset``."""
    return tiny_dataset.directory


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the user cache at an empty temporary folder and unset ``$DIGITREC_DATA_DIR``."""
    cache = tmp_path / "cache" / "mnist"
    monkeypatch.setattr("digitrec.data.mnist.default_cache_dir", lambda: cache)
    monkeypatch.delenv("DIGITREC_DATA_DIR", raising=False)
    return cache


@pytest.fixture(scope="session")
def real_mnist():
    """The real MNIST, loaded once (skips when no directory holds it)."""
    directory = find_data_dir()
    if directory is None:
        pytest.skip("real MNIST not found (set DIGITREC_DATA_DIR)")
    return load_mnist(directory, download=False)


def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """The CLI's one error line of a failed run (exit 1, no traceback), checked to hold each of ``needles``."""
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (for a server started in a subprocess)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def draw_digit(size: tuple[int, int] = (300, 200), offset: tuple[int, int] = (40, 30)) -> Image.Image:
    """A black "7" drawn on a white greyscale canvas, away from the centre."""
    img = Image.new("L", size, 255)
    x, y = offset
    ImageDraw.Draw(img).line([(x, y), (x + 70, y), (x + 30, y + 120)], fill=0, width=12)
    return img


@pytest.fixture
def digit_image() -> Image.Image:
    """A black-on-white "7" on a 300x200 canvas, off-centre."""
    return draw_digit()


@pytest.fixture
def digit_png(digit_image: Image.Image) -> bytes:
    """``digit_image`` encoded as PNG bytes."""
    buf = io.BytesIO()
    digit_image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def tiny_model_file(tmp_path: Path) -> Path:
    """An untrained (seeded) seed-CNN saved as a digitrec model file."""
    torch.manual_seed(0)
    model = create_model("seed").eval()
    return save_model(tmp_path / "tiny.safetensors", model, "seed", {})
