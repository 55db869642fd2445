"""Which IDX dataset to use: the table of known ones (MNIST, Fashion-MNIST), where each is found, IDX folders.

A dataset is named (``"mnist"``, ``"fashion-mnist"``) or given as a folder holding the four
IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``, each raw or ``.gz``) and optionally ``classes.txt``, one class name
a line. A named dataset is looked for, in order: in the explicit folder when one is given (and
only there), in the folder its environment setting names, where its Debian package installs it,
in the user cache; otherwise it is downloaded from its mirrors into the cache (or the setting's
folder), every file checked against its SHA-256. Checksums are of the *decompressed* content:
Debian's ``.gz`` files are re-compressed and differ from the upstream ones byte for byte.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitrec.data import mnist as _mnist
from digitrec.data.mnist import MNIST, MNIST_FILES, ProgressFactory, download_mnist, parse_idx
from digitrec.errors import ConfigError, DatasetError
from digitrec.fileio import cache_dir

__all__ = [
    "DIGITS",
    "DatasetInfo",
    "DATASETS",
    "CLASSES_FILE",
    "MAX_CLASSES",
    "DatasetStatus",
    "dataset_names",
    "dataset_info",
    "dataset_cache_dir",
    "find_dataset_dir",
    "read_dataset_dir",
    "load_dataset",
    "dataset_status",
]

DIGITS: tuple[str, ...] = tuple(str(d) for d in range(10))  # the class names of a digit model
CLASSES_FILE = "classes.txt"  # optional in a dataset folder: one class name a line, in label order
MAX_CLASSES = 256  # IDX labels here are bytes; a longer classes.txt is not a class list
_MAX_CLASS_NAME = 100  # characters; names are shown in tables and stored in model files


@dataclass(frozen=True)
class DatasetInfo:
    """One known dataset: its files and checksums, where to get it, and what its classes are called."""

    name: str  # what --dataset takes, e.g. "fashion-mnist"
    title: str  # how messages name it, e.g. "Fashion-MNIST"
    sha256: Mapping[str, str]  # file base name (no .gz) -> SHA-256 of the decompressed file
    mirrors: tuple[str, ...]  # URL prefixes tried in order for "<base>.gz"
    class_names: tuple[str, ...]  # the name of each label, in label order
    env: str  # environment setting naming a folder that holds the files
    system_dir: str | None = None  # where a system package installs the files, if one does
    package: str | None = None  # that Debian package

    @property
    def files(self) -> Mapping[tuple[str, str], str]:
        """(split, kind) -> file base name; every known dataset uses MNIST's four names."""
        return MNIST_FILES


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist", title="MNIST", sha256=_mnist.MNIST_SHA256, mirrors=_mnist.MIRRORS, class_names=DIGITS,
        env=_mnist.DATA_DIR_ENV,
    ),
    # Checksums measured on Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1 (gzip -l shows the
    # same compressed sizes as upstream's files less the stored file name, i.e. the same deflate data).
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        title="Fashion-MNIST",
        sha256={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                     "Ankle boot"),
        env="DIGITREC_FASHION_MNIST_DIR",
        system_dir="/usr/share/datasets/fashion-mnist",
        package="dataset-fashion-mnist",
    ),
}


def dataset_names() -> list[str]:
    """Names of the known datasets, in table order."""
    return list(DATASETS)


def dataset_info(name: str) -> DatasetInfo:
    """The table row of a known dataset; :class:`ConfigError` naming the known ones otherwise."""
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; use {', '.join(DATASETS)} or a folder of IDX files")
    return DATASETS[name]


def dataset_cache_dir(info: DatasetInfo) -> Path:
    """The per-user cache folder of a known dataset (where downloads go by default)."""
    # MNIST's through its module, so that code (and tests) that move MNIST's cache see it here too.
    return _mnist.default_cache_dir() if info.name == "mnist" else cache_dir(info.name)


def _missing(directory: Path) -> list[str]:
    return [base for base in MNIST_FILES.values() if _mnist._file_in(directory, base) is None]


def find_dataset_dir(info: DatasetInfo, data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The folder holding all four files of ``info``, or None.

    An explicit ``data_dir`` is the only place looked at (a typo must not silently read
    another copy); otherwise the dataset's environment setting, its package's folder, the cache.
    """
    if data_dir is not None:
        return None if _missing(Path(data_dir)) else Path(data_dir)
    candidates = [Path(os.environ[info.env])] if os.environ.get(info.env) else []
    if info.system_dir:
        candidates.append(Path(info.system_dir))
    candidates.append(dataset_cache_dir(info))
    return next((d for d in candidates if not _missing(d)), None)


def _download_target(info: DatasetInfo, data_dir: str | os.PathLike[str] | None) -> Path:
    if data_dir is not None:
        return Path(data_dir)
    if os.environ.get(info.env):
        return Path(os.environ[info.env])
    return dataset_cache_dir(info)


def _read_checked(path: Path, expected: str | None, verify: bool) -> tuple[np.ndarray, str]:
    raw = _mnist._read_bytes(path)
    digest = hashlib.sha256(raw).hexdigest()
    if verify and expected is not None and digest != expected:
        raise DatasetError(
            f"{path}: SHA-256 of the decompressed content is {digest[:12]}..., expected "
            f"{expected[:12]}... (corrupt or not the dataset; delete it to re-download)"
        )
    return parse_idx(raw, str(path)), digest


def _read_class_names(directory: Path, count: int) -> tuple[str, ...] | None:
    """The names in ``directory/classes.txt`` (None without one), checked against the labels' ``count``."""
    path = directory / CLASSES_FILE
    if not path.is_file():
        return None
    try:
        with path.open("rb") as fh:
            blob = fh.read(MAX_CLASSES * (_MAX_CLASS_NAME + 2) + 1)
        text = blob.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from exc
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()  # a trailing blank line is not a class
    if any(not n for n in names):
        raise DatasetError(f"{path}: line {names.index('') + 1} is empty; give one class name a line")
    if any(len(n) > _MAX_CLASS_NAME for n in names):
        raise DatasetError(f"{path}: a class name is longer than {_MAX_CLASS_NAME} characters")
    if len(set(names)) != len(names):
        raise DatasetError(f"{path}: class names repeat; each label needs its own name")
    if len(names) != count:
        raise DatasetError(f"{path}: names {len(names)} classes, but the labels run 0..{count - 1} ({count} classes)")
    return tuple(names)


def read_dataset_dir(directory: str | os.PathLike[str], info: DatasetInfo | None = None, *,
                     verify: bool = True) -> MNIST:
    """Read the four IDX files in ``directory`` (checked against ``info``'s checksums when given).

    Images must be (N, 28, 28) bytes and labels (N,) integers from 0; the class names are
    ``info``'s, else those in ``classes.txt``, else the labels' numbers. Reading never writes.
    """
    folder = Path(directory)
    what = info.title if info is not None else "dataset"
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder (a {what} folder holds the four IDX files)")
    missing = _missing(folder)
    if missing:
        raise DatasetError(f"{folder}: missing {', '.join(missing)} (raw or .gz)")
    arrays: dict[tuple[str, str], np.ndarray] = {}
    digests: dict[str, str] = {}
    for key, base in MNIST_FILES.items():
        path = _mnist._file_in(folder, base)
        assert path is not None  # checked above
        expected = info.sha256.get(base) if info is not None else None
        arrays[key], digests[base] = _read_checked(path, expected, verify)
    for split in ("train", "test"):
        images, labels = arrays[(split, "images")], arrays[(split, "labels")]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetError(f"{folder}: {split} images {images.shape} do not match labels {labels.shape}")
        if images.shape[1:] != (28, 28) or images.dtype != np.uint8:
            raise DatasetError(f"{folder}: {split} images must be 28x28 bytes, got {images.shape[1:]} {images.dtype}")
        if labels.dtype.kind not in "iu" or (len(labels) and labels.min() < 0):
            raise DatasetError(f"{folder}: {split} labels must be integers from 0")
    labels_all = np.concatenate([arrays[("train", "labels")], arrays[("test", "labels")]]).astype(np.int64)
    count = int(labels_all.max()) + 1 if len(labels_all) else 0
    if info is not None:
        names = info.class_names
    else:
        if count > MAX_CLASSES:
            raise DatasetError(f"{folder}: labels run to {count - 1}; at most {MAX_CLASSES} classes")
        names = _read_class_names(folder, count) or tuple(str(i) for i in range(count))
        if len(names) < 2:
            raise DatasetError(f"{folder}: the labels hold {len(names)} class; training needs at least two")
    if count > len(names):
        raise DatasetError(f"{folder}: labels run to {count - 1}, but {what} has {len(names)} classes")
    return MNIST(
        train_images=arrays[("train", "images")],
        train_labels=arrays[("train", "labels")].astype(np.int64),
        test_images=arrays[("test", "images")],
        test_labels=arrays[("test", "labels")].astype(np.int64),
        directory=folder,
        sha256=digests,
        name=info.name if info is not None else str(folder),
        class_names=names,
    )


def _not_found(info: DatasetInfo, target: Path) -> str:
    package = f"apt-get install {info.package}, " if info.package else ""
    return f"{info.title} not found; {package}put the four IDX files in {target} or set {info.env}"


def load_dataset(
    dataset: str | os.PathLike[str] = "mnist",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    verify: bool = True,
    progress: ProgressFactory | None = None,
) -> MNIST:
    """Load a known dataset by name (downloading it if no folder holds it) or a folder of IDX files.

    ``data_dir`` is the folder of a named dataset (it overrides the dataset's setting); with a
    folder as ``dataset`` it must be None. Raises :class:`DatasetError` with a one-line reason.
    """
    text = os.fspath(dataset)
    if text not in DATASETS:
        if data_dir is not None:
            raise ConfigError("--data-dir is for a named dataset; give the folder as the dataset alone")
        if not Path(text).is_dir():
            raise ConfigError(f"unknown dataset {text!r}; use {', '.join(DATASETS)} or a folder of IDX files")
        return read_dataset_dir(text)
    info = DATASETS[text]
    directory = find_dataset_dir(info, data_dir)
    if directory is None:
        target = _download_target(info, data_dir)
        if not download:
            raise DatasetError(_not_found(info, target))
        directory = download_mnist(target, mirrors=info.mirrors, checksums=dict(info.sha256), progress=progress,
                                   title=info.title, env=info.env)
    return read_dataset_dir(directory, info, verify=verify)


@dataclass(frozen=True)
class DatasetStatus:
    """What ``digitrec data`` reports for one dataset."""

    name: str  # the dataset's name, or the folder given
    title: str  # how to call it in messages
    directory: str | None  # where the files are, or None when not found
    files: dict[str, dict[str, object]]  # base name -> {path, sha256, ok, shape[, error]}
    class_counts: dict[str, list[int]]  # split -> images per label
    class_names: list[str]  # the name of each label (empty when not found or not readable)
    error: str | None = None  # why a folder's files do not make a dataset (e.g. a bad classes.txt)

    @property
    def ok(self) -> bool:
        """True when all four files were found, read, and (for a known dataset) match their checksums."""
        return self.directory is not None and self.error is None and all(f["ok"] for f in self.files.values())


def dataset_status(dataset: str | os.PathLike[str] = "mnist",
                   data_dir: str | os.PathLike[str] | None = None) -> DatasetStatus:
    """Locate a dataset without downloading and report checksums, shapes and class counts."""
    text = os.fspath(dataset)
    info = DATASETS.get(text)
    if info is None and data_dir is not None:
        raise ConfigError("--data-dir is for a named dataset; give the folder as the dataset alone")
    if info is None and not Path(text).is_dir():
        raise ConfigError(f"unknown dataset {text!r}; use {', '.join(DATASETS)} or a folder of IDX files")
    directory = find_dataset_dir(info, data_dir) if info is not None else (None if _missing(Path(text)) else Path(text))
    title = info.title if info is not None else text
    if directory is None:
        return DatasetStatus(text, title, None, {}, {}, [])
    files: dict[str, dict[str, object]] = {}
    counts: dict[str, list[int]] = {}
    for (split, kind), base in MNIST_FILES.items():
        path = _mnist._file_in(directory, base)
        assert path is not None
        try:
            array, digest = _read_checked(path, None, verify=False)
        except DatasetError as exc:  # report every file, not only the first bad one
            files[base] = {"path": str(path), "sha256": None, "ok": False, "shape": None, "error": str(exc)}
            continue
        expected = info.sha256.get(base) if info is not None else None
        files[base] = {"path": str(path), "sha256": digest, "ok": expected is None or digest == expected,
                       "shape": list(array.shape)}
        if kind == "labels":
            size = len(info.class_names) if info is not None else 0
            counts[split] = np.bincount(array.astype(np.int64), minlength=size).tolist()
    if info is not None:
        return DatasetStatus(text, title, str(directory), files, counts, list(info.class_names))
    try:
        names = list(read_dataset_dir(directory, verify=False).class_names)
    except DatasetError as exc:
        return DatasetStatus(text, title, str(directory), files, counts, [], error=str(exc))
    return DatasetStatus(text, title, str(directory), files, counts, names)
