"""End to end in a real browser: Playwright drives Debian's Chromium against a real uvicorn server.

The test draws digits with mouse strokes on the page, checks the prediction and the ten bars,
uploads an image through the file input and takes a screenshot. It skips only where no
Chromium is installed (CI installs it: see .ci/run).
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import draw_digit
from PIL import Image

pytest.importorskip("fastapi", reason="needs the serve extra")
playwright_api = pytest.importorskip("playwright.sync_api", reason="needs the test extra (playwright)")
import uvicorn  # noqa: E402

from digitrec.predict import load  # noqa: E402
from digitrec.serve import ServeConfig, create_app  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on PATH (apt-get install chromium)"),
]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
README_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "serve-page.png"

# Strokes as fractions of the pad: (x, y) points of each pen-down path.
SEVEN = [[(0.25, 0.22), (0.72, 0.22), (0.45, 0.82)]]
ONE = [[(0.52, 0.15), (0.50, 0.85)]]


@pytest.fixture(scope="module")
def server_url():
    """A real uvicorn server on a free loopback port, in a background thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(ServeConfig(port=port), recogniser=load("seed"))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server_url):
    context = browser.new_context(viewport={"width": 900, "height": 760})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    # Chromium logs every 4xx answer as a console error; a 422 is the API's expected answer to a
    # bad image, but a 404 would be a missing page file.
    pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" and "422" not in msg.text else None)
    pg.goto(server_url + "/")
    yield pg
    context.close()
    assert not errors, errors  # no JavaScript errors, no failed loads


def draw(page, strokes) -> None:
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        (x0, y0), rest = stroke[0], stroke[1:]
        page.mouse.move(box["x"] + x0 * box["width"], box["y"] + y0 * box["height"])
        page.mouse.down()
        for x, y in rest:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=12)
        page.mouse.up()


def bar_values(page) -> list[float]:
    return [float(v) for v in page.locator("#bars .bar").evaluate_all("els => els.map(e => e.dataset.p)")]


def check_answer(page, digit: int) -> None:
    expect = playwright_api.expect
    expect(page.locator("#digit")).to_have_text(str(digit), timeout=10_000)
    expect(page.locator("body")).to_have_attribute("data-state", "done")
    expect(page.locator("#bars .bar")).to_have_count(10)
    probs = bar_values(page)
    assert sum(probs) == pytest.approx(1.0, abs=1e-3)
    assert int(np.argmax(probs)) == digit
    top = page.locator("#bars .bar.top")
    expect(top).to_have_count(1)
    expect(top).to_have_attribute("data-digit", str(digit))
    # The bar is drawn as long as its probability (once its short CSS transition is over).
    page.wait_for_function(
        "p => { const t = document.querySelector('#bars .bar.top'); const w = e => e.getBoundingClientRect().width;"
        " return Math.abs(w(t.querySelector('.fill')) - p * w(t.querySelector('.track'))) < 2; }",
        arg=probs[digit], timeout=5_000,
    )
    # The 28x28 the model saw is drawn: some bright pixels on black.
    ink = page.evaluate(
        "() => { const d = document.getElementById('seen').getContext('2d').getImageData(0, 0, 28, 28).data;"
        " let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 128) n++; return n; }"
    )
    assert 10 < ink < 400


def test_draw_clear_and_upload(page, tmp_path):
    expect = playwright_api.expect
    expect(page.locator("#digit")).to_have_text("\u2013")

    draw(page, SEVEN)
    check_answer(page, 7)
    page.screenshot(path=str(tmp_path / "seven.png"))
    if os.environ.get("DIGITREC_UPDATE_SCREENSHOT"):
        README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(README_SCREENSHOT))

    # Clear is a real button, reachable from the keyboard.
    page.locator("#clear").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#digit")).to_have_text("\u2013")
    assert bar_values(page) == [0.0] * 10

    draw(page, ONE)
    check_answer(page, 1)

    # Upload a photo-like picture: a dark "7" off-centre on a big light-grey canvas (JPEG).
    paper = Image.new("L", (480, 360), 225)
    paper.paste(draw_digit(size=(200, 160), offset=(50, 20)).point(lambda v: 225 if v > 128 else 40), (220, 150))
    buf = io.BytesIO()
    paper.convert("RGB").save(buf, format="JPEG", quality=85)
    assert load("seed").predict(buf.getvalue()).digit == 7  # the image itself is readable
    page.set_input_files("#file", files=[{"name": "seven.jpg", "mimeType": "image/jpeg", "buffer": buf.getvalue()}])
    check_answer(page, 7)
    page.screenshot(path=str(tmp_path / "upload.png"))
    assert (tmp_path / "upload.png").stat().st_size > 10_000


def test_errors_are_shown_not_thrown(page):
    expect = playwright_api.expect
    page.set_input_files("#file", files=[{"name": "x.png", "mimeType": "image/png", "buffer": b"not a png"}])
    expect(page.locator("body")).to_have_attribute("data-state", "error", timeout=10_000)
    expect(page.locator("#status")).to_contain_text("not a recognised image")


def test_page_fits_a_phone(browser, server_url):
    context = browser.new_context(viewport={"width": 375, "height": 740}, has_touch=True, is_mobile=True)
    pg = context.new_page()
    pg.goto(server_url + "/")
    width = pg.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 375  # no sideways scrolling
    box = pg.locator("#pad").bounding_box()
    assert 250 <= box["width"] <= 375
    # A tap on the pad is a stroke too (touch input goes through the same pointer events).
    pg.touchscreen.tap(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    playwright_api.expect(pg.locator("body")).not_to_have_attribute("data-state", "idle", timeout=10_000)
    context.close()


def test_api_docs_render_offline(browser, server_url):
    """/docs draws the operations from local Swagger UI files; nothing is fetched from elsewhere."""
    context = browser.new_context()
    pg = context.new_page()
    foreign: list[str] = []
    pg.on("request", lambda req: foreign.append(req.url) if not req.url.startswith(server_url) else None)
    pg.goto(server_url + "/docs")
    playwright_api.expect(pg.locator(".opblock-summary-path").first).to_be_visible(timeout=15_000)
    paths = pg.locator(".opblock-summary-path").all_inner_texts()
    assert any("/v1/predict" in p for p in paths), paths
    assert foreign == []
    context.close()
