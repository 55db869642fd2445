"""Number reading bench: digitrec's default reader beside two peer OCR engines, same images, same run.

Sets:

- real: folders (or CSV files) of real handwritten numbers, each a ``labels.csv`` of ``file,label``
  rows (paths relative to the CSV; the label is the digit string, leading zeros kept), e.g. the
  ORAND-CAR-A cheque amounts. ``--real`` may be given more than once; without it the folder in
  ``$DIGITREC_ORAND_DIR`` is used when set. A bad row (missing file, image that does not decode,
  label that is not digits) is counted, the first few are listed, and it is skipped.
- generated: numbers of 2-6 MNIST *test* digits photographed as one line
  (:func:`digitrec.data.synthetic.digit_line`), spaced and with some digits touching, ``--generated``
  lines each (0 skips them). MNIST is found as everywhere in digitrec (``DIGITREC_DATA_DIR`` or
  the cache); the lines are written as PNG files to a temporary folder so every reader gets a file.

Readers (``--readers``, comma-separated):

- digitrec:  ``digitrec.load()`` then ``rec.read(path).number``, as a new user gets it (the
             bundled model, verifier and line reader; whatever ``digitrec.load`` gives today).
- digitrec-segments: the older reader, ``digitrec.load(line_reader="none")``: the digits cut
             apart and classified one by one, with the piece verifier (for comparison; not run by
             default).
- rapidocr:  RapidOCR (ONNX Runtime, models in the wheel) on the picture as one text line
             (recognition only: the pictures are already cut to the number, as ``--psm 7`` tells
             Tesseract); only the digits of its text are kept ("1.990" -> "1990").
- rapidocr-full: RapidOCR's whole pipeline (text detection, orientation, recognition); not run by
             default: on these small pictures detection is ~100x slower and often finds nothing.
- tesseract: Tesseract 5, ``tesseract IMG stdout --psm 7 -c tessedit_char_whitelist=0123456789``
             as a subprocess per line (its start-up is part of each line's time).

A peer that is not installed is skipped with a note. Install them with::

    pip install -e '.[read-bench]'           # rapidocr, onnxruntime
    apt-get install -y tesseract-ocr         # Debian/Ubuntu package (Tesseract 5 on Debian 12)

Per set and reader: exact match (the digit string equal), per-digit accuracy
(1 - total Levenshtein distance / total label digits; insertions count, so it can go below 0),
"no number" rate (no digits answered), errors (a reader raising: counted as no number), lines per
second and p50 / p90 latency per line. One process; readers take turns line by line, so a busy
machine slows all of them alike; lines/s is the set's size over the time spent in that reader
(one warm-up call per reader and set is not timed). ``--threads`` (default 1) sets torch's
threads, ONNX Runtime's intra-op threads (RapidOCR) and OMP_THREAD_LIMIT (Tesseract); 0 leaves
each engine's own default.

Usage:  python bench/read.py [--real DIR_OR_CSV ...] [--generated 300] [--readers LIST]
                             [--limit N] [--threads 1] [--out bench/results/read.json] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # _common, also when this file is imported by path (tests)

from _common import machine, number_lines, percentile_ms  # noqa: E402

from digitrec.fileio import atomic_write  # noqa: E402

READERS = ("digitrec", "rapidocr", "tesseract")
OPTIONAL_READERS = ("rapidocr-full",)
LABEL = re.compile(r"[0-9]+")
SHOW_BAD = 5  # bad rows listed per set
SHOW_WRONG = 5  # wrong readings listed per set and reader


# ---------------------------------------------------------------- scoring


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions) between two strings."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def only_digits(text: str | None) -> str | None:
    """The ASCII digits of ``text`` in order, or None where there are none."""
    digits = "".join(c for c in text or "" if "0" <= c <= "9")
    return digits or None


def score(labels: Sequence[str], readings: Sequence[str | None]) -> dict[str, Any]:
    """Exact match, per-digit accuracy and no-number rate of ``readings`` against ``labels``."""
    if len(labels) != len(readings):
        raise ValueError(f"{len(labels)} labels but {len(readings)} readings")
    n = len(labels)
    edits = sum(edit_distance(y, r or "") for y, r in zip(labels, readings))
    label_digits = sum(len(y) for y in labels)
    return {
        "n": n,
        "exact": sum(r == y for y, r in zip(labels, readings)) / n if n else 0.0,
        "per_digit": 1.0 - edits / label_digits if label_digits else 0.0,
        "no_number": sum(not r for r in readings) / n if n else 0.0,
        "edits": edits,
        "label_digits": label_digits,
    }


# ---------------------------------------------------------------- data


@dataclass
class LineSet:
    name: str
    source: str  # what it is, without the user's paths
    files: list[Path] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    bad: list[dict[str, Any]] = field(default_factory=list)  # the first SHOW_BAD bad rows
    bad_count: int = 0

    def add_bad(self, row: int, file: str, why: str) -> None:
        self.bad_count += 1
        if len(self.bad) < SHOW_BAD:
            self.bad.append({"row": row, "file": file, "why": why})

    def limited(self, limit: int | None) -> LineSet:
        if limit is None:
            return self
        return LineSet(self.name, self.source, self.files[:limit], self.labels[:limit], self.bad, self.bad_count)


def labels_csv(path: str | os.PathLike[str]) -> Path:
    """``path`` itself if it is a file, else the ``labels.csv`` in that folder."""
    p = Path(path)
    return p / "labels.csv" if p.is_dir() else p


def load_real(path: str | os.PathLike[str], check_images: bool = True) -> LineSet:
    """The rows of a ``file,label`` CSV whose image exists, decodes and whose label is digits.

    Raises ValueError for a set that cannot be read at all (no CSV, no ``file``/``label`` header);
    bad rows are recorded in the set and skipped.
    """
    csv_path = labels_csv(path)
    name = csv_path.parent.name if csv_path.name == "labels.csv" else csv_path.stem
    out = LineSet(name, f"{csv_path.parent.name}/{csv_path.name}")
    try:
        fh = csv_path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise ValueError(f"cannot read {csv_path}: {exc.strerror or exc}") from exc
    with fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"file", "label"} <= {f.strip() for f in reader.fieldnames}:
            raise ValueError(f"{csv_path}: expected a 'file,label' header, found {reader.fieldnames}")
        reader.fieldnames = [f.strip() for f in reader.fieldnames]
        for rowno, row in enumerate(reader, start=2):  # row 1 is the header
            file = (row.get("file") or "").strip()
            label = (row.get("label") or "").strip()
            if not file:
                out.add_bad(rowno, file, "no file name")
                continue
            if not LABEL.fullmatch(label):
                out.add_bad(rowno, file, f"label {label!r} is not a digit string")
                continue
            image = csv_path.parent / file
            if not image.is_file():
                out.add_bad(rowno, file, "file not found")
                continue
            if check_images:
                try:
                    with Image.open(image) as im:
                        im.load()
                except Exception as exc:  # any decoder failure
                    out.add_bad(rowno, file, f"image does not decode ({type(exc).__name__})")
                    continue
            out.files.append(image)
            out.labels.append(label)
    return out


def generated_sets(n: int, folder: Path) -> tuple[list[LineSet], str | None]:
    """Two sets of ``n`` photographed MNIST test lines (spaced; some digits touching) as PNGs in ``folder``."""
    if n <= 0:
        return [], None
    from digitrec.data.mnist import load_mnist

    try:
        mnist = load_mnist()
    except Exception as exc:  # no copy found, no network: say so, bench the rest
        return [], f"generated sets skipped: MNIST not found ({exc}); set DIGITREC_DATA_DIR"
    sets = []
    for name, touching, seed, base in (("generated-spaced", 0.0, 11, 7_000_000),
                                       ("generated-touching", 0.17, 12, 8_000_000)):
        s = LineSet(name, f"MNIST test digits, 2-6 per line, digit_line(touching={touching})")
        rng = np.random.default_rng(seed)
        lines = number_lines(mnist.test_images, mnist.test_labels, n, rng, base, touching)
        for i, (line, truth) in enumerate(tqdm(lines, total=n, desc=f"making {name}", file=sys.stderr)):
            path = folder / f"{name}-{i:05d}.png"
            Image.fromarray(line).save(path)
            s.files.append(path)
            s.labels.append(truth)
        sets.append(s)
    return sets, None


# ---------------------------------------------------------------- readers


@dataclass
class Reader:
    name: str
    read: Callable[[Path], str | None]  # a digit string or None
    version: str
    settings: str
    load_s: float
    read_many: Callable[[list[Path]], list[str | None]] | None = None  # a whole set in one call (batched)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def tesseract_version(exe: str | None = None) -> str | None:
    exe = exe or shutil.which("tesseract")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0].removeprefix("tesseract ").strip() if first else None


def make_digitrec(threads: int, segments: bool = False) -> Reader:
    import torch

    import digitrec

    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    # segments: the older reader (cut the digits apart, classify each, piece verifier), for comparison.
    rec = digitrec.load(line_reader="none") if segments else digitrec.load()
    load_s = time.perf_counter() - t0

    def read(path: Path) -> str | None:
        return rec.read(path).number or None

    def read_many(paths: list[Path]) -> list[str | None]:
        return [r.number or None for r in rec.read(list(paths))]

    helpers = ", ".join(f"{what} {f.path.stem if f.path else f.arch}" for what, f in
                        (("verifier", rec.verifier), ("line reader", rec.line_reader)) if f is not None)
    how = "digitrec.load(line_reader='none')" if segments else "digitrec.load() defaults"
    return Reader("digitrec-segments" if segments else "digitrec", read, _version("digitrec") or "?",
                  f"{how}: model {rec.name} ({rec.backend} backend), {helpers or 'no helpers'}; "
                  f"torch threads {torch.get_num_threads()}", load_s, None if segments else read_many)


def make_rapidocr(threads: int, full: bool = False) -> Reader:
    from rapidocr import RapidOCR  # ImportError: not installed

    params: dict[str, Any] = {"Global.log_level": "error"}
    if not full:
        params.update({"Global.use_det": False, "Global.use_cls": False})
    if threads:
        params.update({"EngineConfig.onnxruntime.intra_op_num_threads": threads,
                       "EngineConfig.onnxruntime.inter_op_num_threads": 1})
    t0 = time.perf_counter()
    engine = RapidOCR(params=params)
    load_s = time.perf_counter() - t0

    def read(path: Path) -> str | None:
        out = engine(str(path))
        return only_digits("".join(out.txts or ()))

    mode = "detection + orientation + recognition" if full else "recognition only (one line)"
    return Reader("rapidocr-full" if full else "rapidocr", read, _version("rapidocr") or "?",
                  f"{mode}, default models, ONNX Runtime intra-op threads {threads or 'default'}", load_s)


def make_tesseract(threads: int) -> Reader:
    exe = shutil.which("tesseract")
    if not exe:
        raise FileNotFoundError("tesseract not on PATH (apt-get install -y tesseract-ocr)")
    version = tesseract_version(exe) or "?"
    env = dict(os.environ)
    if threads:
        env["OMP_THREAD_LIMIT"] = str(threads)
    args = ["stdout", "--psm", "7", "-c", "tessedit_char_whitelist=0123456789"]

    def read(path: Path) -> str | None:
        out = subprocess.run([exe, str(path), *args], capture_output=True, text=True, env=env, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"tesseract exit {out.returncode}: {out.stderr.strip()[-200:]}")
        return only_digits(out.stdout)

    return Reader("tesseract", read, version,
                  f"--psm 7, digit whitelist, one process per line, OMP_THREAD_LIMIT {threads or 'unset'}", 0.0)


MAKERS: dict[str, Callable[[int], Reader]] = {
    "digitrec": make_digitrec,
    "digitrec-segments": lambda threads: make_digitrec(threads, segments=True),
    "rapidocr": make_rapidocr,
    "rapidocr-full": lambda threads: make_rapidocr(threads, full=True),
    "tesseract": make_tesseract,
}


def make_readers(names: Iterable[str], threads: int) -> tuple[list[Reader], dict[str, str]]:
    """The readers that load; a note for each that does not (not installed, failed to load)."""
    readers, skipped = [], {}
    for name in names:
        try:
            readers.append(MAKERS[name](threads))
        except ImportError as exc:
            skipped[name] = f"not installed ({exc}); pip install -e '.[read-bench]'"
        except Exception as exc:
            skipped[name] = f"could not start: {type(exc).__name__}: {exc}"
    return readers, skipped


# ---------------------------------------------------------------- running


def bench_set(s: LineSet, readers: Sequence[Reader]) -> dict[str, dict[str, Any]]:
    """Every reader on every line of ``s``, taking turns line by line; metrics per reader."""
    readings: dict[str, list[str | None]] = {r.name: [] for r in readers}
    times: dict[str, list[float]] = {r.name: [] for r in readers}
    errors: dict[str, list[str]] = {r.name: [] for r in readers}
    if s.files:
        for r in readers:  # warm-up, not timed: first calls build caches and sessions
            with contextlib.suppress(Exception):  # a reader's failures are counted in the timed loop below
                r.read(s.files[0])
    for path in tqdm(s.files, desc=s.name, file=sys.stderr, unit="line"):
        for r in readers:
            t0 = time.perf_counter()
            try:
                got = r.read(path)
            except Exception as exc:
                got = None
                errors[r.name].append(f"{path.name}: {type(exc).__name__}: {exc}"[:200])
            times[r.name].append(time.perf_counter() - t0)
            readings[r.name].append(got)
    out = {}
    for r in readers:
        m = score(s.labels, readings[r.name])
        spent = sum(times[r.name])
        m.update({
            "lines_per_s": len(s.files) / spent if spent else 0.0,
            "p50_ms": percentile_ms(times[r.name], 50) if s.files else 0.0,
            "p90_ms": percentile_ms(times[r.name], 90) if s.files else 0.0,
            "seconds": spent,
            "errors": len(errors[r.name]),
            "first_errors": errors[r.name][:SHOW_WRONG],
            "first_wrong": [{"file": p.name, "label": y, "read": g}
                            for p, y, g in zip(s.files, s.labels, readings[r.name]) if g != y][:SHOW_WRONG],
        })
        if r.read_many is not None and s.files:
            m.update(batch_speed(r.read_many, s.files, readings[r.name]))
        out[r.name] = m
    return out


def batch_speed(read_many: Callable[[list[Path]], list[str | None]], files: list[Path],
                one_by_one: list[str | None], runs: int = 3) -> dict[str, Any]:
    """Lines per second reading the whole set in one call (median of ``runs``), and its agreement with line by line."""
    rates, got = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        got = read_many(files)
        rates.append(len(files) / (time.perf_counter() - t0))
    same = sum(a == b for a, b in zip(got, one_by_one)) / len(files)
    return {"batch_lines_per_s": float(np.median(rates)), "batch_lines_per_s_runs": rates, "batch_same_reading": same}


def table(results: dict[str, Any]) -> str:
    rows = ["| set | reader | lines | exact | per digit | no number | lines/s | batch lines/s | p50 ms |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for set_name, s in results["sets"].items():
        for reader, m in s["readers"].items():
            err = f" ({m['errors']} errors)" if m["errors"] else ""
            batch = f"{m['batch_lines_per_s']:.0f}" if "batch_lines_per_s" in m else "-"
            rows.append(f"| {set_name} | {reader} | {m['n']:,} | {m['exact']:.1%} | {m['per_digit']:.1%} | "
                        f"{m['no_number']:.1%}{err} | {m['lines_per_s']:.1f} | {batch} | {m['p50_ms']:.1f} |")
    return "\n".join(rows)


def machine_description(threads: int) -> dict[str, Any]:
    import torch

    m = machine()
    m.update({"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
              "onnxruntime": _version("onnxruntime"), "rapidocr": _version("rapidocr"),
              "tesseract": tesseract_version(), "threads_option": threads,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    return m


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Peers: pip install -e '.[read-bench]'; apt-get install -y tesseract-ocr")
    ap.add_argument("--real", action="append", metavar="DIR_OR_CSV",
                    help="a folder with labels.csv, or a CSV of file,label rows (repeatable; "
                         "default: $DIGITREC_ORAND_DIR if set)")
    ap.add_argument("--generated", type=int, default=300, metavar="N",
                    help="lines per generated set (spaced, touching); 0 skips them (default: %(default)s)")
    ap.add_argument("--readers", default=",".join(READERS),
                    help=f"comma-separated, from {', '.join(READERS + OPTIONAL_READERS)} (default: %(default)s)")
    ap.add_argument("--limit", type=int, metavar="N", help="only the first N lines of each set")
    ap.add_argument("--threads", type=int, default=1, metavar="N",
                    help="threads per engine (torch, ONNX Runtime, Tesseract); 0 = each engine's default "
                         "(default: %(default)s)")
    ap.add_argument("--out", default=str(HERE / "results" / "read.json"), help="JSON results (default: %(default)s)")
    ap.add_argument("--json", action="store_true", help="print the JSON results instead of the table")
    args = ap.parse_args(argv)
    args.reader_names = [r.strip() for r in args.readers.split(",") if r.strip()]
    unknown = [r for r in args.reader_names if r not in MAKERS]
    if unknown or not args.reader_names:
        ap.error(f"unknown reader(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(MAKERS)}")
    if args.limit is not None and args.limit < 1:
        ap.error("--limit must be at least 1")
    if args.generated < 0 or args.threads < 0:
        ap.error("--generated and --threads must be 0 or more")
    if args.real is None:
        args.real = [os.environ["DIGITREC_ORAND_DIR"]] if os.environ.get("DIGITREC_ORAND_DIR") else []
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    notes: list[str] = []
    t_start = time.perf_counter()
    sets: list[LineSet] = []
    for path in args.real:
        try:
            sets.append(load_real(path).limited(args.limit))
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if not args.real:
        notes.append("no real set: pass --real DIR_OR_CSV or set DIGITREC_ORAND_DIR")
    with tempfile.TemporaryDirectory(prefix="digitrec-read-bench-") as tmp:
        gen, note = generated_sets(min(args.generated, args.limit or args.generated), Path(tmp))
        sets += gen
        if note:
            notes.append(note)
        if not sets:
            print("error: nothing to read (no real set and no generated set)", file=sys.stderr)
            return 2
        readers, skipped = make_readers(args.reader_names, args.threads)
        notes += [f"{name} skipped: {why}" for name, why in skipped.items()]
        for n in notes:
            print(f"note: {n}", file=sys.stderr)
        if not readers:
            print("error: no reader could be started", file=sys.stderr)
            return 2
        results: dict[str, Any] = {
            "machine": machine_description(args.threads),
            "readers": {r.name: {"version": r.version, "settings": r.settings, "load_s": round(r.load_s, 3)}
                        for r in readers},
            "skipped_readers": skipped,
            "limit": args.limit,
            "notes": notes,
            "sets": {},
        }
        for s in sets:
            if s.bad_count:
                print(f"note: {s.name}: {s.bad_count} bad row(s) skipped, first: "
                      + "; ".join(f"row {b['row']} {b['file']!r}: {b['why']}" for b in s.bad), file=sys.stderr)
            results["sets"][s.name] = {"source": s.source, "n": len(s.files),
                                       "bad_rows": {"count": s.bad_count, "first": s.bad},
                                       "readers": bench_set(s, readers)}
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    out = Path(args.out)
    with atomic_write(out, "w") as fh:  # temporary file + os.replace: never half a file
        fh.write(json.dumps(results, indent=2) + "\n")
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        m = results["machine"]
        flags = ", ".join(f for f, on in m["cpu_flags"].items() if on) or "none of interest"
        print(table(results))
        print(f"\nMachine: {m['cpu']} ({flags}), {m['cores']} cores; Python {m['python']}, torch {m['torch']}, "
              f"onnxruntime {m['onnxruntime']}, rapidocr {m['rapidocr']}, tesseract {m['tesseract']}; "
              f"threads {args.threads or 'engine defaults'}; {results['seconds']} s in all; wrote {out}")
        for n in notes:
            print(f"note: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
