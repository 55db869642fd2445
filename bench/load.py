"""Load benchmark of `digitrec serve` on loopback, with wrk as the load generator.

Starts the server (``digitrec serve --no-access-log``), warms it up, then drives
``POST /v1/predict`` (one PNG per request) with wrk at 1, 8, 32 and 64 connections, then a
soak at 32 connections, reading the server's memory (RSS of all its processes) before and
after the soak. Optionally (``--tuning``) compares worker counts and micro-batching at 32
connections. Besides requests/s and latency it reports the server's CPU time per request (all
its processes, from /proc), which other work on a shared machine hardly changes, so it shows
what the server costs even when requests/s says more about the neighbours. Prints a table and
writes everything to a JSON file.

Everything is bounded: wrk runs for fixed durations with a 2 s request timeout, the server is
stopped at the end (or on any error), and the whole run has a deadline.

    apt-get install -y wrk        # Debian's wrk (LuaJIT scripting)
    python bench/load.py --out bench/results/load.json

wrk is a C event loop that needs a fraction of a core; an async Python client would compete
with the server for the same cores and measure itself. Note wrk (not wrk2) sends the next
request when the previous answer arrives (closed loop), so latencies are those of a saturated
server at that concurrency, not of a fixed arrival rate.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from digitrec.fileio import atomic_write

HERE = Path(__file__).resolve().parent
LUA = HERE / "load.lua"
LEVELS = (1, 8, 32, 64)
SOAK_CONNECTIONS = 32
# (workers, max batch, backend) compared by --tuning at 32 connections.
TUNING = ((1, 1, "torch"), (1, 64, "torch"), (2, 1, "torch"), (2, 64, "torch"), (1, 64, "onnx"), (2, 64, "onnx"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_image() -> bytes:
    """A 28x28 PNG of a "7", white on black as MNIST (what a client sending MNIST-style input sends)."""
    img = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(img).line([(8, 6), (20, 6), (12, 22)], fill=255, width=3)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def canvas_image() -> bytes:
    """A 280x280 PNG of a "7", black on white, like the drawing page sends."""
    img = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(img).line([(80, 60), (200, 60), (120, 220)], fill=0, width=20)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform()}


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants (Linux /proc)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return found


def _tree_sum(pid: int, read_one: Callable[[int], int]) -> int:
    """``read_one(p)`` summed over a process and its descendants; ones that just exited count 0."""
    total = 0
    for p in process_tree(pid):
        try:
            total += read_one(p)
        except (OSError, ValueError, IndexError):
            continue
    return total


def _rss_bytes(p: int) -> int:
    lines = Path(f"/proc/{p}/status").read_text().splitlines()
    return sum(int(line.split()[1]) * 1024 for line in lines if line.startswith("VmRSS:"))


def _cpu_ticks(p: int) -> int:
    fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def process_tree_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants, bytes."""
    return _tree_sum(pid, _rss_bytes)


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and all its descendants."""
    return _tree_sum(pid, _cpu_ticks) / os.sysconf("SC_CLK_TCK")


class Server:
    """`digitrec serve` in a subprocess on a free loopback port."""

    def __init__(self, workers: int, max_batch: int, model: str, backend: str = "torch") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", "digitrec", "serve", "--model", model, "--port", str(self.port),
                    "--workers", str(workers), "--max-batch", str(max_batch), "--backend", backend,
                    "--no-access-log", "-q"]
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.25)
        raise RuntimeError("server did not start within 120 s")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def rss(self) -> int:
        assert self.proc is not None
        return process_tree_rss(self.proc.pid)

    @property
    def cpu(self) -> float:
        assert self.proc is not None
        return process_tree_cpu(self.proc.pid)

    def load(self, image_path: Path, connections: int, seconds: float) -> dict[str, Any]:
        """A wrk run plus the server's CPU time per request (robust to other load on the machine)."""
        before = self.cpu
        r = run_wrk(self.url, image_path, connections, seconds)
        r["server_cpu_s"] = self.cpu - before
        r["server_cpu_us_per_request"] = 1e6 * r["server_cpu_s"] / max(1, r["requests"])
        return r

    def predict(self, image: bytes) -> dict[str, Any]:
        req = urllib.request.Request(self.url + "/v1/predict", data=image, headers={"Content-Type": "image/png"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]


def run_wrk(url: str, image_path: Path, connections: int, seconds: float) -> dict[str, Any]:
    """One wrk run; its JSON summary plus requests/s and the error total."""
    cmd = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds:g}s", "--timeout", "2s",
           "-s", str(LUA), url + "/v1/predict"]
    env = {**os.environ, "DIGITREC_BENCH_IMAGE": str(image_path)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 60)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    out: dict[str, Any] = json.loads(line[len("RESULT "):])
    out["connections"] = connections
    out["requests_per_s"] = out["requests"] / (out["duration_us"] / 1e6)
    out["error_total"] = sum(out["errors"].values())
    return out


def _variant(r: dict[str, Any]) -> str:
    return f"{r['workers']} worker(s), max batch {r['max_batch']}, {r['backend']}"


def row(label: str, r: dict[str, Any]) -> str:
    lat = r["latency_us"]
    return (f"| {label} | {r['requests_per_s']:,.0f} | {lat['p50'] / 1000:.1f} | {lat['p99'] / 1000:.1f} | "
            f"{r['requests']:,} | {r['error_total']} | {r['server_cpu_us_per_request']:,.0f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="seed")
    parser.add_argument("--workers", type=int, default=2, help="server processes (default: %(default)s)")
    parser.add_argument("--max-batch", type=int, default=64, help="micro-batch limit (default: %(default)s)")
    parser.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto", help="model backend")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per concurrency level")
    parser.add_argument("--soak", type=float, default=60.0, help="soak seconds at 32 connections")
    parser.add_argument("--image", choices=["mnist28", "canvas280"], default="mnist28",
                        help="request body: a 28x28 MNIST-style PNG or a 280x280 drawing-page PNG")
    parser.add_argument("--tuning", action="store_true",
                        help="also compare 1/2 workers and micro-batching on/off at 32 connections")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "load.json", help="JSON results file")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("load.py: wrk not found; install it (Debian: apt-get install -y wrk)", file=sys.stderr)
        return 1
    image = default_image() if args.image == "mnist28" else canvas_image()
    started = time.time()
    results: dict[str, Any] = {
        "machine": machine(), "load_average_start": os.getloadavg(),
        "config": {"model": args.model, "workers": args.workers, "max_batch": args.max_batch, "backend": args.backend,
                   "duration_s": args.duration, "soak_s": args.soak, "image": args.image,
                   "image_bytes": len(image), "load_generator": "wrk -t1 (same machine)"},
        "levels": [], "soak": None, "tuning": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        image_path = Path(tmp) / "image.png"
        image_path.write_bytes(image)
        with Server(args.workers, args.max_batch, args.model, args.backend) as server:
            answer = server.predict(image)
            results["answer"] = {"digit": answer["digit"], "confidence": answer["confidence"]}
            results["rss_idle_bytes"] = server.rss
            run_wrk(server.url, image_path, 8, 3)  # warm-up: allocator pools, branch predictors
            for c in LEVELS:
                r = server.load(image_path, c, args.duration)
                results["levels"].append(r)
                print(row(f"{c} connections", r), flush=True)
            rss_before = server.rss
            soak = server.load(image_path, SOAK_CONNECTIONS, args.soak)
            rss_after = server.rss
            soak.update(rss_before_bytes=rss_before, rss_after_bytes=rss_after,
                        rss_change=(rss_after - rss_before) / rss_before)
            results["soak"] = soak
            print(row(f"soak {args.soak:g} s, {SOAK_CONNECTIONS} connections", soak), flush=True)
        if args.tuning:
            for workers, max_batch, backend in TUNING:
                with Server(workers, max_batch, args.model, backend) as server:
                    run_wrk(server.url, image_path, 8, 3)
                    r = server.load(image_path, SOAK_CONNECTIONS, args.duration)
                r.update(workers=workers, max_batch=max_batch, backend=backend)
                results["tuning"].append(r)
                print(row(f"tuning: {_variant(r)}", r), flush=True)
    results["load_average_end"] = os.getloadavg()
    results["wall_s"] = time.time() - started

    m = results["machine"]
    print()
    print(f"Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, torch {m['torch']}; "
          f"load average at start {results['load_average_start'][0]:.2f}, at end {results['load_average_end'][0]:.2f}")
    print(f"Server: {args.workers} worker(s), max batch {args.max_batch}, {args.backend} backend; "
          f"body: {args.image} PNG ({len(image)} bytes)")
    print()
    print("| load | requests/s | p50 ms | p99 ms | requests | errors | server CPU µs/request |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results["levels"]:
        print(row(f"{r['connections']} connections", r))
    print(row(f"soak {args.soak:g} s, {SOAK_CONNECTIONS} connections", results["soak"]))
    for r in results["tuning"]:
        print(row(f"{_variant(r)}, 32 connections", r))
    s = results["soak"]
    print()
    print(f"Server RSS (all processes): idle {results['rss_idle_bytes'] / 2**20:.0f} MiB, before soak "
          f"{s['rss_before_bytes'] / 2**20:.0f} MiB, after {s['rss_after_bytes'] / 2**20:.0f} MiB "
          f"({s['rss_change']:+.1%})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
