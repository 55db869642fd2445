"""bench/read.py's scoring and data checks (no OCR engine needed: the peers are never started)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BENCH = Path(__file__).resolve().parents[1] / "bench" / "read.py"


@pytest.fixture(scope="module")
def read_bench():
    spec = importlib.util.spec_from_file_location("bench_read", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("a", "b", "d"), [
    ("", "", 0), ("123", "123", 0), ("123", "", 3), ("", "45", 2), ("1234", "1284", 1),
    ("1990", "190", 1), ("12", "123", 1), ("kitten", "sitting", 3), ("0012", "12", 2), ("321", "123", 2),
])
def test_edit_distance(read_bench, a, b, d):
    assert read_bench.edit_distance(a, b) == d
    assert read_bench.edit_distance(b, a) == d


def test_only_digits(read_bench):
    assert read_bench.only_digits("$ 1.990,-") == "1990"
    assert read_bench.only_digits("007") == "007"  # leading zeros kept
    assert read_bench.only_digits("abc") is None
    assert read_bench.only_digits("") is None
    assert read_bench.only_digits(None) is None
    assert read_bench.only_digits("²٣4") == "4"  # only ASCII digits count


def test_score(read_bench):
    m = read_bench.score(["123", "4567", "89", "0012"], ["123", "4568", None, "12"])
    assert m["n"] == 4
    assert m["exact"] == 0.25
    assert m["no_number"] == 0.25
    # edits: 0 + 1 + 2 (nothing read) + 2 (leading zeros lost) over 3 + 4 + 2 + 4 digits
    assert m["edits"] == 5 and m["label_digits"] == 13
    assert m["per_digit"] == pytest.approx(1 - 5 / 13)
    # an empty answer is "no number" as None is; extra digits count against per-digit accuracy
    m = read_bench.score(["12"], [""])
    assert m["no_number"] == 1.0 and m["per_digit"] == 0.0
    assert read_bench.score(["1"], ["1111"])["per_digit"] == -2.0
    with pytest.raises(ValueError):
        read_bench.score(["1"], [])


def test_load_real_reports_and_skips_bad_rows(read_bench, tmp_path):
    (tmp_path / "images").mkdir()
    Image.fromarray(np.full((12, 30), 255, np.uint8)).save(tmp_path / "images" / "good.png")
    (tmp_path / "images" / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "labels.csv").write_text(
        "file,label\n"
        "images/good.png,0042\n"
        "images/missing.png,17\n"
        "images/good.png,12a\n"
        "images/broken.png,5\n"
        ",9\n"
    )
    for source in (tmp_path, tmp_path / "labels.csv"):  # a folder or its CSV
        s = read_bench.load_real(source)
        assert s.labels == ["0042"]  # leading zeros kept
        assert s.files == [tmp_path / "images" / "good.png"]
        assert s.bad_count == 4
        assert [b["row"] for b in s.bad] == [3, 4, 5, 6]
        whys = " | ".join(b["why"] for b in s.bad)
        assert "not found" in whys and "not a digit string" in whys and "does not decode" in whys
        assert str(tmp_path) not in s.source  # the user's paths stay out of the results


def test_load_real_refuses_unreadable_sets(read_bench, tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        read_bench.load_real(tmp_path / "nowhere")
    (tmp_path / "labels.csv").write_text("path,digits\na.png,1\n")
    with pytest.raises(ValueError, match="header"):
        read_bench.load_real(tmp_path)


def test_bench_set_with_made_up_readers(read_bench, tmp_path):
    s = read_bench.LineSet("made-up", "test", [tmp_path / "a.png", tmp_path / "b.png"], ["12", "345"])

    def answer(path):
        return {"a.png": "12", "b.png": None}[path.name]

    def broken(path):
        raise RuntimeError("engine fell over")

    readers = [read_bench.Reader("right-once", answer, "1", "", 0.0), read_bench.Reader("broken", broken, "1", "", 0.0)]
    out = read_bench.bench_set(s, readers)
    assert out["right-once"]["exact"] == 0.5 and out["right-once"]["per_digit"] == pytest.approx(1 - 3 / 5)
    assert out["right-once"]["errors"] == 0 and out["right-once"]["lines_per_s"] > 0
    assert out["broken"]["errors"] == 2 and out["broken"]["no_number"] == 1.0
    assert "engine fell over" in out["broken"]["first_errors"][0]
    assert "| made-up | broken | 2 |" in read_bench.table({"sets": {"made-up": {"readers": out}}})


def test_unknown_reader_is_refused(read_bench):
    with pytest.raises(SystemExit):
        read_bench.parse_args(["--readers", "digitrec,nonesuch"])
