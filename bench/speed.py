"""Training and inference speed: digitrec against the notebook's Keras/TensorFlow stack, same CPU.

    python bench/speed.py                 # 3 runs each, notebook recipe, 10 epochs
    python bench/speed.py --runs 5 --fast-seeds 5 --out bench/results/speed.json

Every run is a fresh process (Keras and digitrec alternate, so both see the same machine
state); each trains the notebook CNN with the notebook recipe (Adam 1e-3, batch 100) on the
same 55,000-image split and tests once on the 10,000 test images. Seconds per epoch skip the
first epoch (warm-up). Needs the `bench` extra (TensorFlow) for the reference: ``pip install
-e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import cpu_name

HERE = Path(__file__).resolve().parent


def child(script: str, *args: str) -> dict[str, Any]:
    """Run one benchmark script in a fresh process and parse its JSON line."""
    proc = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True,
                          cwd=HERE, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{script} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def steady_epoch(run: dict[str, Any]) -> float:
    """Median seconds per epoch after the first (warm-up) epoch."""
    times = run["epoch_seconds"]
    return statistics.median(times[1:] if len(times) > 1 else times)


def fmt(s: dict[str, float], f: str = "{:.2f}") -> str:
    return f"{f.format(s['median'])} ({f.format(s['min'])}-{f.format(s['max'])})"


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "framework": runs[0]["framework"],
        "precision": runs[0]["precision"],
        "epoch_seconds": spread([steady_epoch(r) for r in runs]),
        "images_per_s": spread([r["train_images"] / steady_epoch(r) for r in runs]),
        "test_accuracy": spread([r["test_accuracy"] for r in runs]),
    }
    if "batch_images_per_s" in runs[0]:
        out["batch_images_per_s"] = spread([r["batch_images_per_s"] for r in runs])
        for name in runs[0].get("batch_images_per_s_other", {}):
            out[f"batch_images_per_s_{name}"] = spread([r["batch_images_per_s_other"][name] for r in runs])
        for name in runs[0]["single"]:
            out[f"single_{name}_p50_ms"] = spread([r["single"][name]["p50_ms"] for r in runs])
            out[f"single_{name}_p99_ms"] = spread([r["single"][name]["p99_ms"] for r in runs])
    return out


def compute_floor(epoch_images: int = 55_000, batch: int = 100) -> dict[str, float]:
    """This CPU's ceiling for the notebook recipe: training FLOPs per epoch over measured matmul peaks.

    FLOPs are counted by PyTorch (forward and backward of the seed CNN, one batch); the peaks
    are large square matrix products in fp32 and bf16 on all threads, the best case for
    PyTorch's kernels. FLOPs / peak is a practical floor for direct convolutions on this
    machine (Winograd-style algorithms need fewer FLOPs).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from digitrec.models.registry import create_model

    model = create_model("seed")
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(model(x), y).backward()
    flops_per_epoch = counter.get_total_flops() / batch * epoch_images
    out: dict[str, float] = {"train_tflop_per_epoch": flops_per_epoch / 1e12}
    n = 2048
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        times = []
        for _ in range(5):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        peak = 2 * n**3 / min(times)
        name = "fp32" if dtype == torch.float32 else "bf16"
        out[f"matmul_{name}_tflops"] = peak / 1e12
        out[f"floor_{name}_s_per_epoch"] = flops_per_epoch / peak
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="training runs per framework (seeds 0..N-1)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per run (the notebook: 10)")
    parser.add_argument("--fp32", action="store_true", help="also run digitrec in fp32 (accuracy check)")
    parser.add_argument("--fast-seeds", type=int, default=0, help="also time the `fast` preset on N seeds")
    parser.add_argument("--skip-keras", action="store_true", help="digitrec only (no TensorFlow needed)")
    parser.add_argument("--latency-runs", type=int, default=500, help="single-image calls timed per run")
    parser.add_argument("--data-dir", default=os.environ.get("DIGITREC_DATA_DIR"))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "speed.json")
    args = parser.parse_args()
    common = ["--epochs", str(args.epochs), "--latency-runs", str(args.latency_runs)]
    if args.data_dir:
        common += ["--data-dir", args.data_dir]

    raw: dict[str, list[dict[str, Any]]] = {"keras": [], "digitrec": [], "digitrec_fp32": [], "fast": []}
    started = time.perf_counter()
    for seed in range(args.runs):
        # Alternate the two stacks so slow drifts of the machine hit both alike.
        if not args.skip_keras:
            raw["keras"].append(child("_keras_ref.py", "--seed", str(seed), *common))
            print(f"keras    run {seed}: {steady_epoch(raw['keras'][-1]):.2f} s/epoch", file=sys.stderr)
        raw["digitrec"].append(child("_digitrec_run.py", "--seed", str(seed), *common))
        print(f"digitrec run {seed}: {steady_epoch(raw['digitrec'][-1]):.2f} s/epoch", file=sys.stderr)
        if args.fp32:
            raw["digitrec_fp32"].append(child("_digitrec_run.py", "--seed", str(seed), "--precision", "fp32",
                                              "--epochs", str(args.epochs), "--latency-runs", "0",
                                              *(["--data-dir", args.data_dir] if args.data_dir else [])))
    for seed in range(args.fast_seeds):
        raw["fast"].append(child("_digitrec_run.py", "--preset", "fast", "--seed", str(seed), "--latency-runs", "0",
                                 *(["--data-dir", args.data_dir] if args.data_dir else [])))
        print(f"fast     seed {seed}: {raw['fast'][-1]['train_seconds']:.2f} s, "
              f"{raw['fast'][-1]['test_accuracy']:.2%}", file=sys.stderr)

    import torch

    report: dict[str, Any] = {
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version()},
        "compute_floor": compute_floor(),
        "runs": args.runs,
        "epochs": args.epochs,
        "wall_seconds": time.perf_counter() - started,
        "summary": {k: summarise(v) for k, v in raw.items() if v and k != "fast"},
        "raw": raw,
    }
    s = report["summary"]
    if "keras" in s:
        ratio = [steady_epoch(k) / steady_epoch(d) for k, d in zip(raw["keras"], raw["digitrec"])]
        report["epoch_speedup"] = spread(ratio)
        report["batch_inference_speedup"] = spread(
            [d["batch_images_per_s"] / k["batch_images_per_s"] for k, d in zip(raw["keras"], raw["digitrec"])])
    if raw["fast"]:
        report["fast"] = {
            "train_seconds": spread([r["train_seconds"] for r in raw["fast"]]),
            "test_accuracy": spread([r["test_accuracy"] for r in raw["fast"]]),
            "all_at_least_99": all(r["test_accuracy"] >= 0.99 for r in raw["fast"]),
        }

    m = report["machine"]
    print(f"\nMachine: {m['cpu']}, {m['cores']} cores; {args.runs} runs x {args.epochs} epochs, "
          f"median (min-max)\n")
    print("| stack | precision | s/epoch | train img/s | test acc % | batch predict img/s "
          "| one image p50 ms | p99 ms |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in s.values():
        acc = {k: v * 100 for k, v in row["test_accuracy"].items()}
        line = f"| {row['framework']} | {row['precision']} | {fmt(row['epoch_seconds'])} | " \
               f"{fmt(row['images_per_s'], '{:,.0f}')} | {fmt(acc)} |"
        if "batch_images_per_s" in row:
            for name in ("call", "predict"):
                if f"single_{name}_p50_ms" in row:
                    break
            line += f" {fmt(row['batch_images_per_s'], '{:,.0f}')} | {fmt(row[f'single_{name}_p50_ms'], '{:.3f}')}" \
                    f" | {fmt(row[f'single_{name}_p99_ms'], '{:.3f}')} |"
        else:
            line += " | | |"
        print(line)
    for row in s.values():
        for key, value in row.items():
            if key.startswith("batch_images_per_s_"):
                print(f"{row['framework']}, batch via {key[len('batch_images_per_s_'):]}: "
                      f"{fmt(value, '{:,.0f}')} images/s")
    f = report["compute_floor"]
    print(f"\nCompute floor: {f['train_tflop_per_epoch']:.2f} TFLOP per training epoch; matmul peak "
          f"{f['matmul_fp32_tflops']:.3f} TFLOP/s fp32, {f['matmul_bf16_tflops']:.3f} bf16 -> at least "
          f"{f['floor_fp32_s_per_epoch']:.2f} s/epoch in fp32, {f['floor_bf16_s_per_epoch']:.2f} in bf16")
    if "epoch_speedup" in report:
        print(f"\nEpoch-time speed-up keras/digitrec: {fmt(report['epoch_speedup'])}x; "
              f"batch inference: {fmt(report['batch_inference_speedup'])}x")
    if "fast" in report:
        f = report["fast"]
        acc = {k: v * 100 for k, v in f["test_accuracy"].items()}
        print(f"fast preset ({len(raw['fast'])} seeds): {fmt(f['train_seconds'])} s of training, "
              f"test {fmt(acc)} %, all >= 99.0%: {f['all_at_least_99']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(args.out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
