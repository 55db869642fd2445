"""Start-up time of the `digitrec` command against Tesseract's, whole processes, median of interleaved runs.

Each round runs every command once, in turn, so a drift in the machine's speed touches all of
them alike; the figures are the medians over the rounds and their ratios to Tesseract reading
the same picture (`tesseract IMAGE - --psm 10`, digits only). "cached graph(s)" is the usual
case: a fresh process, with the models' ONNX graphs exported by an earlier run; "predict, first
run" uses a cache emptied before each run, so it exports the graph again.

    python bench/startup.py --rounds 7 --out bench/results/startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402

# The targets on a 2-core CPU, seconds (read shares predict's).
TARGETS = {"--help": 0.3, "predict, cached graph": 0.6, "read, cached graphs": 0.6}


def _digit_png(path: Path) -> None:
    img = Image.new("L", (120, 160), 235)
    ImageDraw.Draw(img).line([(25, 30), (95, 30), (50, 140)], fill=20, width=12)  # a "7"
    img.save(path)


def _run(argv: list[str], env: dict[str, str], before: object = None) -> float:
    """Seconds one whole process takes (``before`` runs first, untimed)."""
    if callable(before):
        before()
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.strip()[:300]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="digitrec-startup-"))
    try:
        image = work / "seven.png"
        _digit_png(image)
        cache, first_cache = work / "cache", work / "first-run-cache"
        env = {**os.environ, "DIGITREC_CACHE_DIR": str(cache)}
        first_env = {**os.environ, "DIGITREC_CACHE_DIR": str(first_cache)}  # emptied before each run
        digitrec = [sys.executable, "-m", "digitrec"]
        commands: dict[str, tuple[list[str], dict[str, str], object]] = {
            "python -c pass": ([sys.executable, "-c", "pass"], env, None),
            "--help": ([*digitrec, "--help"], env, None),
            "models": ([*digitrec, "models"], env, None),
            "predict, cached graph": ([*digitrec, "predict", str(image)], env, None),
            "predict, first run": ([*digitrec, "predict", str(image)], first_env,
                                   lambda: shutil.rmtree(first_cache, ignore_errors=True)),
            "read, cached graphs": ([*digitrec, "read", str(image)], env, None),
        }
        if shutil.which("tesseract"):
            commands["tesseract"] = (["tesseract", str(image), "-", "--psm", "10", "-c",
                                      "tessedit_char_whitelist=0123456789"], env, None)
        _run([*digitrec, "read", str(image)], env)  # warm-up: fills the graph cache and the page cache
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, (argv, cmd_env, before) in commands.items():
                times[name].append(_run(argv, cmd_env, before))
        medians = {name: statistics.median(t) for name, t in times.items()}
        ref = medians.get("tesseract")
        rows = {name: {"median_s": round(m, 3), "min_s": round(min(times[name]), 3),
                       "max_s": round(max(times[name]), 3),
                       "vs_tesseract": round(m / ref, 2) if ref else None,
                       "target_s": TARGETS.get(name)} for name, m in medians.items()}
        for name, row in rows.items():
            target = f"  (target <= {row['target_s']} s)" if row["target_s"] else ""
            ratio = f"  {row['vs_tesseract']}x tesseract" if row["vs_tesseract"] else ""
            print(f"{name:<30} {row['median_s']:.3f} s median [{row['min_s']:.3f}-{row['max_s']:.3f}]{ratio}{target}")
        if args.out:
            Path(args.out).write_text(json.dumps({"machine": machine(), "rounds": args.rounds, "results": rows},
                                                 indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
