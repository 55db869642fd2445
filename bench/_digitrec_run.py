"""digitrec side of bench/speed.py: train a recipe, test once, time inference. Prints one JSON object."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import inference_figures, load_split

import digitrec
from digitrec.data.mnist import load_mnist
from digitrec.runtime import cpu_supports_bf16
from digitrec.train.engine import TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--preset", help="a digitrec preset instead of the notebook recipe")
    parser.add_argument("--data-dir")
    parser.add_argument("--latency-runs", type=int, default=0, help="0 = skip the inference figures")
    args = parser.parse_args()

    overrides: dict[str, object] = {"seed": args.seed, "precision": args.precision}
    if args.epochs:
        overrides["epochs"] = args.epochs
    if args.preset:
        from digitrec.cfg.presets import preset_config

        config = preset_config(args.preset, **overrides)
    else:
        config = TrainConfig(**overrides)  # type: ignore[arg-type]
    result = train(config, data=load_mnist(args.data_dir), device="cpu")
    assert result.test is not None
    out = {
        "framework": f"digitrec {digitrec.__version__} / torch {torch.__version__}",
        "precision": result.precision,
        "arch": config.arch,
        "epoch_seconds": [r.seconds for r in result.history],
        "train_seconds": result.train_seconds,
        "train_images": result.dataset["train_size"],
        "val_accuracy": result.val.accuracy if result.val else None,
        "test_accuracy": result.test.accuracy,
        "params": sum(p.numel() for p in result.model.parameters()),
    }
    if args.latency_runs:
        _, _, _, _, test_x, _ = load_split(args.data_dir, args.seed)
        with tempfile.TemporaryDirectory() as tmp:
            path = result.save(Path(tmp) / "model.safetensors")
            rec = digitrec.load(path)  # what users get: the saved file through the public API
            bf16 = digitrec.load(path, backend="torch", precision="bf16") if cpu_supports_bf16() else None
        images = test_x.astype(np.float32) / 255.0
        # Batch throughput through the bulk API (one array in, one out), as Keras' predict.
        out.update(inference_figures(rec.predict_proba, images, args.latency_runs,
                                     {"predict": rec.predict}))
        out["inference_backend"] = rec.backend
        # The other batch paths, for the README: full Prediction objects, and eager bf16.
        others = {"predict_arrays": rec.predict_arrays}
        if bf16 is not None:
            others["torch_bf16_predict_proba"] = bf16.predict_proba
        out["batch_images_per_s_other"] = {
            name: inference_figures(fn, images, 0, {})["batch_images_per_s"] for name, fn in others.items()
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
