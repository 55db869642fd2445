"""Size and inference speed of bundled models, side by side, in one process on the same CPU.

    python bench/models.py                       # seed, best, ensemble
    python bench/models.py --models seed best --out bench/results/models.json

For each model: parameters, file size, test-set throughput (batch 100, median of 3 passes over
10,000 MNIST test images) and one-image latency (p50/p99 of 200 calls), through the public
``digitrec.load`` API with the PyTorch backend (and ONNX Runtime when installed). The seed
model is the reference: ratios are against it, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from _common import inference_figures

import digitrec
from digitrec.data.mnist import load_mnist
from digitrec.infer.backends import onnxruntime_available
from digitrec.models import count_parameters
from digitrec.models.checkpoint import load_model, resolve_model_path


def measure(name: str, backend: str, images: Any) -> dict[str, Any]:
    rec = digitrec.load(name, backend=backend)
    figures = inference_figures(rec.predict_arrays, images, latency_runs=200,
                                single_fns={"one image": lambda img: rec.predict_arrays(img[None])}, repeats=3)
    return {"backend": rec.backend, **figures}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["seed", "best", "ensemble"])
    parser.add_argument("--data-dir")
    parser.add_argument("--out", help="write the results as JSON")
    args = parser.parse_args()
    images = load_mnist(args.data_dir).test_images
    backends = ["torch", "onnx"] if onnxruntime_available() else ["torch"]
    results: dict[str, Any] = {"threads": torch.get_num_threads(), "models": {}}
    for name in args.models:
        mf = load_model(name)  # the weights, to count them (digitrec.load may answer from a cached graph)
        trainable, frozen = count_parameters(mf.model)
        entry: dict[str, Any] = {"arch": mf.arch, "params": trainable + frozen,
                                 "file_bytes": resolve_model_path(name).stat().st_size}
        entry["inference"] = {b: measure(name, b, images) for b in backends}
        results["models"][name] = entry
    ref = results["models"].get(args.models[0])
    for name, entry in results["models"].items():
        for b, fig in entry["inference"].items():
            base = ref["inference"][b] if ref else fig
            fig["throughput_vs_" + args.models[0]] = fig["batch_images_per_s"] / base["batch_images_per_s"]
            print(f"{name:<10} {entry['arch']:<9} {entry['params']:>9,} params {entry['file_bytes'] / 1e6:5.2f} MB  "
                  f"{b:<5} {fig['batch_images_per_s']:>8,.0f} img/s (x{fig['throughput_vs_' + args.models[0]]:.2f})  "
                  f"one image p50 {fig['single']['one image']['p50_ms']:.2f} ms, "
                  f"p99 {fig['single']['one image']['p99_ms']:.2f} ms")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
