"""The HTTP API through FastAPI's TestClient: every endpoint, every error code, the limits."""

from __future__ import annotations

import asyncio
import io
import json
import os
import time

import httpx
import numpy as np
import pytest
from conftest import draw_digit
from PIL import Image, ImageDraw

pytest.importorskip("fastapi", reason="needs the serve extra")

from fastapi.testclient import TestClient  # noqa: E402

from digitrec.errors import ConfigError  # noqa: E402
from digitrec.infer.recogniser import Recogniser, load  # noqa: E402
from digitrec.serve import ServeConfig, create_app  # noqa: E402
from digitrec.serve.config import resolve_parallelism, usable_cores  # noqa: E402


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def rec() -> Recogniser:
    return load("seed")


@pytest.fixture(scope="module")
def client(rec: Recogniser):
    with TestClient(create_app(ServeConfig(), recogniser=rec)) as c:
        yield c


@pytest.fixture(scope="module")
def seven_png() -> bytes:
    """A dark "7" on white paper, off-centre on a 300x200 canvas."""
    return png_bytes(draw_digit())


def make_client(rec: Recogniser, **config) -> TestClient:
    return TestClient(create_app(ServeConfig(**config), recogniser=rec))


def assert_error(response: httpx.Response, status: int, *needles: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    for needle in needles:
        assert needle in body["error"], body["error"]


def assert_prediction(body: dict, digit: int) -> None:
    assert body["digit"] == digit
    assert len(body["probabilities"]) == 10
    assert sum(body["probabilities"]) == pytest.approx(1.0, abs=1e-4)
    assert body["confidence"] == pytest.approx(max(body["probabilities"]))
    assert body["probabilities"][digit] == body["confidence"]
    assert isinstance(body["unsure"], bool)


# --------------------------------------------------------------------------------------------
# /v1/predict: the three ways to send one image


def test_predict_raw_png(client, rec, seven_png):
    r = client.post("/v1/predict", content=seven_png, headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert_prediction(body, 7)
    assert "input" not in body
    # The same answer as the library gives for the same bytes, spelt as `digitrec predict --json` spells it.
    expected = rec.predict(seven_png).to_dict()
    assert body.keys() == expected.keys()
    assert body["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-6)
    assert [t["digit"] for t in body["top3"]] == [t["digit"] for t in expected["top3"]]


def test_predict_jpeg_and_content_type_parameters(client):
    buf = io.BytesIO()
    draw_digit().convert("RGB").save(buf, format="JPEG", quality=90)
    r = client.post("/v1/predict", content=buf.getvalue(), headers={"Content-Type": "Image/JPEG; foo=bar"})
    assert r.status_code == 200, r.text
    assert_prediction(r.json(), 7)


def test_predict_multipart(client, seven_png):
    r = client.post("/v1/predict", files={"file": ("seven.png", seven_png, "image/png")})
    assert r.status_code == 200, r.text
    assert_prediction(r.json(), 7)


def test_predict_returns_the_input_the_model_saw(client, rec, seven_png):
    r = client.post("/v1/predict?input=true", content=seven_png, headers={"Content-Type": "image/png"})
    seen = np.array(r.json()["input"])
    assert seen.shape == (28, 28) and seen.dtype.kind == "i"
    np.testing.assert_array_equal(seen, np.rint(rec.prepare(seven_png) * 255))


def test_predict_json_pixels_uint8_and_unit_floats(client, rec, real_mnist):
    image = real_mnist.train_images[0]  # a 5, white on black, 0..255
    label = int(real_mnist.train_labels[0])
    r = client.post("/v1/predict", json={"pixels": image.tolist()})
    assert r.status_code == 200, r.text
    assert_prediction(r.json(), label)
    r2 = client.post("/v1/predict", json={"pixels": (image / 255.0).tolist()})
    assert r2.json()["probabilities"] == pytest.approx(r.json()["probabilities"], abs=1e-5)


def test_predict_large_image(client, rec):
    # 1.2 megapixels (in a small, well-compressed PNG): decoded in the threadpool, not inline.
    big = Image.new("L", (1200, 1000), 255)
    big.paste(draw_digit(size=(300, 200)), (500, 400))
    data = png_bytes(big)
    assert len(data) < 64 * 1024
    r = client.post("/v1/predict", content=data, headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    assert r.json()["probabilities"] == pytest.approx(list(rec.predict(data).probabilities), abs=1e-6)


def test_pixel_count_reads_the_header_only(seven_png):
    # Routes use it to send big images to the threadpool instead of the inference thread.
    from digitrec.errors import ImageError
    from digitrec.serve.inputs import pixel_count, prepare

    assert pixel_count(seven_png) == 300 * 200 and pixel_count(np.zeros((100, 100))) == 10_000
    assert prepare(seven_png).shape == (28, 28)
    with pytest.raises(ImageError):
        pixel_count(b"not an image")


def test_predict_large_json_pixels(client):
    # ~120 kB of JSON: parsed off the event loop, same answer as the image itself.
    pixels = np.asarray(draw_digit(size=(300, 200)), dtype=np.uint8).tolist()
    r = client.post("/v1/predict", json={"pixels": pixels})
    assert r.status_code == 200, r.text
    assert_prediction(r.json(), 7)


def test_blank_image_is_no_guess(client, rec):
    blank = png_bytes(Image.new("L", (64, 64), 255))
    r = client.post("/v1/predict", content=blank, headers={"Content-Type": "image/png"})
    assert r.status_code == 200 and r.json()["digit"] is None


# --------------------------------------------------------------------------------------------
# /v1/predict: errors


@pytest.mark.parametrize(
    ("body", "content_type", "status", "needle"),
    [
        (b"hello", "text/plain", 415, "text/plain"),
        (b"<svg/>", "image/svg+xml", 415, "image/svg+xml"),
        (b"", "", 415, "Content-Type"),
        (b"not an image at all", "image/png", 422, "not a recognised image"),
        (b"", "image/png", 422, "empty"),
        (b"{", "application/json", 422, "JSON"),
        (b"[1, 2]", "application/json", 422, "JSON"),
        (b'{"pixels": 5}', "application/json", 422, "pixels"),
        (b'{"pixels": []}', "application/json", 422, "pixels"),
        (b'{"pixels": [[]]}', "application/json", 422, "rectangle"),
        (b'{"pixels": [[1, 2], [3]]}', "application/json", 422, "rectangle"),
        (b'{"pixels": [[1, 2], [3, 300]]}', "application/json", 422, "255"),
        (b'{"pixels": [[1, 2], [3, -1]]}', "application/json", 422, "greater than or equal"),
        (b'{"pixels": [[1, 2], [3, NaN]]}', "application/json", 422, "pixels"),
        (b'{"pixels": [["a", 2], [3, 4]]}', "application/json", 422, "pixels"),
        (b'{"pixels": [[0, 0], [0, 0]], "extra": 1}', "application/json", 422, "extra"),
    ],
)
def test_predict_bad_input(client, body, content_type, status, needle):
    headers = {"Content-Type": content_type} if content_type else {}
    assert_error(client.post("/v1/predict", content=body, headers=headers), status, needle)


def test_truncated_png_is_422(client, seven_png):
    r = client.post("/v1/predict", content=seven_png[: len(seven_png) // 2], headers={"Content-Type": "image/png"})
    assert_error(r, 422)


def test_multipart_without_file_field_is_422(client, seven_png):
    r = client.post("/v1/predict", files={"image": ("seven.png", seven_png, "image/png")})
    assert_error(r, 422, "'file'")
    r = client.post("/v1/predict", data={"file": "just text"})
    assert_error(r, 415)  # urlencoded form: not a multipart upload


def test_malformed_multipart_is_400(client):
    r = client.post("/v1/predict", content=b"--x\r\ngarbage", headers={"Content-Type": "multipart/form-data"})
    assert_error(r, 400)


def test_body_over_the_limit_is_413_from_content_length(rec):
    with make_client(rec, max_body_bytes=1000) as c:
        r = c.post("/v1/predict", content=b"x" * 1001, headers={"Content-Type": "image/png"})
        assert_error(r, 413, "limit")
        r = c.post("/v1/predict", files={"file": ("big.png", b"x" * 2000, "image/png")})
        assert_error(r, 413)


def test_streamed_body_over_the_limit_is_413(rec):
    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(10):
            yield b"x" * 300

    with make_client(rec, max_body_bytes=1000) as c:
        r = c.post("/v1/predict", content=chunks(), headers={"Content-Type": "image/png"})
        assert_error(r, 413)


def test_default_body_limit_is_10_mib(client):
    r = client.post("/v1/predict", content=b"\0" * (10 * 1024 * 1024 + 1), headers={"Content-Type": "image/png"})
    assert_error(r, 413, "10 MiB")


def test_too_many_pixels_is_422(rec, monkeypatch):
    monkeypatch.setattr("digitrec.data.decode.MAX_PIXELS", 1000)  # the server has no limit of its own
    with make_client(rec) as c:
        big = png_bytes(draw_digit(size=(40, 40), offset=(5, 5)))  # 1,600 pixels
        assert_error(c.post("/v1/predict", content=big, headers={"Content-Type": "image/png"}), 422, "too large")
        pixels = {"pixels": [[0] * 40] * 40}
        assert_error(c.post("/v1/predict", json=pixels), 422, "too large")
        r = c.post("/v1/predict/batch", files=[("files", ("big.png", big, "image/png"))])
        assert r.status_code == 200 and "too large" in r.json()["predictions"][0]["error"]


def page_with_a_seven(size: tuple[int, int]) -> Image.Image:
    """A big grey page with one thick dark "7" (mostly flat: cheap to make and to compress)."""
    img = Image.new("L", size, 240)
    ImageDraw.Draw(img).line([(3000, 2000), (4400, 2000), (3600, 4400)], fill=20, width=240)
    return img


def encoded(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def test_the_server_reads_the_photos_the_library_reads(client, rec):
    from digitrec.data.preprocess import MAX_PIXELS

    # 35 MP: more than the server used to take (16 MP), under the library's limit, decoded whole.
    data = encoded(page_with_a_seven((7000, 5000)), "JPEG", quality=85)
    assert MAX_PIXELS > 7000 * 5000 and len(data) < 1024 * 1024
    r = client.post("/v1/predict", content=data, headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200, r.text
    assert r.json()["digit"] == 7 == rec.predict(data).digit
    # 48 MP, over the limit: a JPEG is read at half size, its boxes still in the upload's pixels.
    data = encoded(page_with_a_seven((8000, 6000)), "JPEG", quality=85)
    r = client.post("/v1/read", files={"file": ("photo.jpg", data, "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body == rec.read(data).to_dict() and body["number"] == "7"
    # The stroke drawn spans x 3000..4514, y 1881..4438 (inclusive) of the 8000x6000 page.
    # The grey reader finds columns at 32 px line height (here ~80 photo pixels a line pixel), then fits
    # the box to the ink: within 100 px; a box left in the half-size decoding would be ~1,500 px off.
    np.testing.assert_allclose(body["digits"][0]["box"], [3000, 1881, 1515, 2558], atol=100)


def test_big_non_jpeg_images_are_422_before_decoding(client):
    png = encoded(Image.new("L", (7000, 6000), 255), "PNG")  # 42 MP in 50 kB: a decompression bomb
    assert len(png) < 100 * 1024
    for path in ("/v1/predict", "/v1/read"):
        r = client.post(path, content=png, headers={"Content-Type": "image/png"})
        assert_error(r, 422, "too large", "7000x6000", "only JPEG")
        assert not r.json()["error"].startswith("<bytes>")
    r = client.post("/v1/predict/batch", files=[("files", ("bomb.png", png, "image/png"))])
    assert r.status_code == 200 and "too large" in r.json()["predictions"][0]["error"]


@pytest.mark.parametrize("fmt", ["EPS", "PPM"])
def test_formats_outside_the_allow_list_are_refused(client, seven_png, fmt):
    data = encoded(Image.open(io.BytesIO(seven_png)), fmt)
    for content_type in ("application/octet-stream", "image/png"):
        r = client.post("/v1/predict", content=data, headers={"Content-Type": content_type})
        assert_error(r, 422, "not a recognised image format", "PNG, JPEG, BMP, GIF, TIFF, WEBP")
    r = client.post("/v1/read", files={"file": (f"seven.{fmt.lower()}", data, "application/octet-stream")})
    assert_error(r, 422, "not a recognised image format")
    # Their media types are not image types the server takes any more.
    for content_type in ("image/x-portable-pixmap", "image/x-portable-graymap", "application/postscript"):
        assert_error(client.post("/v1/predict", content=data, headers={"Content-Type": content_type}), 415)


def test_bad_query_parameter_is_422(client, seven_png):
    r = client.post("/v1/predict?input=perhaps", content=seven_png, headers={"Content-Type": "image/png"})
    assert_error(r, 422, "input")


def test_unknown_path_and_method_are_json_errors(client):
    assert_error(client.get("/v2/nothing"), 404)
    assert_error(client.get("/v1/predict"), 405)


# --------------------------------------------------------------------------------------------
# /v1/predict/batch


def test_batch_answers_each_image_in_order(client, rec, seven_png):
    one = png_bytes(draw_digit(size=(200, 200), offset=(0, 0)).transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    files = [
        ("files", ("a.png", seven_png, "image/png")),
        ("files", ("b.txt", b"garbage", "text/plain")),
        ("files", ("c.png", one, "image/png")),
    ]
    r = client.post("/v1/predict/batch", files=files)
    assert r.status_code == 200, r.text
    items = r.json()["predictions"]
    assert [i["filename"] for i in items] == ["a.png", "b.txt", "c.png"]
    assert_prediction({k: v for k, v in items[0].items() if k != "filename"}, 7)
    assert "error" in items[1] and "digit" not in items[1]
    expected = rec.predict(one)
    assert items[2]["digit"] == expected.digit
    assert items[2]["probabilities"] == pytest.approx(list(expected.probabilities), abs=1e-6)


def test_batch_errors(rec, seven_png):
    with make_client(rec, max_batch_files=2) as c:
        assert_error(c.post("/v1/predict/batch", content=seven_png, headers={"Content-Type": "image/png"}), 415)
        assert_error(c.post("/v1/predict/batch", files={"file": ("a.png", seven_png, "image/png")}), 422, "files")
        three = [("files", (f"{i}.png", seven_png, "image/png")) for i in range(3)]
        assert_error(c.post("/v1/predict/batch", files=three), 400)


# --------------------------------------------------------------------------------------------
# /v1/read


def test_read_a_number(client, rec):
    img = Image.new("L", (400, 160), 255)
    left = draw_digit(size=(160, 160), offset=(30, 20))  # a 7
    img.paste(left, (0, 0))
    img.paste(left, (200, 0))
    data = png_bytes(img)
    r = client.post("/v1/read", content=data, headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body == rec.read(data).to_dict()
    assert body["number"] == "77"
    assert [d["digit"] for d in body["digits"]] == [7, 7]
    assert all(len(d["box"]) == 4 for d in body["digits"])
    assert body["digits"][0]["box"][0] < body["digits"][1]["box"][0]


def test_read_errors(client):
    assert_error(client.post("/v1/read", content=b"x", headers={"Content-Type": "text/plain"}), 415)
    assert_error(client.post("/v1/read", content=b"junk", headers={"Content-Type": "image/png"}), 422)


def test_read_refuses_a_model_of_other_classes(tmp_path, seven_png):
    import torch

    from digitrec.models.checkpoint import save_model
    from digitrec.models.registry import create_model

    torch.manual_seed(0)
    clothes = ["top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
    path = save_model(tmp_path / "clothes.safetensors", create_model("seed").eval(), "seed", {},
                      class_names=clothes, extra={"dataset": {"name": "fashion-mnist"}})
    with make_client(load(path, backend="torch", line_reader=None, verifier=None)) as c:
        headers = {"Content-Type": "image/png"}
        assert_error(c.post("/v1/read", content=seven_png, headers=headers), 409, "not trained on digits")
        assert c.post("/v1/predict", content=seven_png, headers=headers).status_code == 200  # it still classifies


# --------------------------------------------------------------------------------------------
# Service endpoints


def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_model_info(client):
    from digitrec import __version__

    body = client.get("/v1/model").json()
    assert body["name"] == "seed" and body["arch"] == "seed"
    assert body["parameters"] == 225_034
    assert body["version"] == __version__
    assert body["metrics"]["test_accuracy"] >= 0.99
    assert body["class_names"] == [str(d) for d in range(10)]
    assert body["verifier"] is None  # the grey reader reads numbers alone: no piece verifier loaded
    assert body["line_reader"] == "grey"  # the bundled grey line reader, by file name only


def test_metrics_count_requests_and_inference(rec, seven_png):
    with make_client(rec) as c:
        for _ in range(3):
            c.post("/v1/predict", content=seven_png, headers={"Content-Type": "image/png"})
        c.post("/v1/predict", content=b"x", headers={"Content-Type": "text/plain"})
        c.get("/nowhere")
        r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'digitrec_http_requests_total{method="POST",route="/v1/predict",status="200"} 3.0' in text
    assert 'digitrec_http_requests_total{method="POST",route="/v1/predict",status="415"} 1.0' in text
    assert 'digitrec_http_requests_total{method="GET",route="other",status="404"} 1.0' in text
    assert 'digitrec_http_request_duration_seconds_count{method="POST",route="/v1/predict"} 4.0' in text
    assert "digitrec_inference_seconds_count" in text
    assert "digitrec_images_predicted_total 3.0" in text


def _requests_counted(metrics, status: str) -> float:
    return metrics.registry.get_sample_value(
        "digitrec_http_requests_total", {"method": "GET", "route": "other", "status": status}) or 0.0


def test_a_request_is_counted_before_its_answer_goes_out():
    # With several workers a client may scrape another worker the moment it has its answer:
    # the count must already be there (CI once saw a total one short).
    from digitrec.serve.metrics import Metrics, MetricsMiddleware

    async def teapot(scope, receive, send):
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def broken(scope, receive, send):
        raise RuntimeError("no answer")

    seen: list[float] = []
    metrics = Metrics()

    async def send(message):
        if message["type"] == "http.response.start":
            seen.append(_requests_counted(metrics, "418"))

    scope = {"type": "http", "method": "GET", "path": "/tea", "root_path": ""}
    asyncio.run(MetricsMiddleware(teapot, metrics)(scope, None, send))
    assert seen == [1.0]
    with pytest.raises(RuntimeError):
        asyncio.run(MetricsMiddleware(broken, metrics)(dict(scope), None, send))
    assert _requests_counted(metrics, "500") == 1.0  # counted once, as the 500 the server will send
    assert _requests_counted(metrics, "418") == 1.0


def test_openapi_documents_the_api(client):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in ("/v1/predict", "/v1/predict/batch", "/v1/read", "/healthz", "/v1/model", "/v1/model.onnx",
                 "/metrics"):
        assert path in paths
    content = paths["/v1/predict"]["post"]["requestBody"]["content"]
    assert {"image/png", "multipart/form-data", "application/json"} <= set(content)
    assert {"413", "415", "422"} <= set(paths["/v1/predict"]["post"]["responses"])


def test_docs_work_offline(client):
    html = client.get("/docs").text
    assert "swagger-ui" in html.lower()
    assert "cdn" not in html.lower() and "https://" not in html  # everything from this server
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert client.get("/docs-assets/swagger-ui.css").status_code == 200


def test_page_and_its_files_are_served(client):
    html = client.get("/")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    for name in ("app.js", "style.css"):
        assert f"/static/{name}" in html.text
        assert client.get(f"/static/{name}").status_code == 200
    assert "https://" not in html.text  # no CDN


# --------------------------------------------------------------------------------------------
# CORS, timeouts, concurrency


def test_cors_is_off_by_default(client):
    r = client.get("/healthz", headers={"Origin": "https://example.org"})
    assert "access-control-allow-origin" not in r.headers


def test_cors_origin_allows_that_origin_only(rec, seven_png):
    with make_client(rec, cors_origin="https://example.org") as c:
        r = c.options("/v1/predict", headers={"Origin": "https://example.org", "Access-Control-Request-Method": "POST",
                                              "Access-Control-Request-Headers": "content-type"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://example.org"
        r = c.post("/v1/predict", content=seven_png,
                   headers={"Content-Type": "image/png", "Origin": "https://example.org"})
        assert r.headers["access-control-allow-origin"] == "https://example.org"
        r = c.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


class SlowRecogniser(Recogniser):
    """The real model, but every forward pass takes at least ``delay`` seconds."""

    delay = 0.05
    passes = 0

    def predict_arrays(self, images):
        type(self).passes += 1
        time.sleep(self.delay)
        return super().predict_arrays(images)


def slow(rec: Recogniser, delay: float) -> SlowRecogniser:
    cls = type("Slow", (SlowRecogniser,), {"delay": delay, "passes": 0})
    return cls(rec.model_file, rec.device, rec.precision)


def test_slow_inference_times_out_with_503(rec, seven_png):
    with TestClient(create_app(ServeConfig(timeout_s=0.2), recogniser=slow(rec, 1.0))) as c:
        r = c.post("/v1/predict", content=seven_png, headers={"Content-Type": "image/png"})
        assert_error(r, 503, "did not answer")
        assert r.headers["retry-after"] == "1"


def test_slow_upload_times_out_with_408(rec, seven_png):
    app = create_app(ServeConfig(timeout_s=0.2), recogniser=rec)

    async def trickle():  # the client stalls mid-upload
        yield seven_png[:10]
        await asyncio.sleep(1.0)
        yield seven_png[10:]

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as ac:
            return await ac.post("/v1/predict", content=trickle(), headers={"Content-Type": "image/png"})

    assert_error(asyncio.run(main()), 408, "not received")
    app.state.service.engine.stop()


def test_concurrent_requests_share_forward_passes(rec, real_mnist):
    """Concurrent single-image requests are batched, and each gets its own image's answer."""
    slow_rec = slow(rec, 0.05)
    app = create_app(ServeConfig(), recogniser=slow_rec)
    images = real_mnist.train_images[:12]
    bad = {"pixels": [[1, 2], [3]]}

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as ac:
            bodies = [{"pixels": im.tolist()} for im in images] + [bad]
            return await asyncio.gather(*(ac.post("/v1/predict", json=b) for b in bodies))

    responses = asyncio.run(main())
    expected = rec.predict_arrays(images)
    for r, e in zip(responses[:-1], expected):
        assert r.status_code == 200
        assert r.json()["probabilities"] == pytest.approx(list(e.probabilities), abs=1e-5)
    assert_error(responses[-1], 422)
    # 12 requests in flight at once: the first pass runs alone, the rest wait and share.
    assert type(slow_rec).passes < len(images)
    app.state.service.engine.stop()


def test_undecodable_image_does_not_fail_its_batch_neighbours(rec, seven_png):
    app = create_app(ServeConfig(), recogniser=slow(rec, 0.05))

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as ac:
            bodies = [seven_png, b"\x89PNG\r\n\x1a\nbroken", seven_png, seven_png]
            return await asyncio.gather(*(
                ac.post("/v1/predict", content=b, headers={"Content-Type": "image/png"}) for b in bodies
            ))

    codes = [r.status_code for r in asyncio.run(main())]
    assert codes == [200, 422, 200, 200]
    app.state.service.engine.stop()


def test_app_serves_again_after_a_restart(rec, seven_png):
    app = create_app(ServeConfig(), recogniser=rec)
    for _ in range(2):  # two lifespans: shutdown stops the inference thread, startup brings it back
        with TestClient(app) as c:
            r = c.post("/v1/predict", content=seven_png, headers={"Content-Type": "image/png"})
            assert r.status_code == 200 and r.json()["digit"] == 7
        assert not app.state.service.engine.running


# --------------------------------------------------------------------------------------------
# The ONNX Runtime backend


def test_onnx_backend_gives_the_same_predictions(rec, seven_png, real_mnist):
    pytest.importorskip("onnxruntime", reason="needs the onnx extra")
    torch_rec = load("seed", backend="torch")
    with TestClient(create_app(ServeConfig(backend="onnx"))) as c:
        served = c.app.state.service.recogniser
        assert served.backend == "onnx" and torch_rec.backend == "torch"
        r = c.post("/v1/predict", content=seven_png, headers={"Content-Type": "image/png"})
        assert r.status_code == 200
        assert r.json()["probabilities"] == pytest.approx(list(torch_rec.predict(seven_png).probabilities), abs=1e-5)
    images = real_mnist.train_images[:64]
    torch_digits = [p.digit for p in torch_rec.predict_arrays(images)]
    assert [p.digit for p in served.predict_arrays(images)] == torch_digits


def test_onnx_backend_without_the_extra_says_how_to_install(monkeypatch):
    monkeypatch.setattr("digitrec.infer.onnx.onnxruntime_available", lambda: False)
    with pytest.raises(ConfigError, match=r"pip install 'digitrec\[onnx\]'"):
        create_app(ServeConfig(backend="onnx"))


# --------------------------------------------------------------------------------------------
# ServeConfig


def test_config_defaults_are_safe():
    cfg = ServeConfig()
    assert cfg.host == "127.0.0.1" and cfg.cors_origin is None
    assert cfg.max_body_bytes == 10 * 1024 * 1024


@pytest.mark.parametrize(
    "kwargs",
    [{"port": 70000}, {"workers": -1}, {"torch_threads": -1}, {"max_body_bytes": 0}, {"timeout_s": 0},
     {"timeout_s": float("nan")}, {"cors_origin": " "}, {"model": ""}, {"log_level": "loud"}, {"max_batch": True},
     {"precision": "fp8"}, {"backend": "tensorrt"}, {"verifier": ""}, {"line_reader": ""}],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ConfigError):
        ServeConfig(**kwargs)


def test_workers_default_to_one_per_core_sharing_the_cores():
    assert ServeConfig().workers == 0 and ServeConfig().torch_threads == 0  # automatic
    auto = resolve_parallelism(ServeConfig(), cores=4)
    assert (auto.workers, auto.torch_threads) == (4, 1)
    one = resolve_parallelism(ServeConfig(workers=1), cores=4)  # --workers 1 stays one process
    assert (one.workers, one.torch_threads) == (1, 4)
    assert resolve_parallelism(ServeConfig(workers=3), cores=4).torch_threads == 1
    assert resolve_parallelism(ServeConfig(workers=2, torch_threads=3), cores=4).torch_threads == 3
    assert resolve_parallelism(ServeConfig(), cores=0).workers == 1
    assert 1 <= usable_cores() <= (os.cpu_count() or 1)


def test_config_json_round_trip():
    cfg = ServeConfig(model="x.safetensors", port=0, workers=3, cors_origin="https://a.b", timeout_s=2.5,
                      line_reader="none")
    assert ServeConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ConfigError, match="unknown"):
        ServeConfig.from_json(json.dumps({"modle": "seed"}))
