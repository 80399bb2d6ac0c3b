"""The web page in a real headless browser: `python -m serving` started as the operator starts it,
Playwright driving Debian's Chromium (make setup installs it; Playwright's own browser download is
not used), a sample photo chosen in the page, the answer read on the page, a screenshot kept.

Twice: on the lake of tests/serving/lakes.py (make test), and on a lake the chain itself built
with the classifier stage (make test-long: the chain costs minutes)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipelines.config import PROJECT_ROOT
from tests.conftest import load_script

SCREENSHOTS = PROJECT_ROOT / "work" / "serving"
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


@contextmanager
def running_service(lake, weights_seed: Path, logs: Path):
    """`python -m serving --port 0` on the lake, in its own process; yields its URL once it listens."""
    sets = [f"lake.root={lake.conf.path('lake.root')}", f"input.path={lake.conf.path('input.path')}",
            f"silver.model_seed_dir={weights_seed}"]
    command = [sys.executable, "-m", "serving", "--conf", "conf/local.yaml", *(a for s in sets for a in ("--set", s)),
               "--host", "127.0.0.1", "--port", "0"]
    with open(logs / "out.log", "wb") as out, open(logs / "err.log", "wb") as err:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=out, stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (found := re.search(r"listening on (http://127\.0\.0\.1:\d+/)", (logs / "out.log").read_text())):
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


def check_the_page(chromium: str, url: str, photo: Path, label: str, version: str, screenshot: Path) -> None:
    """Choose `photo` in the page: `label` among the 3 fruits shown with its card, 5 similar images
    displayed (the nearest of the same fruit), the screenshot taken; then a file that is no image."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(url)
            page.wait_for_function(f"() => document.getElementById('versions').textContent.includes({version!r})")
            page.set_input_files("#photo", str(photo))
            page.wait_for_selector('#status[data-state="done"]', timeout=120_000)

            shown = page.locator("#fruits li.fruit").evaluate_all("items => items.map(item => item.dataset.label)")
            assert len(shown) == 3 and label in shown, shown
            text = page.inner_text("#answer")
            assert "Ananas" in text and "Pineapple" in text and "Bromeliaceae" in text  # the card, French and English
            assert page.inner_text("#status").startswith("C'est sans doute")
            page.wait_for_function(
                "() => { const images = [...document.querySelectorAll('#similar img')];"
                " return images.length === 5 && images.every(image => image.complete && image.naturalWidth > 0); }",
                timeout=60_000,
            )
            neighbours = page.locator("#similar li").evaluate_all("items => items.map(item => item.dataset.label)")
            assert neighbours[0] == label, neighbours
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)

            page.set_input_files("#photo", files=[{"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"no image here"}])
            page.wait_for_selector('#status[data-state="error"]', timeout=60_000)
            assert "not_an_image" in page.inner_text("#status")
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000


def test_a_photo_chosen_in_the_page_shows_its_fruit_cards_and_similar_images(served_lake, chromium, weights_seed, tmp_path):
    with running_service(served_lake, weights_seed, tmp_path) as url:
        check_the_page(chromium, url, served_lake.test_photos["Pineapple"], "Pineapple",
                       served_lake.predictor.bundle.version, SCREENSHOTS / "screenshot.png")


@pytest.mark.long
def test_the_page_on_a_lake_the_chain_built(chain_lake, chromium, weights_seed, tmp_path):
    with running_service(chain_lake, weights_seed, tmp_path) as url:
        check_the_page(chromium, url, chain_lake.test_photos["Pineapple"], "Pineapple",
                       chain_lake.predictor.bundle.version, SCREENSHOTS / "screenshot-chain.png")
