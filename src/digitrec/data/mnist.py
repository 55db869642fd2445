"""MNIST data: an IDX reader, a checksum-verified provider, and a downloader.

Lookup order for the four files: ``$DIGITREC_DATA_DIR``, then the user cache directory, and
otherwise a download from public mirrors into the cache (or into ``$DIGITREC_DATA_DIR`` when it
is set). Checksums are of the *decompressed* content, so a re-compressed ``.gz`` still verifies.
Finding and reading the files is :mod:`digitrec.data.datasets`'s, shared with the other IDX
datasets; the functions here are MNIST's entry points to it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from digitrec.errors import ConfigError, DatasetError
from digitrec.fileio import atomic_write, cache_dir

__all__ = [
    "DATA_DIR_ENV",
    "MIRRORS",
    "MNIST_FILES",
    "MNIST_SHA256",
    "MNIST",
    "Split",
    "read_idx",
    "parse_idx",
    "default_cache_dir",
    "find_data_dir",
    "load_mnist",
    "download_mnist",
    "data_status",
    "split_train_val",
]

DATA_DIR_ENV = "DIGITREC_DATA_DIR"

# Tried in order; the first that serves a file with the right decompressed checksum wins.
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

# (split, kind) -> base file name (without .gz).
MNIST_FILES: dict[tuple[str, str], str] = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}

# SHA-256 of the decompressed official files.
MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

# IDX type codes (third magic byte) -> numpy dtype, big-endian as the format specifies.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024  # per file, compressed or not; MNIST's largest is 47 MB raw

Split = Literal["train", "test"]
ProgressFactory = Callable[[str, int | None], Callable[[int], None]]


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of one IDX file into an array, validating header, dimensions and length."""
    if len(raw) < 4:
        raise DatasetError(f"{name}: too short to be an IDX file ({len(raw)} bytes)")
    zero1, zero2, type_code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero1 != 0 or zero2 != 0 or type_code not in _IDX_DTYPES:
        raise DatasetError(f"{name}: bad IDX magic number {raw[:4].hex()}")
    if ndim == 0:
        raise DatasetError(f"{name}: IDX file declares zero dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{name}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[type_code]
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no silent overflow
    actual = len(raw) - header
    if actual != expected:
        kind = "truncated" if actual < expected else "has trailing bytes"
        raise DatasetError(
            f"{name}: IDX data {kind}: expected {expected} bytes for shape {shape}, found {actual}"
        )
    # copy(): frombuffer views are read-only, and torch warns on (and cannot share) those.
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).copy()


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from exc


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed (chosen by the ``.gz`` suffix)."""
    p = Path(path)
    return parse_idx(_read_bytes(p), str(p))


@dataclass(frozen=True)
class MNIST:
    """The four arrays of an IDX dataset (MNIST or another), uint8 images (N, 28, 28) and int64 labels (N,)."""

    train_images: np.ndarray  # (60000, 28, 28) uint8, 0 = background
    train_labels: np.ndarray  # (60000,) int64 in 0..9
    test_images: np.ndarray  # (10000, 28, 28) uint8
    test_labels: np.ndarray  # (10000,) int64
    directory: Path  # where the files were read from
    sha256: dict[str, str] = field(default_factory=dict)  # file base name -> decompressed SHA-256
    name: str = "mnist"  # the dataset's name in the table of digitrec.data.datasets, or its folder
    class_names: tuple[str, ...] = tuple(str(d) for d in range(10))  # the name of each label

    def split(self, name: Split) -> tuple[np.ndarray, np.ndarray]:
        """Return (images, labels) of ``"train"`` or ``"test"``."""
        if name == "train":
            return self.train_images, self.train_labels
        if name == "test":
            return self.test_images, self.test_labels
        raise ConfigError(f"unknown split {name!r} (use 'train' or 'test')")


def default_cache_dir() -> Path:
    """The per-user cache directory where downloads go when no data directory is set."""
    return cache_dir("mnist")


def _file_in(directory: Path, base: str) -> Path | None:
    for candidate in (directory / base, directory / f"{base}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The directory holding all four files, or None.

    An explicit ``data_dir`` is the only place looked at (a typo must not silently read
    another copy); otherwise ``$DIGITREC_DATA_DIR``, then the user cache.
    """
    from digitrec.data.datasets import DATASETS, find_dataset_dir

    return find_dataset_dir(DATASETS["mnist"], data_dir)


def _fetch(url: str, timeout: float, progress: ProgressFactory | None) -> bytes:
    # Plain http is acceptable for a mirror: nothing is kept unless its SHA-256 matches.
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310
        total = resp.headers.get("Content-Length")
        update = progress(url.rsplit("/", 1)[-1], int(total) if total else None) if progress else None
        chunks = []
        received = 0
        while chunk := resp.read(1 << 16):
            received += len(chunk)
            if received > _MAX_DOWNLOAD_BYTES:
                raise ValueError(f"more than {_MAX_DOWNLOAD_BYTES:,} bytes; not an MNIST file")
            chunks.append(chunk)
            if update:
                update(len(chunk))
        return b"".join(chunks)


def _gunzip_capped(payload: bytes) -> bytes:
    # A hostile mirror could send a small gzip that inflates to gigabytes; stop past the cap.
    with gzip.GzipFile(fileobj=io.BytesIO(payload)) as fh:
        content = fh.read(_MAX_DOWNLOAD_BYTES + 1)
    if len(content) > _MAX_DOWNLOAD_BYTES:
        raise ValueError(f"decompresses to more than {_MAX_DOWNLOAD_BYTES:,} bytes; not an MNIST file")
    return content


def download_mnist(
    directory: str | os.PathLike[str],
    *,
    mirrors: Sequence[str] = MIRRORS,
    checksums: dict[str, str] = MNIST_SHA256,
    timeout: float = 30.0,
    progress: ProgressFactory | None = None,
    title: str = "MNIST",
    env: str = DATA_DIR_ENV,
) -> Path:
    """Download any missing MNIST files (or another dataset's: ``checksums``, ``title``) into ``directory``.

    Each file is fetched as ``.gz`` from the mirrors in order; a mirror whose file does not
    decompress to the expected SHA-256 is skipped. Files are written atomically.
    ``progress(name, total_bytes)`` may return a callable that receives byte counts; ``title``
    and ``env`` (the dataset's folder setting) are for the error message. Returns ``directory``.
    """
    target = Path(directory)
    for base in checksums:
        if _file_in(target, base) is not None:
            continue
        errors: list[str] = []
        for mirror in mirrors:
            url = f"{mirror}{base}.gz"
            try:
                payload = _fetch(url, timeout, progress)
                content = _gunzip_capped(payload)
            except (urllib.error.URLError, OSError, EOFError, zlib.error, ValueError) as exc:
                errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
                continue
            if hashlib.sha256(content).hexdigest() != checksums[base]:
                errors.append(f"{url}: checksum mismatch")
                continue
            try:
                with atomic_write(target / f"{base}.gz") as fh:
                    fh.write(payload)
            except OSError as exc:
                raise DatasetError(f"cannot write {target / base}.gz: {exc}") from exc
            break
        else:
            raise DatasetError(
                f"could not download {base} from {len(mirrors)} mirror(s) "
                f"(last error: {errors[-1] if errors else 'no mirrors'}); "
                f"put the four {title} files in {target} or set {env}"
            )
    return target


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    verify: bool = True,
    progress: ProgressFactory | None = None,
) -> MNIST:
    """Load MNIST, downloading it first if no directory holds the four files.

    ``data_dir`` overrides ``$DIGITREC_DATA_DIR``. Reading never writes, so a read-only
    directory works. Raises :class:`DatasetError` with a one-line reason on any failure.
    """
    from digitrec.data.datasets import load_dataset

    return load_dataset("mnist", data_dir, download=download, verify=verify, progress=progress)


def data_status(data_dir: str | os.PathLike[str] | None = None) -> Any:
    """Locate MNIST without downloading and report checksums, shapes and class counts.

    Returns a :class:`digitrec.data.datasets.DatasetStatus`.
    """
    from digitrec.data.datasets import dataset_status

    return dataset_status("mnist", data_dir)


def split_train_val(
    images: np.ndarray, labels: np.ndarray, val_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded random split into (train_x, train_y, val_x, val_y), stratification-free."""
    if val_size >= len(images):
        raise ConfigError(f"validation size {val_size} leaves no training images (of {len(images)})")
    order = np.random.default_rng(seed).permutation(len(images))
    val_idx, train_idx = order[:val_size], order[val_size:]
    return images[train_idx], labels[train_idx], images[val_idx], labels[val_idx]
