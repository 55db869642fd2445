"""Fuzzing the HTTP API: no input, however odd, makes the server answer 5xx.

Schemathesis generates requests from the OpenAPI schema (every operation, every documented
media type, valid and invalid bodies); Hypothesis adds arbitrary bytes under arbitrary
content types, and images that are almost valid (mutated real PNGs).
"""

from __future__ import annotations

import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

pytest.importorskip("fastapi", reason="needs the serve extra")
schemathesis = pytest.importorskip("schemathesis", reason="needs the test extra (schemathesis)")

from fastapi.testclient import TestClient  # noqa: E402

from digitrec.infer.recogniser import load  # noqa: E402
from digitrec.serve import ServeConfig, create_app  # noqa: E402

# A small body limit so that the fuzzer also reaches it (the pixel limit is the library's, and
# mutated headers reach it); one model for all examples.
APP = create_app(ServeConfig(max_body_bytes=64 * 1024), recogniser=load("seed"))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@schema.parametrize()
@FUZZ
def test_schema_operations_never_answer_5xx(case):
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
    if response.status_code >= 400:
        assert "error" in response.json()


def _png(size: tuple[int, int], mode: str) -> bytes:
    img = Image.new(mode, size, "white")
    ImageDraw.Draw(img).line([(2, 2), (size[0] - 3, size[1] - 3)], fill="black", width=3)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


SEED_IMAGES = [_png((40, 30), "L"), _png((30, 50), "RGB"), _png((28, 28), "RGBA"), _png((64, 8), "1")]
CONTENT_TYPES = st.sampled_from([
    "image/png", "image/jpeg", "image/gif", "image/webp", "image/tiff", "application/octet-stream",
    "application/json", "multipart/form-data", "multipart/form-data; boundary=x", "text/plain", "",
    "image/png; charset=utf-8", "APPLICATION/JSON",
])


@st.composite
def mutated_images(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEED_IMAGES)))
    for _ in range(draw(st.integers(1, 8))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@pytest.fixture(scope="module")
def client():
    with TestClient(APP) as c:
        yield c


@given(body=st.one_of(st.binary(max_size=2048), mutated_images()), content_type=CONTENT_TYPES,
       path=st.sampled_from(["/v1/predict", "/v1/predict/batch", "/v1/read"]))
@FUZZ
def test_arbitrary_bodies_never_answer_5xx(client, body, content_type, path):
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(path, content=body, headers=headers)
    assert response.status_code < 500, (path, content_type, response.status_code, response.text[:300])
    assert "error" in response.json() or response.status_code == 200


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=60,
)


@given(body=st.one_of(json_values, st.fixed_dictionaries({"pixels": json_values})))
@FUZZ
def test_arbitrary_json_never_answers_5xx(client, body):
    response = client.post("/v1/predict", json=body)
    assert response.status_code < 500, (body, response.status_code, response.text[:300])
