"""Start-up: --help, usage errors, `models`, and predict and read from cached ONNX graphs never import PyTorch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from digitrec.infer.onnx import cached_graph, onnxruntime_available

needs_ort = pytest.mark.skipif(not onnxruntime_available(), reason="needs the onnx extra (onnxruntime)")

# Runs `main(argv)` in a fresh interpreter and prints which heavy modules it imported.
_PROBE = """
import sys
from digitrec.cli.main import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("IMPORTED", " ".join(m for m in ("torch", "numpy", "matplotlib") if m in sys.modules), file=sys.stderr)
sys.exit(code)
"""


def _probe(*argv: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, set[str]]:
    proc = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=120,
                          env=env or os.environ)
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("IMPORTED"))
    return proc, set(line.split()[1:])


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["serve", "--help"], ["finetune", "--help"],
                                  ["train", "--epochs", "0"], ["nosuchcommand"], ["models"]])
def test_help_usage_errors_and_models_do_not_import_torch(argv: list[str]) -> None:
    proc, imported = _probe(*argv)
    assert "torch" not in imported, proc.stderr
    if argv == ["models"]:
        assert proc.returncode == 0 and "seed" in proc.stdout
    elif argv[-1] == "--help":
        assert proc.returncode == 0 and "usage:" in proc.stdout
    else:
        assert proc.returncode == 2


@needs_ort
def test_predict_from_a_cached_graph_does_not_import_torch(tmp_path: Path, tiny_model_file: Path,
                                                          digit_image) -> None:
    image = tmp_path / "digit.png"
    digit_image.save(image)
    env = {**os.environ, "DIGITREC_CACHE_DIR": str(tmp_path / "cache")}
    first, imported = _probe("predict", str(image), "--model", str(tiny_model_file), "--json", env=env)
    assert first.returncode == 0, first.stderr
    assert "torch" in imported  # the first run exports the graph with PyTorch, and caches it
    graphs = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(graphs) == 1
    again, imported = _probe("predict", str(image), "--model", str(tiny_model_file), "--json", env=env)
    assert again.returncode == 0 and "torch" not in imported, again.stderr
    assert again.stdout == first.stdout  # the same answer from the cached graph


@needs_ort
def test_a_changed_model_file_is_not_answered_by_a_stale_graph(tmp_path: Path, tiny_model_file: Path,
                                                               monkeypatch) -> None:
    monkeypatch.setenv("DIGITREC_CACHE_DIR", str(tmp_path / "cache"))
    import digitrec

    digitrec.load(tiny_model_file, line_reader=None, verifier=None)  # exports and caches
    assert cached_graph(tiny_model_file) is not None
    changed = tmp_path / "changed.safetensors"
    changed.write_bytes(tiny_model_file.read_bytes())  # a copy: the same bytes, the same graph
    assert cached_graph(changed) == cached_graph(tiny_model_file)
    from digitrec.models.checkpoint import write_metadata

    write_metadata(changed, {"temperature": 2.0})  # other bytes (and another softmax): another graph
    assert cached_graph(changed) is None


@needs_ort
def test_read_with_the_grey_reader_from_cached_graphs_does_not_import_torch(tmp_path: Path) -> None:
    from PIL import Image, ImageDraw

    image = tmp_path / "number.png"
    img = Image.new("L", (160, 48), 225)
    draw = ImageDraw.Draw(img)
    for k, x in enumerate((12, 52, 92)):  # three vertical strokes: "111"
        draw.line([(x + 10, 8), (x + 10, 40)], fill=25, width=4 + k % 2)
    img.save(image)
    env = {**os.environ, "DIGITREC_CACHE_DIR": str(tmp_path / "cache")}
    first, imported = _probe("read", str(image), "--json", env=env)
    assert first.returncode == 0 and "torch" in imported, first.stderr  # exports the two graphs
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 2  # the digit model and the line reader
    again, imported = _probe("read", str(image), "--json", env=env)
    assert again.returncode == 0 and "torch" not in imported, again.stderr
    assert again.stdout == first.stdout
