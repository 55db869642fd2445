"""Helpers shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from digitrec.data import load_mnist
from digitrec.train import split_train_val

VAL_SIZE = 5000  # digitrec's default validation split; both sides train on the same 55,000


def load_split(data_dir: str | None, seed: int) -> tuple[np.ndarray, ...]:
    """(train_x, train_y, val_x, val_y, test_x, test_y) as uint8 images and int labels."""
    mnist = load_mnist(data_dir)
    tx, ty, vx, vy = split_train_val(mnist.train_images, mnist.train_labels, VAL_SIZE, seed)
    return tx, ty, vx, vy, mnist.test_images, mnist.test_labels


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1e3, q))


def inference_figures(
    batch_fn: Callable[[np.ndarray], Any],
    images: np.ndarray,
    latency_runs: int,
    single_fns: Mapping[str, Callable[[np.ndarray], Any]],
    repeats: int = 5,
) -> dict[str, Any]:
    """Batch throughput (median of ``repeats`` passes over ``images``) and one-image latencies."""
    batch_fn(images[:1000])  # warm-up: first calls build kernels and caches
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        batch_fn(images)
        rates.append(len(images) / (time.perf_counter() - start))
    single: dict[str, dict[str, float]] = {}
    for name, fn in single_fns.items():
        for i in range(20):
            fn(images[i])
        times = []
        for i in range(latency_runs):
            start = time.perf_counter()
            fn(images[i % len(images)])
            times.append(time.perf_counter() - start)
        single[name] = {"p50_ms": percentile_ms(times, 50), "p99_ms": percentile_ms(times, 99)}
    return {
        "batch_images_per_s": float(np.median(rates)),
        "batch_images_per_s_runs": rates,
        "single": single,
    }
