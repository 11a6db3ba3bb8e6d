"""The web page in a real headless Chromium (Debian's `chromium`, driven by Playwright): upload, drag-free
keyboard use, URL input, the Grad-CAM toggle, the error of a junk file, the similar-products grid; a
screenshot for the README (with the explanation shown).

Skips, saying why, when there is no Chromium or no Playwright. ``VESTIS_SCREENSHOT_DIR=docs`` writes the
README's screenshot (docs/serve-page.png); otherwise it goes to the test's temporary folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import CLOTHING
from tests.serve.conftest import image_server, live_server, png_bytes
from tests.serve.test_app import FakeIndex
from vestis.serve import ServeOptions, create_app

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
SAMPLE = CLOTHING / "test" / "shirt" / "0e99edde-0ed8-4c8c-a405-0517c1b801a4.jpg"


def _chromium() -> str:
    for name in (os.environ.get("VESTIS_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and (path := shutil.which(name)):
            return path
    pytest.skip("no Chromium found (Debian: apt-get install chromium; or set VESTIS_CHROMIUM)")


@pytest.fixture(scope="module")
def browser():
    exe = _chromium()
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def default_model():
    import vestis

    return vestis.load(runtime="torch", device="cpu", precision="fp32")


def _page(browser):
    page = browser.new_page(viewport={"width": 1100, "height": 720}, device_scale_factor=1)
    page.set_default_timeout(30_000)
    return page


def test_upload_shows_predictions_and_a_junk_file_shows_an_error(browser, default_model, tmp_path):
    if SAMPLE.exists():
        photo = SAMPLE
    else:
        photo = tmp_path / "photo.png"
        photo.write_bytes(png_bytes((200, 190, 180), size=(300, 400)))
    junk = tmp_path / "notes.txt"
    junk.write_text("this is not a photo")
    expected = default_model.predict_images([photo.read_bytes()])[0]["predictions"]["label"]

    with live_server(create_app(default_model)) as (_, base):
        page = _page(browser)
        page.goto(base + "/")
        page.wait_for_function(
            "document.getElementById('model').textContent.includes('tf_efficientnet_lite0')"
        )
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("#predictions .row.top")
        labels = page.locator("#predictions .row .label").all_inner_texts()
        scores = page.locator("#predictions .row .score").all_inner_texts()
        assert labels == [p["label"] for p in expected]
        assert scores[0] == f"{expected[0]['score'] * 100:.1f}%"
        width = page.locator("#predictions .row.top .bar span").evaluate("e => e.style.width")
        # the bar's width is the score to 0.1 % (CSS writes 88.0% back as 88%)
        assert width.endswith("%") and float(width[:-1]) == float(f"{expected[0]['score'] * 100:.1f}")
        assert page.locator("#preview").is_visible() and not page.locator("#error").is_visible()
        original = page.locator("#preview").get_attribute("src")
        assert original.startswith("blob:")
        # the explain toggle, by keyboard: the preview shows the Grad-CAM overlay of the top class, and back
        page.focus("#explain")
        page.keyboard.press(" ")
        page.wait_for_function("document.getElementById('preview').src.startsWith('data:image/jpeg')")
        page.wait_for_function("document.getElementById('preview').naturalWidth > 0")
        note = page.locator("#explain-note").inner_text()
        assert f"= {expected[0]['label']} (" in note and not page.locator("#error").is_visible()
        shots = Path(os.environ.get("VESTIS_SCREENSHOT_DIR") or tmp_path)
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "serve-page.png"))
        page.keyboard.press(" ")
        assert page.locator("#preview").get_attribute("src") == original
        assert page.locator("#explain-note").inner_text() == ""

        page.set_input_files("#file", str(junk))
        page.wait_for_selector("#error", state="visible")
        assert "not an image" in page.locator("#error").inner_text()
        assert page.locator("#predictions .row").count() == 0
        assert "{" not in page.locator("#error").inner_text()  # a message, not raw JSON
        page.close()


def test_keyboard_url_input_and_similar_products(browser, tiny_model, tiny_run):
    paths = sorted((tiny_run[1] / "test").rglob("*.png"))
    opts = ServeOptions(allow_private_urls=True)
    img = png_bytes((30, 40, 220))
    with (
        image_server({"/blue.png": (200, {"Content-Type": "image/png"}, img, 0)}) as images,
        live_server(create_app(tiny_model, index=FakeIndex(paths), options=opts)) as (_, base),
    ):
        page = _page(browser)
        page.goto(base + "/")
        page.wait_for_function("document.getElementById('model').textContent.includes('test_tiny')")
        # keyboard: Tab reaches the drop zone; Enter and Space open the file picker (the picker's own event is
        # flaky in headless Chromium, so the click it receives is counted instead)
        page.evaluate(
            "window.picks = 0; document.getElementById('file').addEventListener('click', () => picks++)"
        )
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "drop"
        page.keyboard.press("Enter")
        page.keyboard.press(" ")
        assert page.evaluate("window.picks") == 2
        page.set_input_files("#file", str(paths[0]))
        page.wait_for_selector("#similar-grid .item")
        assert page.locator("#similar-grid .item").count() == min(12, len(paths))
        page.wait_for_function(
            "[...document.querySelectorAll('#similar-grid img')].every(i => i.complete && i.naturalWidth > 0)"
        )
        assert "colour: " in page.locator("#similar-grid .item .meta").first.inner_text()
        # a pasted URL, submitted with Enter
        page.fill("#url", f"{images}/blue.png")
        page.press("#url", "Enter")
        page.wait_for_function(
            "document.querySelector('#predictions .row.top .label')?.textContent === 'blue'"
        )
        # a refused URL: the message is shown in the page
        page.fill("#url", "ftp://example.com/x.png")
        page.press("#url", "Enter")
        page.wait_for_selector("#error", state="visible")
        assert "http" in page.locator("#error").inner_text()
        page.close()
