"""A user's labelled images: a CSV ``file,label`` of whole numbers or an ImageFolder of digits, checked and decoded."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from digitrec.data.preprocess import IMAGE_FORMATS, decode_gray
from digitrec.errors import DatasetError, DigitrecError

__all__ = ["LabelledData", "load_labelled", "refuse_bad_rows", "IMAGE_SUFFIXES"]

# Files an ImageFolder class folder may hold: the suffixes Pillow gives the formats digitrec decodes.
IMAGE_SUFFIXES = tuple(sorted(ext for ext, fmt in Image.registered_extensions().items() if fmt in IMAGE_FORMATS))
_SHOW_BAD = 5  # bad rows named in an error message


@dataclass(frozen=True)
class LabelledData:
    """A user's labelled images, checked and decoded."""

    kind: str  # "numbers" (a CSV of whole numbers) or "digits" (an ImageFolder of single digits)
    source: Path  # the CSV file or the folder
    files: tuple[str, ...]  # each image's path as given (relative to the CSV / the folder)
    labels: tuple[str, ...]  # each image's digits ("0".."9" for single digits)
    images: tuple[np.ndarray, ...] = field(repr=False)  # grey (H, W) float32 [0, 1], as decoded
    skipped: tuple[str, ...] = ()  # rows left out (with skip_bad): "line N: why"
    sha256: str = ""  # digest of every (path, label, file bytes' SHA-256), in order
    skip_bad: bool = False  # leave out images found unusable later (a digit crop with no ink) instead of refusing

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, indices: Sequence[int]) -> LabelledData:
        """The images at ``indices`` (in that order), with their own digest: for splits made outside."""
        digest = hashlib.sha256(self.sha256.encode())
        digest.update(",".join(str(int(i)) for i in indices).encode())
        return dataclasses.replace(self, files=tuple(self.files[i] for i in indices),
                                   labels=tuple(self.labels[i] for i in indices),
                                   images=tuple(self.images[i] for i in indices), sha256=digest.hexdigest())

    def summary(self) -> dict[str, Any]:
        """What the model file records about the data (no pixels, no paths)."""
        return {"kind": self.kind, "name": self.source.name, "images": len(self), "skipped": len(self.skipped),
                "sha256": self.sha256}


def refuse_bad_rows(problems: list[str], where: str) -> None:
    """Raise one :class:`DatasetError` naming the first few ``problems`` (nothing if there are none)."""
    if not problems:
        return
    shown = "; ".join(problems[:_SHOW_BAD])
    more = f" (and {len(problems) - _SHOW_BAD} more)" if len(problems) > _SHOW_BAD else ""
    raise DatasetError(f"{where}: {len(problems)} bad row(s): {shown}{more}; fix them or pass --skip-bad")


def _decode(path: Path) -> tuple[np.ndarray, bytes]:
    blob = path.read_bytes()
    return decode_gray(blob)[0], blob


def _rows_from_csv(path: Path) -> list[tuple[str, str, str]]:
    """(where, file, label) of each data row of a ``file,label`` CSV; problems with the CSV itself raise."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the CSV ({exc})") from exc
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise DatasetError(f"{path}: empty CSV (expected a header 'file,label' and one row per image)")
    header = [c.strip().lower() for c in rows[0]]
    if header[:2] != ["file", "label"]:
        raise DatasetError(f"{path}: the first line must be the header 'file,label', got {','.join(rows[0])!r}")
    return [(f"line {i}", *(r + ["", ""])[:2]) for i, r in enumerate(rows[1:], start=2) if any(c.strip() for c in r)]


def _rows_from_folder(path: Path) -> list[tuple[str, str, str]]:
    """(where, file, label) of each image of an ImageFolder (``0/`` ... ``9/``)."""
    folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    wrong = [p.name for p in folders if p.name not in {str(d) for d in range(10)}]
    if wrong:
        raise DatasetError(f"{path}: class folder(s) {', '.join(map(repr, wrong[:_SHOW_BAD]))} are not 0-9 "
                           "(an ImageFolder of digits has folders 0 ... 9)")
    rows = []
    for folder in folders:
        for f in sorted(folder.iterdir()):
            if f.is_file() and not f.name.startswith("."):
                rel = f"{folder.name}/{f.name}"
                rows.append((rel, rel, folder.name))
    return rows


def load_labelled(path: str | Path, *, skip_bad: bool = False) -> LabelledData:
    """Check and decode a user's labelled images: a ``file,label`` CSV or an ImageFolder of digits.

    Every row is checked (the file exists, decodes as one of the allowed formats, is named
    once, its label is digits only) before anything is returned. Bad rows raise
    :class:`DatasetError` naming the first few (line numbers for a CSV), unless ``skip_bad``,
    which leaves them out and lists them in ``skipped``.
    """
    source = Path(path)
    if source.is_dir():
        kind, root, rows = "digits", source, _rows_from_folder(source)
    elif source.is_file():
        kind, root, rows = "numbers", source.parent, _rows_from_csv(source)
    else:
        raise DatasetError(f"{source}: no such CSV file or folder")
    if not rows:
        raise DatasetError(f"{source}: no labelled images in it")
    problems: list[str] = []
    seen: set[Path] = set()
    files, labels, images, digests = [], [], [], hashlib.sha256()
    for where, name, label in rows:
        name, label = name.strip(), label.strip()
        file = (root / name).resolve()
        if not name:
            problems.append(f"{where}: no file named")
        elif not label or not label.isascii() or not label.isdigit():
            problems.append(f"{where}: label {label!r} is not digits 0-9")
        elif file in seen:
            problems.append(f"{where}: {name} is listed twice")
        elif not file.is_file():
            problems.append(f"{where}: {name}: no such file")
        elif kind == "digits" and file.suffix.lower() not in IMAGE_SUFFIXES:
            problems.append(f"{where}: not an image ({', '.join(IMAGE_SUFFIXES)})")
        else:
            try:
                gray, blob = _decode(file)
            except (DigitrecError, OSError) as exc:
                problems.append(f"{where}: {name}: {str(exc).splitlines()[0] if str(exc) else 'cannot decode'}")
            else:
                seen.add(file)
                files.append(name)
                labels.append(label)
                images.append(gray)
                digests.update(f"{name}\t{label}\t{hashlib.sha256(blob).hexdigest()}\n".encode())
    if not skip_bad:
        refuse_bad_rows(problems, str(source))
    if not files:
        raise DatasetError(f"{source}: no usable images ({len(problems)} bad row(s), e.g. {problems[0]})")
    return LabelledData(kind=kind, source=source, files=tuple(files), labels=tuple(labels), images=tuple(images),
                        skipped=tuple(problems), sha256=digests.hexdigest(), skip_bad=skip_bad)
