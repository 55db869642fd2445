"""GET /v1/model.onnx (the graph the drawing page runs) and the page's runtime files, through TestClient.

Reuses test_serve's module-scoped recogniser and client.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from conftest import draw_digit

pytest.importorskip("fastapi", reason="needs the serve extra")
ort = pytest.importorskip("onnxruntime", reason="needs the onnx extra")

from fastapi.testclient import TestClient  # noqa: E402
from test_serve import client, rec  # noqa: E402, F401  (fixtures)

from digitrec.data.preprocess import to_mnist  # noqa: E402
from digitrec.infer.recogniser import load  # noqa: E402
from digitrec.serve import ServeConfig, create_app  # noqa: E402

VENDOR = "/static/vendor/onnxruntime-web/"


def test_graph_computes_the_models_answers(client, rec):  # noqa: F811
    r = client.get("/v1/model.onnx")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/octet-stream"
    etag = r.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 10
    assert r.headers["cache-control"] == "no-cache"
    session = ort.InferenceSession(r.content, providers=["CPUExecutionProvider"])
    noise = np.random.default_rng(0).random((28, 28))
    images = np.stack([to_mnist(np.asarray(draw_digit())), noise]).astype(np.float32)
    probs = session.run(None, {session.get_inputs()[0].name: images})[0]
    np.testing.assert_allclose(probs, rec.predict_proba(images), atol=1e-6)
    assert int(np.argmax(probs[0])) == 7
    assert client.get("/v1/model.onnx").headers["etag"] == etag  # the same graph each time


def test_graph_etag_answers_not_modified(client):  # noqa: F811
    etag = client.get("/v1/model.onnx").headers["etag"]
    for header in (etag, "W/" + etag, f'"other", {etag}', "*"):
        r = client.get("/v1/model.onnx", headers={"If-None-Match": header})
        assert r.status_code == 304, header
        assert r.content == b"" and r.headers["etag"] == etag
    r = client.get("/v1/model.onnx", headers={"If-None-Match": '"something-else"'})
    assert r.status_code == 200 and len(r.content) > 100_000


def test_no_graph_is_a_json_404_and_is_remembered():
    bf16 = load("seed", precision="bf16")
    calls = []
    real = bf16.onnx_graph

    def counted() -> bytes:
        calls.append(1)
        return real()

    bf16.onnx_graph = counted  # type: ignore[method-assign]
    with TestClient(create_app(ServeConfig(), recogniser=bf16)) as c:
        for _ in range(2):
            r = c.get("/v1/model.onnx", headers={"If-None-Match": "*"})
            assert r.status_code == 404
            assert r.headers["content-type"].startswith("application/json")
            assert set(r.json()) == {"error"} and "bf16" in r.json()["error"]
    assert calls == [1]  # asked once: the second request was answered from memory


def test_model_info_gives_the_unsure_threshold(client, rec):  # noqa: F811
    assert client.get("/v1/model").json()["min_confidence"] == rec.min_confidence


def test_runtime_files_are_served_with_strict_types(client):  # noqa: F811
    wasm = client.get(VENDOR + "ort-wasm-simd-threaded.wasm")
    assert wasm.status_code == 200 and wasm.headers["content-type"] == "application/wasm"
    assert wasm.content[:4] == b"\0asm"
    for name in ("ort-wasm-simd-threaded.mjs", "ort.wasm.min.js"):
        r = client.get(VENDOR + name)
        assert r.status_code == 200 and r.headers["content-type"] == "text/javascript; charset=utf-8", name
        assert b"1.30.0" in r.content or name.endswith(".mjs")
    assert "MIT License" in client.get(VENDOR + "LICENSE").text
    assert client.get("/static/preprocess.js").headers["content-type"].startswith("text/javascript")
    # A revalidation still answers 304 (the types are set on full answers only).
    etag = wasm.headers["etag"]
    assert client.get(VENDOR + "ort-wasm-simd-threaded.wasm", headers={"If-None-Match": etag}).status_code == 304


def test_the_runtime_is_kept_gzipped_and_served_whole(client):  # noqa: F811
    """The 14 MB .wasm lives in the package gzipped: a browser gets it gzip-encoded, anything else decoded."""
    wasm = client.get(VENDOR + "ort-wasm-simd-threaded.wasm")  # httpx asks for gzip and decodes it
    assert wasm.headers["content-encoding"] == "gzip" and wasm.headers["vary"] == "accept-encoding"
    # The bytes the vendored runtime's README lists: the npm package's file, unchanged.
    assert hashlib.sha256(wasm.content).hexdigest() == \
        "3398c10d07d229bd91b364548e130e0e51a8e5704b88c7c083ebbeb78842dee2"
    plain = client.get(VENDOR + "ort-wasm-simd-threaded.wasm", headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    assert plain.headers["content-type"] == "application/wasm" and plain.content == wasm.content
    assert client.get(VENDOR + "ort-wasm-simd-threaded.wasm.gz").status_code == 200  # the file itself, as stored
    assert client.get(VENDOR + "missing.wasm").status_code == 404
