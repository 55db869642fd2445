"""Keras reference for bench/int8.py: the notebook CNN's `model.predict` and one-image calls, timed on request.

Runs in a Python with TensorFlow and Keras 3 (no digitrec needed), started by bench/int8.py with
``--keras-python``. It reads its inputs from one ``.npz`` file written by the bench (uint8 test
images, their labels and, when given, the notebook CNN's weights in Keras layout), builds the
model with ``_keras_ref.build_model``, warms it up, writes its probabilities beside the inputs
(``keras_probs.npy``, for the bench's parity check) and prints one JSON line. Then each ``run``
line on stdin times ``--batch-calls`` calls of ``model.predict`` on the first 1,000 images,
one call on all of them (the fixed cost of a ``predict`` call weighs less there) and
``--single-calls`` calls of ``model(x, training=False)`` on one image, and answers one JSON
line; end of input ends it. The bench waits while it runs, so the two never share the CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from _keras_ref import build_model  # sets TensorFlow's log level and Keras's backend on import

WEIGHT_NAMES = ("k1", "b1", "k2", "b2", "w3", "b3", "w4", "b4")  # Conv2D, Conv2D, Dense, Dense: kernel, bias


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("inputs", type=Path, help="the bench's .npz (images, labels, optional weights)")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow intra- and inter-op threads")
    parser.add_argument("--batch-size", type=int, default=100, help="model.predict's batch_size")
    parser.add_argument("--batch-calls", type=int, default=3)
    parser.add_argument("--single-calls", type=int, default=300)
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    # Before TensorFlow starts its thread pools: the same thread count as the bench's other backends.
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import keras

    data = np.load(args.inputs, allow_pickle=False)
    x = (data["images"].astype("float32") / 255.0)[..., None]  # the notebook's scaling, channels last
    model = build_model(keras)
    weighted = all(name in data for name in WEIGHT_NAMES)
    if weighted:
        model.set_weights([data[name] for name in WEIGHT_NAMES])
    probs = np.asarray(model.predict(x, batch_size=args.batch_size, verbose=0))  # also the warm-up
    np.save(args.inputs.parent / "keras_probs.npy", probs, allow_pickle=False)
    one = x[:1]
    for _ in range(20):
        model(one, training=False)
    print(json.dumps({
        "framework": f"keras {keras.__version__} / tensorflow {tf.__version__}",
        "weights": "digitrec seed, exported" if weighted else "random (Keras's initialisers)",
        "accuracy": float((probs.argmax(axis=1) == data["labels"]).mean()),
        "threads": [tf.config.threading.get_intra_op_parallelism_threads(),
                    tf.config.threading.get_inter_op_parallelism_threads()],
        "batch_size": args.batch_size,
    }), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            continue
        start = time.perf_counter()
        for _ in range(args.batch_calls):
            model.predict(x[:1000], batch_size=args.batch_size, verbose=0)
        batch_rate = args.batch_calls * len(x[:1000]) / (time.perf_counter() - start)
        start = time.perf_counter()
        model.predict(x, batch_size=args.batch_size, verbose=0)
        all_rate = len(x) / (time.perf_counter() - start)
        times = []
        for _ in range(args.single_calls):
            start = time.perf_counter()
            model(one, training=False).numpy()  # the answer as an array, as a caller would take it
            times.append(time.perf_counter() - start)
        print(json.dumps({"batch1000": batch_rate, "batch_all": all_rate, "batch1": len(times) / sum(times),
                          "batch1_p50_ms": statistics.median(times) * 1e3}), flush=True)


if __name__ == "__main__":
    main()
