"""Batch reading speed, files/s on one machine: one process against the process pool against Ray Data (local).

Writes ``--count`` PNG files (MNIST test digits, repeated, as 28x28 greyscale PNGs) to a
temporary folder, then reads them all with ``digitrec predict``'s batch engine three ways, in
interleaved rounds (each round runs every engine once, so a drift in the machine's load touches
all alike): this process alone (``--jobs 1``), the spawn pool (``--jobs`` = the cores) and Ray
Data on a local Ray started here (one actor per core). Figures: the median over the rounds of
files/s, end to end (listing the folder, start-up of the workers or of the Ray actors, decoding,
inference, the rows); Ray's own start-up (``ray.init``) is timed apart. Every engine's rows are
checked equal to the one-process rows.

    nice -n 10 python bench/batch.py --count 100000 --rounds 3 --out bench/results/batch.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402


def _write_pngs(folder: Path, count: int, data_dir: str | None) -> None:
    from PIL import Image

    from digitrec.data.mnist import load_mnist

    images = load_mnist(data_dir).test_images
    for i in range(count):
        sub = folder / f"{i // 1000:04d}"  # 1,000 files per folder, as scanned batches often come
        if i % 1000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i % len(images)]).save(sub / f"{i:07d}.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="PNG files to generate and read")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; figures are medians over them")
    parser.add_argument("--jobs", type=int, default=None, help="pool processes and Ray actors (default: the cores)")
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--model", default="seed")
    parser.add_argument("--no-ray", action="store_true", help="leave Ray out")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=None, help="write the figures here as JSON")
    args = parser.parse_args()

    from digitrec.infer.batch import ModelSpec, default_jobs, discover, read_chunks

    load_before = os.getloadavg()  # a shared machine: the load the figures were taken under
    jobs = args.jobs or default_jobs()
    spec = ModelSpec(model=args.model, task="digits")
    spec.load()  # the ONNX graph exported and cached once, before any timing
    engines: dict[str, object] = {
        "1 process": lambda paths: read_chunks(paths, spec, jobs=1, chunk_size=args.chunk_size),
        f"pool, {jobs} processes": lambda paths: read_chunks(paths, spec, jobs=jobs, chunk_size=args.chunk_size),
    }
    ray_start_s = None
    if not args.no_ray:
        import ray

        from digitrec.ray import connect, ray_chunks

        t0 = time.perf_counter()
        connect(None, num_cpus=jobs)
        ray_start_s = time.perf_counter() - t0
        engines[f"Ray local, {jobs} actors"] = lambda paths: ray_chunks(paths, spec, jobs=jobs,
                                                                         chunk_size=args.chunk_size)
    with tempfile.TemporaryDirectory(prefix="digitrec-batch-bench-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        _write_pngs(folder, args.count, args.data_dir)
        print(f"wrote {args.count:,} PNG files in {time.perf_counter() - t0:.1f} s", flush=True)
        seconds: dict[str, list[float]] = {name: [] for name in engines}
        reference = None
        for r in range(args.rounds):
            for name, engine in engines.items():
                t0 = time.perf_counter()
                rows = [row for chunk in engine(discover([str(folder)])) for row in chunk]  # type: ignore[operator]
                seconds[name].append(time.perf_counter() - t0)
                if len(rows) != args.count or any(row["error"] for row in rows):
                    raise SystemExit(f"{name}: {len(rows)} rows, errors: {sum(bool(x['error']) for x in rows)}")
                if reference is None:
                    reference = rows
                elif rows != reference:
                    raise SystemExit(f"{name}: rows differ from the first engine's")
                print(f"round {r + 1}: {name}: {args.count / seconds[name][-1]:,.0f} files/s", flush=True)
    if ray_start_s is not None:
        ray.shutdown()
    base = args.count / statistics.median(seconds["1 process"])
    results = {name: {"files_per_s": round(args.count / statistics.median(s), 1),
                      "ratio_to_1_process": round(args.count / statistics.median(s) / base, 2),
                      "seconds": [round(x, 2) for x in s]} for name, s in seconds.items()}
    report = {"machine": machine(), "count": args.count, "rounds": args.rounds, "jobs": jobs,
              "chunk_size": args.chunk_size, "model": args.model, "ray_start_s": ray_start_s,
              "load_avg_before": load_before,
              "load_avg_after": os.getloadavg(), "results": results}
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
