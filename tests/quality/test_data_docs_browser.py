"""The Data Docs a QA reviewer opens: rendered by headless Chromium (the pages build their tables
with JavaScript), offline, from the gated lake of conftest.py."""

from __future__ import annotations

import html
import re
import subprocess
from pathlib import Path

import pytest

from quality import gates
from tests.conftest import load_script

# ~50 s (a gated lake, then Chromium twice): in make test-long; the pages' content is checked
# without a browser in make test (tests/quality/test_docs.py, test_gates.py).
pytestmark = [pytest.mark.spark, pytest.mark.long]


@pytest.fixture(scope="module")
def chromium() -> str:
    """The browser, found as `make deck` finds it (scripts/render_deck.py: chromium, chromium-browser,
    google-chrome...); skipped where none is installed (a skip the CI skip guard fails)."""
    try:
        return load_script("render_deck").find_chromium(None)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def rendered_dom(chromium: str, page: Path, profile: Path) -> str:
    """The DOM after the page's scripts ran (`--dump-dom`), with the network features Chromium
    would otherwise use in the background turned off."""
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--dump-dom", page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def visible_text(dom: str) -> str:
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", text)))


def table_rows(dom: str) -> list[str]:
    """Rows bootstrap-table rendered from the index's data (they carry data-index)."""
    return re.findall(r"<tr[^>]*data-index[^>]*>.*?</tr>", dom, flags=re.S)


def test_index_shows_the_suites_and_the_failed_validation(spark, gated_lake, chromium, tmp_path):
    index = Path(gates.docs_index_location(spark, gated_lake.conf))
    dom = rendered_dom(chromium, index, tmp_path / "profile")
    text = visible_text(dom)

    for suite in ("bronze_rows", "bronze_totals", "silver_rows", "silver_totals", "gold_rows", "gold_totals"):
        assert suite in text
    assert "silver-bad-run" in text
    failed = [row for row in table_rows(dom) if "silver-bad-run" in row and "silver_rows" in row]
    assert len(failed) == 1 and "ge-failed-icon" in failed[0]
    passed = [row for row in table_rows(dom) if "bronze-run" in row and "bronze_rows" in row]
    assert len(passed) == 1 and "ge-success-icon" in passed[0]


def test_the_failed_validation_page_shows_the_failed_expectations(spark, gated_lake, chromium, tmp_path):
    index = Path(gates.docs_index_location(spark, gated_lake.conf))
    rows = table_rows(rendered_dom(chromium, index, tmp_path / "profile"))
    failed = next(row for row in rows if "silver-bad-run" in row and "silver_rows" in row)
    link = next(h for h in re.findall(r'href="([^"]+)"', failed) if h.startswith("validations/"))

    page = index.parent / html.unescape(link)
    text = visible_text(rendered_dom(chromium, page, tmp_path / "profile"))

    assert "Expectation Suite: silver_rows" in text
    assert "Status: Failed" in text
    assert "features_length" in text and "features_invalid_values" in text
    assert "unexpected values found" in text
    assert "silver-bad-run" in text
