"""End to end in a real browser: Playwright drives Debian's Chromium against a real uvicorn server.

The tests draw digits with mouse strokes on the page, check the prediction and the ten bars,
upload an image through the file input and take a screenshot; in number mode they write a
number on the wide pad and check the reading, the digit chips and the boxes drawn over the pad. It skips only where no
Chromium is installed (CI installs it: see .ci/run).
"""

from __future__ import annotations

import contextlib
import io
import math
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

from digitrec.infer.recogniser import load  # noqa: E402
from digitrec.serve import ServeConfig, create_app  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on PATH (apt-get install chromium)"),
]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
README_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "serve-page.png"
NUMBER_SCREENSHOT = README_SCREENSHOT.with_name("serve-number.png")

# Strokes as fractions of the pad: (x, y) points of each pen-down path.
SEVEN = [[(0.25, 0.22), (0.72, 0.22), (0.45, 0.82)]]
ONE = [[(0.52, 0.15), (0.50, 0.85)]]


# Number mode: digits on the wide pad, each centred at x = cx (a fraction of the pad's width).
def line_one(cx: float) -> list[list[tuple[float, float]]]:
    return [[(cx, 0.15), (cx - 0.005, 0.85)]]


def line_zero(cx: float) -> list[list[tuple[float, float]]]:
    return [[(cx + 0.045 * math.sin(2 * math.pi * t / 40), 0.5 - 0.34 * math.cos(2 * math.pi * t / 40))
             for t in range(41)]]


def line_seven(cx: float) -> list[list[tuple[float, float]]]:
    return [[(cx - 0.05, 0.18), (cx + 0.05, 0.18), (cx - 0.01, 0.85)]]


NUMBER = "7101"
NUMBER_CENTRES = [0.25, 0.42, 0.57, 0.72]
NUMBER_STROKES = line_seven(0.25) + line_one(0.42) + line_zero(0.57) + line_one(0.72)


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


def draw(page, strokes, pad: str = "#pad") -> None:
    box = page.locator(pad).bounding_box()
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
    # Number mode shows its errors the same way, in its own status line.
    page.locator("label[for=mode-number]").click()
    expect(page.locator("body")).to_have_attribute("data-state", "idle")  # each mode keeps its own state
    page.set_input_files("#line-file", files=[{"name": "x.png", "mimeType": "image/png", "buffer": b"not a png"}])
    expect(page.locator("body")).to_have_attribute("data-state", "error", timeout=10_000)
    expect(page.locator("#number-status")).to_contain_text("not a recognised image")
    expect(page.locator("#number")).to_have_text("\u2013")


def pad_ink(page, pad: str) -> int:
    """How many pixels of the canvas are dark."""
    return page.evaluate(
        "sel => { const c = document.querySelector(sel); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
        " for (let i = 0; i < d.length; i += 4) if (d[i] < 128) n++; return n; }", pad)


def overlay_boxes(page) -> list[dict[str, float]]:
    """The boxes drawn over the number pad, as the page shows them (CSS pixels)."""
    return [r.bounding_box() for r in page.locator("#boxes rect").all()]


def test_number_mode_reads_a_written_number(page, tmp_path):
    expect = playwright_api.expect
    # The mode switch is a pair of radio buttons: the arrow keys move between them.
    page.locator("#mode-digit").focus()
    page.keyboard.press("ArrowRight")
    expect(page.locator("#mode-number")).to_be_checked()
    expect(page.locator("#number-mode")).to_be_visible()
    expect(page.locator("#digit-mode")).to_be_hidden()
    assert page.url.endswith("#number")
    pad = page.locator("#line-pad").bounding_box()
    assert pad["width"] >= 3.5 * pad["height"]  # a wide pad
    size = page.evaluate("() => { const c = document.getElementById('line-pad'); return [c.width, c.height]; }")
    assert size[0] / size[1] == pytest.approx(pad["width"] / pad["height"], rel=0.02)  # strokes are not stretched

    draw(page, NUMBER_STROKES, pad="#line-pad")
    expect(page.locator("#number")).to_have_text(NUMBER, timeout=10_000)
    expect(page.locator("body")).to_have_attribute("data-state", "done")
    expect(page.locator("#number-confidence")).to_contain_text("Confidence")
    chips = page.locator("#chips .chip")
    expect(chips).to_have_count(len(NUMBER))
    assert chips.evaluate_all("els => els.map(e => e.dataset.digit)") == list(NUMBER)
    for c in chips.evaluate_all("els => els.map(e => Number(e.dataset.confidence))"):
        assert 0 < c <= 1
    assert "%" in chips.first.inner_text()

    # One box per digit, left to right, each over the strokes of its digit: the boxes, in the
    # posted image's pixels, are scaled to the pad as shown.
    boxes = overlay_boxes(page)
    assert len(boxes) == len(NUMBER)
    for b, cx in zip(boxes, NUMBER_CENTRES):
        x = pad["x"] + cx * pad["width"]
        assert b["x"] - 2 <= x <= b["x"] + b["width"] + 2
        assert pad["x"] - 1 <= b["x"] and b["x"] + b["width"] <= pad["x"] + pad["width"] + 1
        assert pad["y"] - 1 <= b["y"] and b["y"] + b["height"] <= pad["y"] + pad["height"] + 1
        assert b["height"] > 0.5 * pad["height"]  # the strokes run from 15% to 85% of the height
    assert [b["x"] for b in boxes] == sorted(b["x"] for b in boxes)
    expect(page.locator("#boxes text")).to_have_text(list(NUMBER))

    page.screenshot(path=str(tmp_path / "number.png"))
    if os.environ.get("DIGITREC_UPDATE_SCREENSHOT"):
        NUMBER_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.evaluate("() => document.activeElement.blur()")  # no focus ring on the mode switch
        page.screenshot(path=str(NUMBER_SCREENSHOT))

    # Clear, from the keyboard, empties the pad, the reading, the chips and the boxes.
    page.locator("#line-clear").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#number")).to_have_text("\u2013")
    expect(chips).to_have_count(0)
    expect(page.locator("#boxes rect")).to_have_count(0)
    expect(page.locator("body")).to_have_attribute("data-state", "idle")
    assert pad_ink(page, "#line-pad") == 0

    # Escape clears too; and digit mode still works after a trip to number mode.
    draw(page, line_one(0.5), pad="#line-pad")
    expect(page.locator("#number")).to_have_text("1", timeout=10_000)
    expect(page.locator("#boxes rect")).to_have_count(1)
    page.locator("#line-pad").focus()
    page.keyboard.press("Escape")
    expect(page.locator("#boxes rect")).to_have_count(0)
    page.locator("label[for=mode-digit]").click()
    expect(page.locator("#digit-mode")).to_be_visible()
    expect(page.locator("#number-mode")).to_be_hidden()
    draw(page, ONE)
    check_answer(page, 1)


def test_number_mode_drops_stale_answers(page):
    """An answer that comes back after a newer request was sent is never shown."""
    expect = playwright_api.expect
    held: list = []

    def hold_the_first(route):
        if held:
            route.continue_()
        else:
            held.append(route)  # the first reading stays unanswered for now

    page.route("**/v1/read", hold_the_first)
    page.locator("label[for=mode-number]").click()
    draw(page, line_one(0.3), pad="#line-pad")
    for _ in range(200):
        if held:
            break
        page.wait_for_timeout(25)
    assert held, "the page did not ask to read the pad"
    expect(page.locator("body")).to_have_attribute("data-state", "busy")
    draw(page, line_zero(0.45), pad="#line-pad")
    expect(page.locator("#number")).to_have_text("10", timeout=10_000)
    # Now the old request's answer arrives, late (if the page still listens for it).
    with contextlib.suppress(playwright_api.Error):  # the page may already have aborted it
        held[0].fulfill(json={"number": "999", "confidence": 1.0, "unsure": False, "digits": []})
    page.wait_for_timeout(300)
    expect(page.locator("#number")).to_have_text("10")
    expect(page.locator("#chips .chip")).to_have_count(2)
    expect(page.locator("#boxes rect")).to_have_count(2)


def test_number_mode_blank_pad_shows_no_number(browser, server_url):
    expect = playwright_api.expect
    context = browser.new_context(viewport={"width": 900, "height": 760})
    pg = context.new_page()
    pg.goto(server_url + "/#number")  # the mode is in the address
    expect(pg.locator("#mode-number")).to_be_checked()
    expect(pg.locator("#number")).to_have_text("\u2013")
    expect(pg.locator("#number-confidence")).to_have_text("Write a number to start.")
    # A picture goes on the pad and the pad is read: a blank one holds no number.
    buf = io.BytesIO()
    Image.new("L", (400, 100), 255).save(buf, format="PNG")
    blank = {"name": "blank.png", "mimeType": "image/png", "buffer": buf.getvalue()}
    with pg.expect_response("**/v1/read") as answer:
        pg.set_input_files("#line-file", files=[blank])
    assert answer.value.json()["number"] is None
    expect(pg.locator("body")).to_have_attribute("data-state", "done")
    expect(pg.locator("#number-confidence")).to_have_text("No number found.")
    expect(pg.locator("#number")).to_have_text("\u2013")
    expect(pg.locator("#chips .chip")).to_have_count(0)
    expect(pg.locator("#boxes rect")).to_have_count(0)
    context.close()


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
    # Number mode fits too: the wide pad spans the screen, and a finger writes on it.
    pg.locator("label[for=mode-number]").tap()
    playwright_api.expect(pg.locator("#number-mode")).to_be_visible()
    playwright_api.expect(pg.locator("body")).to_have_attribute("data-state", "idle")
    assert pg.evaluate("() => document.documentElement.scrollWidth") <= 375
    box = pg.locator("#line-pad").bounding_box()
    assert 300 <= box["width"] <= 375 and box["height"] >= 80
    pg.touchscreen.tap(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    playwright_api.expect(pg.locator("body")).to_have_attribute("data-state", "done", timeout=10_000)
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
