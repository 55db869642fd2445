"""Train the grey line reader and measure it on real line sets as it trains: the learning curve.

    python bench/reader_curve.py --real DIR [--real DIR ...] --steps 12000 --every 1000 --out reader.safetensors

Each DIR holds a ``labels.csv`` (``file,label``; paths relative to it), like the ORAND-CAR-A
development set. Every ``--every`` steps the model is read on each set (exact-match rate, no
selection: the saved model is the last one) and on the held-out validation lines at the end.
Writes the model and ``bench/results/reader-curve.json``; ``--plot RESULTS.json`` draws the curve
of a finished run (exact reads against training minutes) as a PNG beside it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from digitrec.data.mnist import load_mnist
from digitrec.data.preprocess import open_image, to_grayscale
from digitrec.read.lineprep import line_input
from digitrec.read.linereader import decode, line_log_probs
from digitrec.train.lines import LineTrainConfig, save_line_reader, train_line_reader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402


def load_set(folder: Path) -> list[tuple[np.ndarray, str]]:
    """The (grey picture, digits) rows of a labelled folder; bad rows are reported and skipped."""
    rows, bad = [], 0
    with open(folder / "labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            try:
                if not row["label"].isdigit():
                    raise ValueError(f"label {row['label']!r} is not digits")
                rows.append((to_grayscale(open_image(folder / row["file"])), row["label"]))
            except Exception as exc:  # noqa: BLE001 - a bad row is counted, never fatal
                bad += 1
                print(f"skipped {row.get('file')}: {exc}", file=sys.stderr)
    if bad:
        print(f"{folder}: {bad} bad rows skipped", file=sys.stderr)
    return rows


def exact(model: torch.nn.Module, rows: list[tuple[np.ndarray, str]], temperature: float = 1.0,
          blank_penalty: float = 0.0) -> float:
    """Share of ``rows`` read exactly (plain best path unless a fitted temperature and penalty are given)."""
    right = 0
    for gray, truth in rows:
        log_probs = line_log_probs(model, line_input(gray).image, torch.device("cpu"), temperature=temperature)
        digits = decode(log_probs, blank_penalty)
        right += "".join(str(d.digit) for d in digits) == truth
    return right / max(len(rows), 1)


def plot(results: Path) -> Path:
    """Draw exact reads per set against training minutes from a results file; returns the PNG's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(results.read_text())
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    minutes = [p["train_seconds"] / 60 for p in data["curve"]]
    for name in data["sets"]:
        ax.plot(minutes, [100 * p[name] for p in data["curve"]], marker="o",
                label=f"{name} (real, {data['sets'][name]})")
    val = data["metrics"]["val_exact"]
    ax.scatter([minutes[-1]], [100 * val], marker="s", color="k", label="validation lines (generated)", zorder=3)
    ax.set(xlabel="training time, minutes (2-core CPU)", ylabel="numbers read exactly, %", ylim=(0, 100))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = results.with_suffix(".png")
    fig.savefig(out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", action="append", default=[], type=Path, help="a labelled folder (labels.csv)")
    ap.add_argument("--steps", type=int, default=12000)
    ap.add_argument("--every", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--init", default="", help="a line reader to start from (default: random weights)")
    ap.add_argument("--lr", type=float, default=LineTrainConfig.lr, help="peak learning rate")
    ap.add_argument("--warmup", type=float, default=LineTrainConfig.warmup, help="share of steps warming up")
    ap.add_argument("--ema", type=float, default=LineTrainConfig.ema, help="decay of the weights' moving average")
    ap.add_argument("--out", type=Path, help="the model file to write (required unless --plot)")
    ap.add_argument("--keep", action="store_true", help="also save the model at each measurement (OUT-STEP)")
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "reader-curve.json")
    ap.add_argument("--plot", type=Path, metavar="RESULTS", help="only draw the curve of a finished run")
    args = ap.parse_args()
    if args.plot:
        print(plot(args.plot))
        return 0
    # The line-making processes take their own cores; more torch threads than are left only wait on each other.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) - args.workers))
    if args.out is None:
        ap.error("--out is required")
    sets = {str(p.name): load_set(p) for p in args.real}
    mnist = load_mnist()
    config = LineTrainConfig(steps=args.steps, seed=args.seed, workers=args.workers, init=args.init, lr=args.lr,
                             warmup=args.warmup, ema=args.ema)
    curve: list[dict] = []

    def snapshot(step: int, seconds: float, model: torch.nn.Module) -> None:
        point = {"step": step, "train_seconds": round(seconds, 1),
                 **{name: exact(model, rows) for name, rows in sets.items()}}
        curve.append(point)
        if args.keep:
            save_line_reader(args.out.with_name(f"{args.out.stem}-{step}{args.out.suffix}"), model, config,
                             {"step": step, "train_seconds": seconds})
        print(json.dumps(point), flush=True)

    def progress(done: int, total: int, loss: float) -> None:
        if done % 100 == 0:
            print(f"step {done}/{total} loss {loss:.3f} {time.strftime('%H:%M:%S')}", flush=True)

    model, metrics = train_line_reader(config, mnist.train_images, mnist.train_labels, device=torch.device("cpu"),
                                       progress=progress, snapshot=snapshot, snapshot_every=args.every)
    save_line_reader(args.out, model, config, metrics)
    # As ``read`` decodes it: at its fitted temperature and blank penalty (the curve is the plain best path).
    fitted = {name: exact(model, rows, metrics["temperature"], metrics["blank_penalty"]) for name, rows in sets.items()}
    print(json.dumps({"decoded with the fitted penalty": fitted}))
    result = {"machine": machine(),
              "config": {"steps": args.steps, "seed": args.seed, "threads": torch.get_num_threads(),
                         "init": args.init, "lr": args.lr, "warmup": args.warmup, "ema": args.ema},
              "metrics": metrics, "curve": curve, "fitted_decoding": fitted,
              "sets": {k: len(v) for k, v in sets.items()}}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.results.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, args.results)
    print(json.dumps(metrics))
    print(plot(args.results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
