"""Helpers shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from digitrec.data.mnist import load_mnist, split_train_val
from digitrec.data.synthetic import digit_line

VAL_SIZE = 5000  # digitrec's default validation split; both sides train on the same 55,000


def load_split(data_dir: str | None, seed: int) -> tuple[np.ndarray, ...]:
    """(train_x, train_y, val_x, val_y, test_x, test_y) as uint8 images and int labels."""
    mnist = load_mnist(data_dir)
    tx, ty, vx, vy = split_train_val(mnist.train_images, mnist.train_labels, VAL_SIZE, seed)
    return tx, ty, vx, vy, mnist.test_images, mnist.test_labels


# CPU features that decide which kernels torch and ONNX Runtime can use.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags(wanted: Sequence[str] = CPU_FLAGS) -> dict[str, bool]:
    """Which of ``wanted`` the CPU reports (all False where /proc/cpuinfo is not there)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return {f: f in flags for f in wanted}


def machine() -> dict[str, Any]:
    """The machine a bench ran on: CPU model and flags, cores, Python, platform."""
    return {"cpu": cpu_name(), "cpu_flags": cpu_flags(), "cores": os.cpu_count(),
            "python": platform.python_version(), "platform": platform.platform()}


def number_lines(
    images: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator, seed_base: int, touching: float,
) -> Iterator[tuple[np.ndarray, str]]:
    """``n`` numbers of 2-6 distinct digits drawn by ``rng`` from ``images``, photographed as one line each
    (:func:`digitrec.data.synthetic.digit_line`, line ``i`` with seed ``seed_base + i``): (image, digits)."""
    for i in range(n):
        idx = rng.choice(len(images), int(rng.integers(2, 7)), replace=False)
        truth = "".join(str(int(labels[j])) for j in idx)
        yield digit_line([images[j] for j in idx], seed_base + i, touching=touching), truth


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
