"""`digitrec serve` as users run it: flags, one-line errors, a real server with two workers."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port
from test_cli import assert_one_line_error, run

pytest.importorskip("fastapi", reason="needs the serve extra")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402


def test_serve_help():
    proc = run("serve", "--help")
    assert proc.returncode == 0
    for flag in ("--model", "--host", "--port", "--workers", "--cors-origin", "--timeout"):
        assert flag in proc.stdout


def test_serve_bad_flags_exit_2():
    assert_one_line_error(run("serve", "--port", "70000"), 2, "--port")
    assert_one_line_error(run("serve", "--workers", "-1"), 2, "--workers")  # 0 means one per core


def test_serve_bad_model_fails_before_serving(tmp_path):
    assert_one_line_error(run("serve", "--model", str(tmp_path / "nope.safetensors"), "--port", "0"), 1, "nope")


def test_serve_port_in_use_is_one_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert_one_line_error(run("serve", "--port", str(port)), 1, "cannot listen", str(port))


def test_serve_without_the_extra_says_how_to_install():
    blocker = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('fastapi', 'uvicorn'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from digitrec.cli.main import main\n"
        "sys.exit(main(['serve']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, timeout=120)
    assert_one_line_error(proc, 1, "pip install 'digitrec[serve]'")


def _get(url: str, data: bytes | None = None, content_type: str | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": content_type} if content_type else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _scrape(url: str) -> dict[str, float]:
    """``GET /metrics``: the values of the samples of ``/v1/predict`` (or of no route), summed by name."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("route", "/v1/predict") == "/v1/predict":
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


class TwoWorkerServer:
    """`digitrec serve --workers 2` on a free loopback port, its log read as it comes, always stopped."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = tmp
        self.log: list[str] = []  # stderr lines: uvicorn logs each worker's pid and startup there

    def __enter__(self) -> TwoWorkerServer:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "digitrec", "serve", "--port", str(self.port), "--workers", "2",
             "--no-access-log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
            env={**os.environ, "TMPDIR": str(self.tmp)},  # where run() makes the shared metrics directory
        )
        self._reader = threading.Thread(target=lambda: self.log.extend(self.proc.stderr or ()), daemon=True)
        self._reader.start()
        try:
            deadline = time.monotonic() + 120
            # Both workers, not just the first: a test may pause one and needs the other serving.
            while sum("Application startup complete" in line for line in self.log) < 2:
                assert self.proc.poll() is None, "server exited:\n" + "".join(self.log)
                assert time.monotonic() < deadline, "workers did not start within 120 s:\n" + "".join(self.log)
                time.sleep(0.25)
        except BaseException:
            self.__exit__()  # `with` calls it only once __enter__ has returned
            raise
        return self

    @property
    def worker_pids(self) -> list[int]:
        return [int(m[1]) for line in self.log if (m := re.search(r"Started server process \[(\d+)\]", line))]

    def __exit__(self, *exc: object) -> None:
        for pid in self.worker_pids:  # a paused worker could not stop
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=10)


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="pauses workers with SIGSTOP")
def test_serve_two_workers_answer_count_together_and_stop_on_ctrl_c(digit_png, tmp_path):
    with TwoWorkerServer(tmp_path) as server:
        workers = server.worker_pids
        assert len(workers) == 2, server.log
        assert len(list(tmp_path.glob("digitrec-metrics-*"))) == 1  # the shared metrics directory
        # Pause one worker while the other answers half the requests, then the other way round:
        # the kernel may hand every connection to one worker, and this makes each answer 10.
        for paused in workers:
            os.kill(paused, signal.SIGSTOP)
            try:
                for _ in range(10):
                    status, body = _get(server.url + "/v1/predict", digit_png, "image/png")
                    assert status == 200 and body["digit"] == 7
            finally:
                os.kill(paused, signal.SIGCONT)
        assert _get(server.url + "/v1/predict", b"x", "text/plain")[0] == 415
        # Whichever worker answers a scrape, it reports both workers' requests.
        for _ in range(4):
            totals = _scrape(server.url)
            assert totals["digitrec_http_requests_total"] == 21  # 20 answered 200, one 415
            assert totals["digitrec_images_predicted_total"] == 20
    assert server.proc.returncode == 0, "".join(server.log)
    assert "Traceback" not in "".join(server.log)
    assert list(tmp_path.glob("digitrec-metrics-*")) == []  # removed at exit
