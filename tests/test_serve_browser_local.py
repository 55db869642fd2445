"""The drawing page reading digits itself: preprocess.js and the model's graph in ONNX Runtime Web.

A drawing is answered in the page with no /v1/predict request, the same digit and probabilities
as the server's; preprocess.js gives Python's 28x28 for the same pixels; and the page falls back
to the server when the runtime files, the graph or WebAssembly are missing. Reuses the real
uvicorn server and Chromium of test_serve_browser.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import pytest
from PIL import Image, ImageDraw
from test_serve_browser import CHROMIUM, ONE, SEVEN, browser, draw, server_url  # noqa: F401  (fixtures)

pytest.importorskip("fastapi", reason="needs the serve extra")
playwright_api = pytest.importorskip("playwright.sync_api", reason="needs the test extra (playwright)")
import httpx  # noqa: E402

from digitrec.data import preprocess  # noqa: E402
from digitrec.data.preprocess import NoDigitError, to_mnist  # noqa: E402

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on PATH (apt-get install chromium)"),
]
expect = playwright_api.expect


def open_page(browser, url: str, init_script: str | None = None, block: str | None = None):  # noqa: F811
    """A fresh page on the drawing page, recording every request it makes; ``block`` aborts a URL glob."""
    context = browser.new_context(viewport={"width": 900, "height": 760})
    if init_script:
        context.add_init_script(init_script)
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda req: requests.append(req.method + " " + req.url))
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    if block:
        page.route(block, lambda route: route.abort())
    page.goto(url + "/")
    return context, page, requests, errors


def predict_requests(requests: list[str]) -> list[str]:
    return [r for r in requests if "/v1/predict" in r]


def pad_png(page) -> bytes:
    """The pad as the PNG the page would post to the server."""
    data_url = page.evaluate("() => document.getElementById('pad').toDataURL('image/png')")
    return base64.b64decode(data_url.split(",", 1)[1])


def bar_values(page) -> list[float]:
    return [float(v) for v in page.locator("#bars .bar").evaluate_all("els => els.map(e => e.dataset.p)")]


def test_drawings_are_read_in_the_page(browser, server_url):  # noqa: F811
    context, page, requests, errors = open_page(browser, server_url)
    expect(page.locator("body")).to_have_attribute("data-engine", "local", timeout=30_000)
    # The runtime came from this server (no CDN): the vendored script, its module and its WebAssembly.
    vendor = [r for r in requests if "/static/vendor/onnxruntime-web/" in r]
    assert any(r.endswith("ort.wasm.min.js") for r in vendor) and any(r.endswith(".wasm") for r in vendor), vendor
    assert all(r.split(" ", 1)[1].startswith(server_url) for r in requests), requests

    for strokes, digit in ((SEVEN, 7), (ONE, 1)):
        page.locator("#clear").click()
        draw(page, strokes)
        expect(page.locator("#digit")).to_have_text(str(digit), timeout=10_000)
        expect(page.locator("body")).to_have_attribute("data-state", "done")
        expect(page.locator("body")).to_have_attribute("data-answered-by", "local")
        expect(page.locator("#path")).to_contain_text("in this browser")
        assert predict_requests(requests) == []  # no server call for inference

        # The server's answer for the very same pixels: same digit, same probabilities (two
        # builds of ONNX Runtime: equal to float32 rounding), same 28x28.
        png = pad_png(page)
        server = httpx.post(server_url + "/v1/predict?input=true", content=png,
                            headers={"Content-Type": "image/png"}).json()
        assert server["digit"] == digit
        local = bar_values(page)
        np.testing.assert_allclose(local, server["probabilities"], atol=1e-5)
        seen = page.evaluate("() => Array.from(document.getElementById('seen').getContext('2d')"
                             ".getImageData(0, 0, 28, 28).data.filter((_, i) => i % 4 === 0))")
        assert seen == [v for row in server["input"] for v in row]
        confidence = page.locator("#confidence").inner_text()
        assert f"{server['confidence'] * 100:.1f}%" in confidence
        assert ("unsure" in confidence) == server["unsure"]

    # An uploaded file still goes to the server, which says so.
    buf = io.BytesIO()
    Image.open(io.BytesIO(pad_png(page))).save(buf, format="PNG")
    with page.expect_response("**/v1/predict**"):
        page.set_input_files("#file", files=[{"name": "one.png", "mimeType": "image/png", "buffer": buf.getvalue()}])
    expect(page.locator("body")).to_have_attribute("data-answered-by", "server", timeout=10_000)
    expect(page.locator("#path")).to_contain_text("uploaded files")
    expect(page.locator("#digit")).to_have_text("1")
    # Drawing again is read locally again, and the upload's answer does not come back over it.
    page.locator("#clear").click()
    draw(page, SEVEN)
    expect(page.locator("body")).to_have_attribute("data-answered-by", "local", timeout=10_000)
    expect(page.locator("#digit")).to_have_text("7")
    assert len(predict_requests(requests)) == 1
    context.close()
    assert not errors, errors


@pytest.mark.parametrize("how", ["runtime files blocked", "graph blocked", "no WebAssembly"])
def test_falls_back_to_the_server(browser, server_url, how):  # noqa: F811
    options = {
        "runtime files blocked": {"block": "**/static/vendor/**"},
        "graph blocked": {"block": "**/v1/model.onnx"},
        "no WebAssembly": {"init_script": "delete window.WebAssembly;"},
    }[how]
    context, page, requests, errors = open_page(browser, server_url, **options)
    expect(page.locator("body")).to_have_attribute("data-engine", "server", timeout=30_000)
    draw(page, SEVEN)
    expect(page.locator("#digit")).to_have_text("7", timeout=10_000)
    expect(page.locator("body")).to_have_attribute("data-answered-by", "server")
    expect(page.locator("#path")).to_contain_text("in-browser model is off")
    assert predict_requests(requests), "the server was not asked"
    reason = {"runtime files blocked": "cannot load /static/vendor/onnxruntime-web/ort.wasm.min.js",
              "graph blocked": "cannot fetch /v1/model.onnx", "no WebAssembly": "this browser has no WebAssembly"}[how]
    expect(page.locator("#path")).to_have_text(f"Read by the server: the in-browser model is off ({reason}).")
    if how == "no WebAssembly":
        assert not [r for r in requests if r.endswith(".wasm") or "/v1/model.onnx" in r]  # nothing fetched in vain
    context.close()
    assert not errors, errors


# --------------------------------------------------------------------------------------------
# preprocess.js against preprocess.py, on the same pixels


def strokes_picture(w: int, h: int, strokes, width: int, ss: int = 4) -> np.ndarray:
    """Black anti-aliased strokes (fractions of the picture) on white, like the page's pen: grey 0-255."""
    im = Image.new("L", (w * ss, h * ss), 255)
    d = ImageDraw.Draw(im)
    for s in strokes:
        pts = [(x * w * ss, y * h * ss) for x, y in s]
        d.line(pts, fill=0, width=width * ss, joint="curve")
        for x, y in pts:
            d.ellipse([x - width * ss / 2, y - width * ss / 2, x + width * ss / 2, y + width * ss / 2], fill=0)
    return np.asarray(im.resize((w, h), Image.Resampling.BOX), dtype=np.float64)


ZERO = [[(0.5 + 0.2 * math.sin(2 * math.pi * t / 40), 0.5 - 0.3 * math.cos(2 * math.pi * t / 40)) for t in range(41)]]
FOUR = [[(0.6, 0.85), (0.6, 0.15), (0.25, 0.6), (0.75, 0.6)]]


def pictures() -> dict[str, np.ndarray]:
    """Grey pictures that take each branch the pad can: light surface fitted, noise, dark paper, tall glyphs..."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:280, 0:280]
    bar = np.full((280, 280), 255.0)
    bar[10:250, 100:190] = strokes_picture(90, 240, ONE, 30)  # a glyph over twice as tall as wide
    out = {
        "seven": strokes_picture(280, 280, SEVEN, 20),
        "thin four": strokes_picture(280, 280, FOUR, 6),
        "seven, side light": strokes_picture(280, 280, SEVEN, 20) * (0.6 + 0.3 * xx / 279) + 20 * yy / 279,
        "zero, noisy grey paper": strokes_picture(280, 280, ZERO, 16) * 0.85 + rng.normal(0, 6, (280, 280)) + 20,
        "one, chalk on a board": 255 - strokes_picture(280, 280, ONE, 20),
        "tall one": bar,
        "four, 200x120": strokes_picture(200, 120, FOUR, 12),
        "seven, 40x40": strokes_picture(40, 40, SEVEN, 4),
        "blank pad": np.full((280, 280), 255.0),
    }
    return {k: np.clip(np.rint(v), 0, 255).astype(np.uint8) for k, v in out.items()}


def run_js(page, grey: np.ndarray, alpha: int = 255):
    """preprocess.js's 28x28 for a grey picture given to it as RGBA pixels (None: no digit; str: refused)."""
    rgba = np.stack([grey, grey, grey, np.full_like(grey, alpha)], -1)
    return page.evaluate(
        """([b64, w, h]) => {
             const bytes = Uint8ClampedArray.from(atob(b64), (c) => c.charCodeAt(0));
             const pre = window.DigitrecPreprocess;
             try {
               const out = pre.fromImageData({ data: bytes, width: w, height: h });
               return out === null ? null : Array.from(out);
             } catch (err) {
               if (err instanceof pre.Unsupported) return "unsupported: " + err.message;
               throw err;
             }
           }""",
        [base64.b64encode(rgba.tobytes()).decode(), grey.shape[1], grey.shape[0]],
    )


def python_28(grey: np.ndarray) -> np.ndarray | None:
    """Python's 28x28 for the same picture, read from a PNG as the server reads the pad's."""
    buf = io.BytesIO()
    Image.fromarray(np.stack([grey] * 3 + [np.full_like(grey, 255)], -1), "RGBA").save(buf, format="PNG")
    try:
        return to_mnist(buf.getvalue())
    except NoDigitError:
        return None


@pytest.fixture(scope="module")
def js_page(browser, server_url):  # noqa: F811
    context = browser.new_context()
    page = context.new_page()
    page.goto(server_url + "/")
    page.wait_for_function("() => window.DigitrecPreprocess !== undefined")
    yield page
    context.close()


def test_preprocess_js_gives_pythons_28x28(js_page):
    for name, grey in pictures().items():
        js = run_js(js_page, grey)
        py = python_28(grey)
        if py is None:
            assert js is None, name  # no digit, on both sides
            continue
        assert isinstance(js, list), (name, js)
        got = np.asarray(js, np.float32).reshape(28, 28)
        # Measured: equal bit for bit (the same float32 and float64 steps as NumPy, SciPy and Pillow).
        np.testing.assert_allclose(got, py, rtol=0, atol=1e-6, err_msg=name)
        assert (got > 0).sum() > 20, name


def test_preprocess_js_refuses_what_it_cannot_do_exactly(js_page):
    seven = strokes_picture(280, 280, SEVEN, 20).astype(np.uint8)
    assert run_js(js_page, seven, alpha=200).startswith("unsupported")  # transparency: composited by Pillow
    assert run_js(js_page, np.full((28, 28), 255, np.uint8)).startswith("unsupported")  # MNIST-like passthrough
    assert run_js(js_page, np.full((100, 1100), 255, np.uint8)).startswith("unsupported")  # over WORK_SIZE
    # A small picture without clean ink is retried by Python as a grey crop: the server's job.
    faint = np.full((60, 60), 200, np.uint8)
    assert run_js(js_page, faint).startswith("unsupported")


def test_preprocess_js_constants_are_pythons(js_page):
    """preprocess.js repeats preprocess.py's constants: they must not drift apart."""
    js = js_page.evaluate("() => window.DigitrecPreprocess.CONSTANTS")
    assert js == {
        "IMAGE_SIZE": preprocess.IMAGE_SIZE, "BOX_SIZE": preprocess.BOX_SIZE, "WORK_SIZE": preprocess.WORK_SIZE,
        "MIN_CONTRAST": preprocess.MIN_CONTRAST, "SPECK_FRACTION": preprocess.SPECK_FRACTION,
        "NOISE_MARGIN": preprocess._NOISE_MARGIN, "MIN_BLOB_PIXELS": preprocess._MIN_BLOB_PIXELS,
        "TINY": preprocess._TINY, "GREY_CROP_MAX": preprocess.GREY_CROP_MAX, "HALF_MAD": preprocess._HALF_MAD,
    }
