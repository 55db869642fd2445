"""Reference run: the notebook's CNN and recipe in Keras 3 on TensorFlow (CPU, fp32).

Run by bench/speed.py in its own process; prints one JSON object. Needs the `bench` extra.
``build_model`` imports without digitrec (bench/_keras_predict.py runs it in a TensorFlow-only venv).
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter off stdout
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402


def build_model(keras):  # type: ignore[no-untyped-def]
    """The notebook's CNN: 225,034 parameters."""
    layers = keras.layers
    return keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(32, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir")
    parser.add_argument("--latency-runs", type=int, default=200)
    args = parser.parse_args()

    import keras
    import tensorflow as tf
    from _common import inference_figures, load_split  # digitrec's data loading: here, not at import

    keras.utils.set_random_seed(args.seed)
    tx, ty, _, _, test_x, test_y = load_split(args.data_dir, args.seed)
    # The notebook's scaling: pixels to [0, 1], a channel axis last.
    x = (tx.astype("float32") / 255.0)[..., None]
    xt = (test_x.astype("float32") / 255.0)[..., None]
    model = build_model(keras)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])

    epoch_seconds: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):  # type: ignore[no-untyped-def]
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):  # type: ignore[no-untyped-def]
            epoch_seconds.append(time.perf_counter() - self.start)

    model.fit(x, ty, batch_size=100, epochs=args.epochs, shuffle=True, verbose=0, callbacks=[Timer()])
    probs = model.predict(xt, batch_size=100, verbose=0)
    accuracy = float((probs.argmax(axis=1) == test_y).mean())

    def batch_predict(images: np.ndarray) -> np.ndarray:
        return model.predict(images, batch_size=100, verbose=0)

    def single_predict(image: np.ndarray) -> np.ndarray:
        return model.predict(image[None], verbose=0)

    def single_call(image: np.ndarray) -> np.ndarray:
        return model(image[None], training=False).numpy()

    inference = inference_figures(batch_predict, xt, args.latency_runs,
                                  {"predict": single_predict, "call": single_call})
    print(json.dumps({
        "framework": f"keras {keras.__version__} / tensorflow {tf.__version__}",
        "precision": "fp32",
        "epoch_seconds": epoch_seconds,
        "train_images": len(x),
        "test_accuracy": accuracy,
        "params": int(model.count_params()),
        **inference,
    }))


if __name__ == "__main__":
    main()
