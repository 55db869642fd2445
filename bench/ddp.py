"""DDP step time: `digitrec train` with 1 and 2 processes (torch.distributed, gloo on CPU) on this machine.

Each round trains the same recipe once in every set-up, in turn (so a drift in the machine's
load touches all alike): a plain single process (no DDP; the reference) with 2 torch threads
and with 1, ``--nproc 1`` with 2 threads and with 1, and ``--nproc 2`` (1 thread each). The
global batch is the same in all (each of 2 processes takes half of it). Figures come from the
epochs' own timings in the model file's history, so process start-up, data loading and the test
are left out; the first epoch is a warm-up and is dropped. ms/step is one global batch;
samples/s counts training images over all processes. Reported: the medians over rounds and the
ratio of each set-up's samples/s to the reference's.

    python bench/ddp.py --rounds 3 --out bench/results/ddp.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402

# name -> flags; threads are torch's per process (the default: cores / processes).
SETUPS = {
    "no DDP, 2 threads": [],
    "no DDP, 1 thread": ["--threads", "1"],
    "DDP 1 proc, 2 thr": ["--nproc", "1"],
    "DDP 1 proc, 1 thr": ["--nproc", "1", "--threads", "1"],
    "DDP 2 procs, 1 thr": ["--nproc", "2"],
}
REFERENCE = "no DDP, 2 threads"  # what `digitrec train` does today


def _run(flags: list[str], recipe: list[str], work: Path) -> dict[str, float]:
    out = work / "m.safetensors"
    cmd = [sys.executable, "-m", "digitrec", "train", *flags, *recipe, "--out", str(out), "--no-plot", "-q", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"bench/ddp.py: {' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    from digitrec.models.header import read_metadata

    meta = read_metadata(out)
    batch = meta["train_config"]["batch_size"]
    steps = math.ceil(meta["dataset"]["train_size"] / batch)
    warm = meta["history"][1:]  # the first epoch warms up allocators and thread pools
    seconds = statistics.median(e["seconds"] for e in warm)
    return {"ms_per_step": 1000 * seconds / steps, "samples_per_s": statistics.median(e["images_per_s"] for e in warm),
            "threads_per_process": report["threads"], "test_accuracy": report["test_accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of each set-up (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=6000, help="training images (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=3,
                        help="epochs per run, the first dropped (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=100, help="global batch (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/ddp.json"))
    args = parser.parse_args()
    if args.epochs < 2:
        raise SystemExit("bench/ddp.py: --epochs must be >= 2 (the first is a warm-up)")
    recipe = ["--limit", str(args.limit), "--val-size", "0", "--epochs", str(args.epochs),
              "--batch-size", str(args.batch_size), "--precision", "fp32"]
    load_before = os.getloadavg()
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in SETUPS}
    with tempfile.TemporaryDirectory(prefix="digitrec-ddp-bench-") as tmp:
        for r in range(args.rounds):
            for name, flags in SETUPS.items():
                runs[name].append(_run(flags, recipe, Path(tmp)))
                step = runs[name][-1]["ms_per_step"]
                print(f"round {r + 1}/{args.rounds} {name}: {step:.1f} ms/step", file=sys.stderr)
    rows = []
    ref = statistics.median(x["samples_per_s"] for x in runs[REFERENCE])
    for name, results in runs.items():
        sps = statistics.median(x["samples_per_s"] for x in results)
        rows.append({"setup": name, "processes": 2 if "2 procs" in name else 1,
                     "threads_per_process": results[0]["threads_per_process"],
                     "ms_per_step": round(statistics.median(x["ms_per_step"] for x in results), 2),
                     "samples_per_s": round(sps, 1), "vs_reference": round(sps / ref, 3)})
    result = {"machine": machine(), "load_avg_before": [round(x, 2) for x in load_before],
              "load_avg_after": [round(x, 2) for x in os.getloadavg()], "rounds": args.rounds,
              "recipe": {"arch": "seed", "train_images": args.limit, "global_batch": args.batch_size,
                         "epochs": args.epochs, "precision": "fp32", "backend": "gloo"},
              "rows": rows, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    print(f"{m['cpu']}, {m['cores']} cores; load {result['load_avg_before']} before, {result['load_avg_after']} after")
    print(f"{'set-up':<20} {'ms/step':>8} {'samples/s':>10} {'vs ref':>9}")
    for row in rows:
        print(f"{row['setup']:<20} {row['ms_per_step']:>8.1f} {row['samples_per_s']:>10,.0f} "
              f"{row['vs_reference']:>8.2f}x")


if __name__ == "__main__":
    main()
