"""`digitrec serve` as users run it: flags, one-line errors, a real server with two workers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from test_cli import assert_one_line_error, run

pytest.importorskip("fastapi", reason="needs the serve extra")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_help():
    proc = run("serve", "--help")
    assert proc.returncode == 0
    for flag in ("--model", "--host", "--port", "--workers", "--cors-origin", "--timeout"):
        assert flag in proc.stdout


def test_serve_bad_flags_exit_2():
    assert_one_line_error(run("serve", "--port", "70000"), 2, "--port")
    assert_one_line_error(run("serve", "--workers", "0"), 2, "--workers")


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


def test_serve_two_workers_answer_and_stop_on_ctrl_c(digit_png):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "digitrec", "serve", "--port", str(port), "--workers", "2", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if _get(base + "/healthz") == (200, {"status": "ok"}):
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.25)
        status, body = _get(base + "/v1/predict", digit_png, "image/png")
        assert status == 200 and body["digit"] == 7
        assert _get(base + "/v1/predict", b"x", "text/plain")[0] == 415
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
