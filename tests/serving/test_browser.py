"""The web page in a real headless browser: `python -m serving` started as the operator starts it,
Playwright driving Debian's Chromium (make setup installs it; Playwright's own browser download is
not used), a sample photo chosen in the page, the answer read on the page, a screenshot kept."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.config import PROJECT_ROOT
from tests.conftest import load_script

SCREENSHOT = PROJECT_ROOT / "work" / "serving" / "screenshot.png"
# Headless Chromium without the network features it would use in the background (as
# tests/quality/test_data_docs_browser.py); Playwright adds --headless itself.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-proxy-server",
]
START_TIMEOUT_S = 240

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's Chromium, found as `make deck` finds it; `make setup` installs it, so its absence fails."""
    try:
        return load_script("render_deck").find_chromium(None)
    except FileNotFoundError as exc:
        pytest.fail(f"{exc} (make setup installs it: the browser test must run)")


@pytest.fixture(scope="module")
def service_url(served_lake, weights_seed, tmp_path_factory):
    """`python -m serving --port 0` on the served lake, in its own process; its URL once it listens."""
    logs = tmp_path_factory.mktemp("service")
    command = [
        sys.executable, "-m", "serving", "--conf", "conf/local.yaml",
        "--set", f"lake.root={served_lake.conf.path('lake.root')}", "--set", f"silver.model_seed_dir={weights_seed}",
        "--host", "127.0.0.1", "--port", "0",
    ]
    with open(logs / "out.log", "wb") as out, open(logs / "err.log", "wb") as err:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=out, stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            found = re.search(r"listening on (http://127\.0\.0\.1:\d+/)", (logs / "out.log").read_text())
            if found:
                break
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the service did not start (exit {process.poll()}): {(logs / 'err.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield found.group(1)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_photo_chosen_in_the_page_shows_its_fruit_cards_and_similar_images(served_lake, chromium, service_url):
    from playwright.sync_api import sync_playwright

    label = "Pineapple"
    photo = served_lake.test_photos[label]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(service_url)
            page.wait_for_function("() => document.getElementById('versions').textContent.includes('clf-1')")
            page.set_input_files("#photo", str(photo))
            page.wait_for_selector('#status[data-state="done"]', timeout=120_000)

            shown = page.locator("#fruits li.fruit").evaluate_all("items => items.map(item => item.dataset.label)")
            assert len(shown) == 3 and label in shown
            text = page.inner_text("#answer")
            assert "Ananas" in text and "Pineapple" in text and "Bromeliaceae" in text  # the card, French and English
            assert page.inner_text("#status").startswith("C'est sans doute")
            page.wait_for_function(
                "() => { const images = [...document.querySelectorAll('#similar img')];"
                " return images.length === 5 && images.every(image => image.complete && image.naturalWidth > 0); }",
                timeout=60_000,
            )
            neighbours = page.locator("#similar li").evaluate_all("items => items.map(item => item.dataset.label)")
            assert neighbours[0] == label
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)

            page.set_input_files("#photo", files=[{"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"no image here"}])
            page.wait_for_selector('#status[data-state="error"]', timeout=60_000)
            assert "not_an_image" in page.inner_text("#status")
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
