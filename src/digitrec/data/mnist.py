"""MNIST data: an IDX reader, a checksum-verified provider, and a downloader.

Lookup order for the four files: ``$DIGITREC_DATA_DIR``, then the user cache directory, and
otherwise a download from public mirrors into the cache (or into ``$DIGITREC_DATA_DIR`` when it
is set). Checksums are of the *decompressed* content, so a re-compressed ``.gz`` still verifies.
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
from typing import Literal

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
    "DataStatus",
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
    """The four MNIST arrays, uint8 images (N, 28, 28) and int64 labels (N,)."""

    train_images: np.ndarray  # (60000, 28, 28) uint8, 0 = background
    train_labels: np.ndarray  # (60000,) int64 in 0..9
    test_images: np.ndarray  # (10000, 28, 28) uint8
    test_labels: np.ndarray  # (10000,) int64
    directory: Path  # where the files were read from
    sha256: dict[str, str] = field(default_factory=dict)  # file base name -> decompressed SHA-256

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


def _has_all(directory: Path) -> bool:
    return all(_file_in(directory, base) is not None for base in MNIST_FILES.values())


def find_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The directory holding all four files, or None.

    An explicit ``data_dir`` is the only place looked at (a typo must not silently read
    another copy); otherwise ``$DIGITREC_DATA_DIR``, then the user cache.
    """
    if data_dir is not None:
        return Path(data_dir) if _has_all(Path(data_dir)) else None
    candidates: list[Path] = []
    if os.environ.get(DATA_DIR_ENV):
        candidates.append(Path(os.environ[DATA_DIR_ENV]))
    candidates.append(default_cache_dir())
    for directory in candidates:
        if _has_all(directory):
            return directory
    return None


def _download_target(data_dir: str | os.PathLike[str] | None) -> Path:
    if data_dir is not None:
        return Path(data_dir)
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    return default_cache_dir()


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
) -> Path:
    """Download any missing MNIST files into ``directory`` and return it.

    Each file is fetched as ``.gz`` from the mirrors in order; a mirror whose file does not
    decompress to the expected SHA-256 is skipped. Files are written atomically.
    ``progress(name, total_bytes)`` may return a callable that receives byte counts.
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
                f"put the four MNIST files in {target} or set {DATA_DIR_ENV}"
            )
    return target


def _load_verified(path: Path, base: str, verify: bool) -> tuple[np.ndarray, str]:
    raw = _read_bytes(path)
    digest = hashlib.sha256(raw).hexdigest()
    if verify and base in MNIST_SHA256 and digest != MNIST_SHA256[base]:
        raise DatasetError(
            f"{path}: SHA-256 of the decompressed content is {digest[:12]}..., expected "
            f"{MNIST_SHA256[base][:12]}... (corrupt or not MNIST; delete it to re-download)"
        )
    return parse_idx(raw, str(path)), digest


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
    directory = find_data_dir(data_dir)
    if directory is None:
        target = _download_target(data_dir)
        if not download:
            raise DatasetError(
                f"MNIST not found; put the four IDX files in {target} or set {DATA_DIR_ENV}"
            )
        directory = download_mnist(target, progress=progress)
    arrays: dict[tuple[str, str], np.ndarray] = {}
    digests: dict[str, str] = {}
    for key, base in MNIST_FILES.items():
        path = _file_in(directory, base)
        assert path is not None  # guaranteed by find_data_dir / download_mnist
        arrays[key], digests[base] = _load_verified(path, base, verify)
    for split in ("train", "test"):
        images, labels = arrays[(split, "images")], arrays[(split, "labels")]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetError(
                f"{directory}: {split} images {images.shape} do not match labels {labels.shape}"
            )
    return MNIST(
        train_images=arrays[("train", "images")],
        train_labels=arrays[("train", "labels")].astype(np.int64),
        test_images=arrays[("test", "images")],
        test_labels=arrays[("test", "labels")].astype(np.int64),
        directory=directory,
        sha256=digests,
    )


@dataclass(frozen=True)
class DataStatus:
    """What ``digitrec data`` reports."""

    directory: str | None  # where the files are, or None when not found
    files: dict[str, dict[str, object]]  # base name -> {path, sha256, ok, shape}
    class_counts: dict[str, list[int]]  # split -> counts of labels 0..9

    @property
    def ok(self) -> bool:
        """True when all four files were found and match their checksums."""
        return self.directory is not None and all(f["ok"] for f in self.files.values())


def data_status(data_dir: str | os.PathLike[str] | None = None) -> DataStatus:
    """Locate MNIST without downloading and report checksums, shapes and class counts."""
    directory = find_data_dir(data_dir)
    if directory is None:
        return DataStatus(directory=None, files={}, class_counts={})
    files: dict[str, dict[str, object]] = {}
    counts: dict[str, list[int]] = {}
    for (split, kind), base in MNIST_FILES.items():
        path = _file_in(directory, base)
        assert path is not None
        try:
            array, digest = _load_verified(path, base, verify=False)
        except DatasetError as exc:  # report every file, not only the first bad one
            files[base] = {"path": str(path), "sha256": None, "ok": False, "shape": None, "error": str(exc)}
            continue
        files[base] = {
            "path": str(path),
            "sha256": digest,
            "ok": digest == MNIST_SHA256[base],
            "shape": list(array.shape),
        }
        if kind == "labels":
            counts[split] = np.bincount(array.astype(np.int64), minlength=10).tolist()
    return DataStatus(directory=str(directory), files=files, class_counts=counts)


def split_train_val(
    images: np.ndarray, labels: np.ndarray, val_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded random split into (train_x, train_y, val_x, val_y), stratification-free."""
    if val_size >= len(images):
        raise ConfigError(f"validation size {val_size} leaves no training images (of {len(images)})")
    order = np.random.default_rng(seed).permutation(len(images))
    val_idx, train_idx = order[:val_size], order[val_size:]
    return images[train_idx], labels[train_idx], images[val_idx], labels[val_idx]
