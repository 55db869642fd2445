"""Parity of `digitrec import-keras` with Keras itself on a real notebook model: probabilities and test accuracy.

Needs Keras 3 with a backend (the bench extra's TensorFlow, or `KERAS_BACKEND=torch`) to run the
original; digitrec reads the file without it. Both see the same MNIST test images, scaled by
1/255 as the notebook does.

    python bench/keras_import.py cnn_digit_recognition.keras --out bench/results/keras-import.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402

from digitrec.data.mnist import load_mnist  # noqa: E402
from digitrec.infer.evaluate import evaluate  # noqa: E402
from digitrec.models.checkpoint import load_model  # noqa: E402
from digitrec.models.keras_import import import_keras  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("keras_file", help="the notebook's saved model (.keras)")
    parser.add_argument("--data-dir", help="MNIST folder (default: the data-directory setting)")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    import keras  # the original, run by Keras itself

    mnist = load_mnist(args.data_dir)
    x = mnist.test_images.astype(np.float32) / 255.0
    original = keras.saving.load_model(args.keras_file)
    keras_probs = np.asarray(original.predict(x[..., None], batch_size=500, verbose=0))
    with tempfile.TemporaryDirectory() as tmp:
        mf = load_model(import_keras(args.keras_file, Path(tmp) / "imported.safetensors"))
    import torch

    result = evaluate(mf.model, mnist.test_images, mnist.test_labels, device=torch.device("cpu"), precision="fp32",
                      normalization=mf.normalization)
    with torch.no_grad():
        ours = mf.model(torch.from_numpy(x)[:, None]).softmax(dim=1).numpy()
    out = {
        "keras": {"version": keras.__version__, "backend": keras.backend.backend(),
                  "test_accuracy": float((keras_probs.argmax(1) == mnist.test_labels).mean())},
        "digitrec": {"test_accuracy": result.accuracy, "test_loss": result.loss},
        "max_abs_probability_difference": float(np.abs(ours - keras_probs).max()),
        "same_answers": int((ours.argmax(1) == keras_probs.argmax(1)).sum()),
        "images": len(x),
        "machine": machine(),
    }
    print(json.dumps(out, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
