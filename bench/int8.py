"""int8 inference: test accuracy and images/s of int8 ONNX against fp32 ONNX and PyTorch, same process.

    python bench/int8.py                       # seed, best, ensemble; 7 runs each
    nice -n 10 python bench/int8.py --runs 9 --out bench/results/int8.json
    python bench/int8.py --models seed --keras-python /path/to/tf-venv/bin/python   # and Keras

For every bundled model: test accuracy on the 10,000 MNIST test images of PyTorch fp32,
ONNX Runtime fp32 and ONNX Runtime int8 (the graph of ``digitrec.infer.quantize``, calibrated
on 1,000 validation images), then images/s of each backend at batch 1 (one prepared image per
call, the path of a drawing-page request) and batch 1000 (one call on 1,000 prepared images,
which the backends run in chunks of 100) and one call on all 10,000 (``batch_all``). Each run
times every backend in turn, so all of them see the same machine load; the figure is the
median of the runs, the ratio is int8 over fp32 ONNX within each run (its median). Batch 1
also gives the median time of one call (p50).

With ``--keras-python`` (a Python with TensorFlow and Keras 3, e.g. a venv of its own), a child
process (bench/_keras_predict.py) builds the notebook CNN in Keras with the weights of the
bundled ``seed`` model (the same CNN; its normalisation folded into the first convolution, so
Keras sees the notebook's 1/255 scaling), checks its answers against ONNX Runtime fp32 on the
10,000 test images, and in every run, after the other backends, times ``model.predict`` on the
same 1,000 and 10,000 images (``batch_size=--keras-batch-size``, the chunk size of the other
backends) and ``model(x, training=False)`` on one image, with TensorFlow on ``--threads`` threads. The
ratios over Keras are taken within each run (median). The machine and its load average are
printed and saved.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
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
from digitrec.models.checkpoint import ModelFile, load_model

# The flags that decide which int8 and bf16 kernels ONNX Runtime and PyTorch can use.
INT8_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
CPU = torch.device("cpu")
HERE = Path(__file__).resolve().parent


def rate(fn: Callable[[np.ndarray], Any], batch: np.ndarray, calls: int) -> float:
    """Images per second of ``calls`` calls of ``fn`` on ``batch``."""
    start = time.perf_counter()
    for _ in range(calls):
        fn(batch)
    return calls * len(batch) / (time.perf_counter() - start)


def call_times(fn: Callable[[np.ndarray], Any], batch: np.ndarray, calls: int) -> list[float]:
    """Seconds of each of ``calls`` calls of ``fn`` on ``batch``."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn(batch)
        times.append(time.perf_counter() - start)
    return times


def keras_weights(mf: ModelFile) -> dict[str, np.ndarray]:
    """The seed CNN's weights in Keras layout: its normalisation and temperature folded into the first and last layers.

    The inverse of ``digitrec.models.keras_import``: kernels (out, in, H, W) -> (H, W, in, out), the
    first dense layer's rows from (C, H, W) order to Keras's (H, W, C). With no padding every
    output of the first convolution sees 9 pixels, so conv((x - m) / s) = conv(x) / s with the
    bias lowered by m / s times the sum of each kernel; softmax(z / T) divides the last layer by T.
    """
    state = {k: v.detach().float().numpy() for k, v in mf.model.state_dict().items()}
    m, s = mf.normalization.mean, mf.normalization.std
    k1, b1 = state["features.0.weight"], state["features.0.bias"]
    b1 = b1 - (m / s) * k1.sum(axis=(1, 2, 3))
    k1 = k1 / s
    w3 = state["classifier.0.weight"].T  # (C*H*W, hidden)
    c2 = state["features.3.weight"].shape[0]
    side = round((w3.shape[0] // c2) ** 0.5)
    w3 = w3.reshape(c2, side, side, -1).transpose(1, 2, 0, 3).reshape(w3.shape[0], -1)
    return {"k1": k1.transpose(2, 3, 1, 0), "b1": b1, "k2": state["features.3.weight"].transpose(2, 3, 1, 0),
            "b2": state["features.3.bias"], "w3": w3, "b3": state["classifier.0.bias"],
            "w4": state["classifier.2.weight"].T / mf.temperature, "b4": state["classifier.2.bias"] / mf.temperature}


class KerasChild:
    """The Keras reference in its own process (bench/_keras_predict.py): one timed run per :meth:`run`."""

    def __init__(self, python: str, images: np.ndarray, labels: np.ndarray, weights: dict[str, np.ndarray] | None,
                 threads: int, batch_size: int, single_calls: int, batch_calls: int) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        folder = Path(self.tmp.name)
        np.savez(folder / "inputs.npz", images=images, labels=labels, **(weights or {}))
        self.stderr = (folder / "stderr.txt").open("w+")
        self.proc = subprocess.Popen(
            [python, str(HERE / "_keras_predict.py"), str(folder / "inputs.npz"), "--threads", str(threads),
             "--batch-size", str(batch_size), "--single-calls", str(single_calls), "--batch-calls", str(batch_calls)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True, cwd=HERE)
        self.info = self._answer()
        self.probabilities = np.load(folder / "keras_probs.npy", allow_pickle=False)

    def _answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.stderr.seek(0)
            raise SystemExit(f"the Keras child failed:\n{self.stderr.read()[-3000:]}")
        return dict(json.loads(line))

    def run(self) -> dict[str, float]:
        """One timed run: batch-1000 images/s of ``model.predict``, one-image calls/s and their p50 in ms."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return self._answer()

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.stderr.close()
        self.tmp.cleanup()


def accuracy(fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray, labels: np.ndarray) -> float:
    return float((fn(images).argmax(axis=1) == labels).mean())


def bench_model(name: str, images: np.ndarray, labels: np.ndarray, runs: int, single_calls: int,
                batch_calls: int, data_dir: str | None, keras: KerasChild | None = None) -> dict[str, Any]:
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
    samples: dict[str, dict[str, list[float]]] = {
        k: {"batch1": [], "batch1000": [], "batch_all": [], "batch1_p50_ms": []}
        for k in [*backends, *(["keras"] if keras else [])]}
    for _ in range(runs):
        for k, fn in backends.items():
            times = call_times(fn, one, single_calls)
            samples[k]["batch1"].append(len(times) / sum(times))
            samples[k]["batch1_p50_ms"].append(statistics.median(times) * 1e3)
            samples[k]["batch1000"].append(rate(fn, thousand, batch_calls))
            samples[k]["batch_all"].append(rate(fn, images, 1))
        if keras:
            for b, value in keras.run().items():
                samples["keras"][b].append(value)
    out: dict[str, Any] = {"quantize_or_cache_s": quantize_s, "test_accuracy": acc, "images_per_s": {}}
    for k, s in samples.items():
        out["images_per_s"][k] = {b: {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v}
                                  for b, v in s.items()}
    out["int8_over_onnx_fp32"] = {
        b: statistics.median(q / f for q, f in zip(samples["onnx_int8"][b], samples["onnx_fp32"][b]))
        for b in ("batch1", "batch1000")
    }
    out["int8_over_torch_fp32"] = {
        b: statistics.median(q / f for q, f in zip(samples["onnx_int8"][b], samples["torch_fp32"][b]))
        for b in ("batch1", "batch1000")
    }
    if keras:
        for k in ("onnx_int8", "onnx_fp32", "torch_fp32"):
            ratios = {b: [q / r for q, r in zip(samples[k][b], samples["keras"][b])]
                      for b in ("batch1000", "batch_all")}
            ratios["batch1_p50_latency"] = [r / q for q, r in zip(samples[k]["batch1_p50_ms"],
                                                                  samples["keras"]["batch1_p50_ms"])]
            out[f"{k}_over_keras"] = {b: {"median": statistics.median(v), "min": min(v), "max": max(v)}
                                      for b, v in ratios.items()}
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
    parser.add_argument("--keras-python", help="a Python with TensorFlow and Keras 3: also time the notebook CNN's "
                        "model.predict in Keras (default: Keras rows skipped)")
    parser.add_argument("--keras-batch-size", type=int, default=100,
                        help="model.predict's batch_size (default: %(default)s, the chunk of the other backends)")
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
                     "batch_calls": args.batch_calls, "keras_batch_size": args.keras_batch_size},
        "models": {},
    }
    keras = None
    if args.keras_python:
        seed = load_model("seed")
        keras = KerasChild(args.keras_python, images, labels, keras_weights(seed), args.threads,
                           args.keras_batch_size, args.single_calls, args.batch_calls)
        ours = OnnxRunner(onnx_graph(seed)).probabilities(images)
        diff = float(np.abs(keras.probabilities - ours).max())
        same = int((keras.probabilities.argmax(1) == ours.argmax(1)).sum())
        report["keras"] = {**keras.info, "images": len(images),
                           "max_abs_probability_difference_vs_seed_onnx_fp32": diff,
                           "same_answers_as_seed_onnx_fp32": same}
        k = report["keras"]
        print(f"keras: {k['framework']}, threads {k['threads']}, weights {k['weights']}, test accuracy "
              f"{k['accuracy']:.2%}, max |p - p(seed ONNX fp32)| {diff:.1e}, same answers {same}/{len(images)}",
              file=sys.stderr)
    else:
        print("Keras rows skipped (no --keras-python)", file=sys.stderr)
    print(f"machine: {host['cpu']}, {host['cores']} cores, torch threads {host['torch_threads']}, nice "
          f"{host['nice']}, load average {host['load_average_before'][0]:.2f}", file=sys.stderr)
    print("flags: " + ", ".join(f for f, ok in host["cpu_flags"].items() if ok), file=sys.stderr)
    for name in args.models.split(","):
        report["models"][name] = bench_model(name, images, labels, args.runs, args.single_calls, args.batch_calls,
                                             args.data_dir, keras)
        print(f"{name}: done", file=sys.stderr)
    host["load_average_after"] = os.getloadavg()
    if keras:
        keras.close()

    print("\n| model | backend | test acc % | batch 1 img/s | batch 1 p50 ms | batch 1000 img/s | 10,000 img/s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, r in report["models"].items():
        for k, ips in r["images_per_s"].items():
            acc = r["test_accuracy"][k] if k in r["test_accuracy"] else report["keras"]["accuracy"]
            print(f"| {name} | {k} | {acc:.2%} | {ips['batch1']['median']:,.0f} | "
                  f"{ips['batch1_p50_ms']['median']:.3f} | {ips['batch1000']['median']:,.0f} | "
                  f"{ips['batch_all']['median']:,.0f} |")
    for name, r in report["models"].items():
        a, b = r["int8_over_onnx_fp32"], r["int8_over_torch_fp32"]
        print(f"{name}: int8/fp32 ONNX {a['batch1']:.2f}x (batch 1), {a['batch1000']:.2f}x (batch 1000); "
              f"int8/PyTorch fp32 {b['batch1']:.2f}x, {b['batch1000']:.2f}x")
        for k in ("onnx_int8", "onnx_fp32"):
            if f"{k}_over_keras" in r:
                c = r[f"{k}_over_keras"]
                print(f"{name}: {k} / Keras model.predict at batch 1000 {c['batch1000']['median']:.2f}x "
                      f"({c['batch1000']['min']:.2f}-{c['batch1000']['max']:.2f}), on 10,000 "
                      f"{c['batch_all']['median']:.2f}x ({c['batch_all']['min']:.2f}-{c['batch_all']['max']:.2f}); "
                      "one-image p50, Keras model(x) / "
                      f"{k}: {c['batch1_p50_latency']['median']:.1f}x")
    print(f"load average before {host['load_average_before']}, after {host['load_average_after']}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
