"""int8 inference: test accuracy and images/s of int8 ONNX against fp32 ONNX and PyTorch, same process.

    python bench/int8.py                       # seed, best, ensemble; 7 runs each
    nice -n 10 python bench/int8.py --runs 9 --out bench/results/int8.json

For every bundled model: test accuracy on the 10,000 MNIST test images of PyTorch fp32,
ONNX Runtime fp32 and ONNX Runtime int8 (the graph of ``digitrec.infer.quantize``, calibrated
on 1,000 validation images), then images/s of each backend at batch 1 (one prepared image per
call, the path of a drawing-page request) and batch 1000 (one call on 1,000 prepared images,
which the backends run in chunks of 100). Each run times every backend in turn, so all of them
see the same machine load; the figure is the median of the runs, the ratio is int8 over fp32
ONNX within each run (its median). Keras is not measured here (see bench/speed.py for the
notebook stack). The machine and its load average are printed and saved.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import cpu_flags, machine

from digitrec import __version__
from digitrec.data.mnist import load_mnist
from digitrec.infer.backends import InferenceEngine, onnx_graph
from digitrec.infer.onnx import OnnxRunner
from digitrec.infer.quantize import int8_graph
from digitrec.models.checkpoint import load_model

# The flags that decide which int8 and bf16 kernels ONNX Runtime and PyTorch can use.
INT8_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
CPU = torch.device("cpu")


def rate(fn: Callable[[np.ndarray], Any], batch: np.ndarray, calls: int) -> float:
    """Images per second of ``calls`` calls of ``fn`` on ``batch``."""
    start = time.perf_counter()
    for _ in range(calls):
        fn(batch)
    return calls * len(batch) / (time.perf_counter() - start)


def accuracy(fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray, labels: np.ndarray) -> float:
    return float((fn(images).argmax(axis=1) == labels).mean())


def bench_model(name: str, images: np.ndarray, labels: np.ndarray, runs: int, single_calls: int,
                batch_calls: int, data_dir: str | None) -> dict[str, Any]:
    mf = load_model(name)
    start = time.perf_counter()
    q_graph = int8_graph(mf, data_dir)  # cached after the first quantization; the time says which
    quantize_s = time.perf_counter() - start
    backends: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "torch_fp32": InferenceEngine(mf, CPU, "fp32", "torch").probabilities,
        "torch_bf16": InferenceEngine(mf, CPU, "bf16", "torch").probabilities,
        "onnx_fp32": OnnxRunner(onnx_graph(mf)).probabilities,
        "onnx_int8": OnnxRunner(q_graph).probabilities,
    }
    acc = {k: accuracy(fn, images, labels) for k, fn in backends.items()}  # also warms every backend up
    one, thousand = images[:1], images[:1000]
    samples: dict[str, dict[str, list[float]]] = {k: {"batch1": [], "batch1000": []} for k in backends}
    for _ in range(runs):
        for k, fn in backends.items():
            samples[k]["batch1"].append(rate(fn, one, single_calls))
            samples[k]["batch1000"].append(rate(fn, thousand, batch_calls))
    out: dict[str, Any] = {"quantize_or_cache_s": quantize_s, "test_accuracy": acc, "images_per_s": {}}
    for k, s in samples.items():
        out["images_per_s"][k] = {b: {"median": statistics.median(v), "runs": v} for b, v in s.items()}
    out["int8_over_onnx_fp32"] = {
        b: statistics.median(q / f for q, f in zip(samples["onnx_int8"][b], samples["onnx_fp32"][b]))
        for b in ("batch1", "batch1000")
    }
    out["int8_over_torch_fp32"] = {
        b: statistics.median(q / f for q, f in zip(samples["onnx_int8"][b], samples["torch_fp32"][b]))
        for b in ("batch1", "batch1000")
    }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="seed,best,ensemble", help="bundled models, comma-separated")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per backend (median reported)")
    parser.add_argument("--single-calls", type=int, default=300, help="batch-1 calls per run")
    parser.add_argument("--batch-calls", type=int, default=3, help="batch-1000 calls per run")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for PyTorch and for ONNX Runtime's batch session (batch 1 runs on one "
                        "thread in ONNX Runtime either way); on a shared, loaded machine more threads than free "
                        "cores measure the scheduler (default: %(default)s)")
    parser.add_argument("--data-dir", help="MNIST folder (default: $DIGITREC_DATA_DIR, then the user cache)")
    parser.add_argument("--out", type=Path, help="write the JSON report here (e.g. bench/results/int8.json)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)  # read by OnnxRunner's batch session too
    mnist = load_mnist(args.data_dir)
    images, labels = mnist.test_images, mnist.test_labels
    host = {**machine(), "cpu_flags": cpu_flags(INT8_FLAGS), "torch_threads": torch.get_num_threads(),
            "nice": os.nice(0), "load_average_before": os.getloadavg()}
    import onnxruntime

    report: dict[str, Any] = {
        "machine": host,
        "versions": {"digitrec": __version__, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        "settings": {"threads": args.threads, "runs": args.runs, "single_calls": args.single_calls,
                     "batch_calls": args.batch_calls},
        "models": {},
    }
    print(f"machine: {host['cpu']}, {host['cores']} cores, torch threads {host['torch_threads']}, nice "
          f"{host['nice']}, load average {host['load_average_before'][0]:.2f}", file=sys.stderr)
    print("flags: " + ", ".join(f for f, ok in host["cpu_flags"].items() if ok), file=sys.stderr)
    for name in args.models.split(","):
        report["models"][name] = bench_model(name, images, labels, args.runs, args.single_calls, args.batch_calls,
                                             args.data_dir)
        print(f"{name}: done", file=sys.stderr)
    host["load_average_after"] = os.getloadavg()

    print("\n| model | backend | test acc % | batch 1 img/s | batch 1000 img/s |")
    print("|---|---|---:|---:|---:|")
    for name, r in report["models"].items():
        for k, acc in r["test_accuracy"].items():
            ips = r["images_per_s"][k]
            print(f"| {name} | {k} | {acc:.2%} | {ips['batch1']['median']:,.0f} | {ips['batch1000']['median']:,.0f} |")
    for name, r in report["models"].items():
        a, b = r["int8_over_onnx_fp32"], r["int8_over_torch_fp32"]
        print(f"{name}: int8/fp32 ONNX {a['batch1']:.2f}x (batch 1), {a['batch1000']:.2f}x (batch 1000); "
              f"int8/PyTorch fp32 {b['batch1']:.2f}x, {b['batch1000']:.2f}x")
    print(f"load average before {host['load_average_before']}, after {host['load_average_after']}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
