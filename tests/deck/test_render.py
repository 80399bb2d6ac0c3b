"""`make deck`: the real deck rendered and every page looked at; the failures it must report.

The render reads sample images from the conf's input folder and the rehearsal's screenshots from
docs/deck/screenshots/. So that it runs the same on a fresh clone (no lake, no rehearsal yet), the
test gives it a small input folder of generated images and, for any screenshot not committed yet,
a generated stand-in in a temporary folder (never under docs/). The run's plots are committed with
the figures (docs/deck/plots/, scripts/deck_figures.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from pipelines.config import PROJECT_ROOT
from tests.conftest import load_script

DECK = PROJECT_ROOT / "docs" / "deck" / "deck.md"
SCREENSHOTS = PROJECT_ROOT / "docs" / "deck" / "screenshots"
CHECK_PAGES = """() => [...document.querySelectorAll('section.slide')].map(s => ({
  id: s.id, images: s.querySelectorAll('img').length,
  unloaded: [...s.querySelectorAll('img')].filter(i => !i.complete || i.naturalWidth === 0).length,
  overflow: s.scrollHeight - s.clientHeight, text: s.innerText.length}))"""


def render(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/render_deck.py", *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def picture(path: Path, colour: tuple[int, int, int], size=(100, 100)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """An input folder with one image per fruit the deck shows, and the screenshots (stand-ins where missing)."""
    root = tmp_path_factory.mktemp("deck-inputs")
    labels = re.findall(r"\{\{fruits:([^}]+)\}\}", DECK.read_text(encoding="utf-8"))
    for i, label in enumerate(label.strip() for group in labels for label in group.split(",")):
        picture(root / "input" / "Training" / label / "0_100.jpg", (40 * i % 255, 120, 200))
    shots = root / "screenshots"
    shots.mkdir()
    for name in set(re.findall(r"screenshots/([\w.-]+\.png)", DECK.read_text(encoding="utf-8"))):
        committed = SCREENSHOTS / name
        if committed.is_file():
            shutil.copyfile(committed, shots / name)
        else:
            picture(shots / name, (90, 140, 200), (1600, 900))
    return {"input": root / "input", "screenshots": shots, "root": root}


def conf_args(inputs: dict) -> list[str]:
    return ["--conf", "conf/local.yaml", "--set", f"input.path={inputs['input']}",
            "--set", f"input.seed_path={inputs['root'] / 'none'}", "--screenshots", str(inputs["screenshots"])]


def test_the_deck_renders_every_slide_on_its_page_with_its_pictures_and_notes(inputs, tmp_path):
    render_deck = load_script("render_deck")
    out = tmp_path / "deck"
    done = render("--source", str(DECK), "--out-dir", str(out), *conf_args(inputs))
    assert done.returncode == 0, done.stderr
    slides = render_deck.deck_source.parse(DECK.read_text(encoding="utf-8"))
    assert len(slides) >= 20
    assert render_deck.pdf_page_count((out / "deck.pdf").read_bytes()) == len(slides)
    assert render_deck.pdf_page_count((out / "notes.pdf").read_bytes()) == len(slides)
    assert "{{" not in (out / "deck.html").read_text(encoding="utf-8")
    assert (out / "architecture.svg").read_text(encoding="utf-8").lstrip().startswith("<?xml")

    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=render_deck.find_chromium(None), headless=True,
                                             args=load_script("deck_pages").CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.emulate_media(media="print")
            page.goto((out / "deck.html").as_uri(), wait_until="load")
            pages = page.evaluate(CHECK_PAGES)
            notes = browser.new_page()
            notes.goto((out / "notes.html").as_uri(), wait_until="load")
            notes_hidden = notes.evaluate("[...document.querySelectorAll('.spoken')].map(n => n.innerText.length)")
        finally:
            browser.close()
    assert len(pages) == len(slides)
    for p in pages:
        assert p["unloaded"] == 0 and p["overflow"] <= 1 and p["text"] > 10, p
    assert sum(p["images"] for p in pages) >= 20  # diagram, 8 fruits, 3 plots, 9 screenshots
    assert all(length > 40 for length in notes_hidden), "every slide has speaker notes"
    projected = (out / "deck.html").read_text(encoding="utf-8")
    assert '<article class="notes-page"' not in projected and slides[0].notes.split(".")[0] not in projected, (
        "the notes are not on the projected slides")


def write_deck(path: Path, *slides: str) -> Path:
    path.write_text("\n---\n".join(slides), encoding="utf-8")
    return path


BUDGET = ["??? 1 3", "??? 2 6", "??? 3 6", "??? 4 2", "??? 5 3"]


def minimal(first_body: str) -> list[str]:
    return [f"## Première\n\n{first_body}\n\n{BUDGET[0]}\nnotes", *(f"## Partie\n\n{b}\nnotes" for b in BUDGET[1:])]


def test_a_slide_that_overflows_its_page_fails_the_render_naming_it(inputs, tmp_path):
    source = write_deck(tmp_path / "deck.md", *minimal("\n".join(f"- ligne {i}" for i in range(40))))
    done = render("--source", str(source), "--out-dir", str(tmp_path / "out"), *conf_args(inputs))
    assert done.returncode == 1
    assert re.search(r"^render_deck: slide 1 \(Première\): overflows its 16:9 page by \d+ px", done.stderr, re.M), done.stderr
    assert "Traceback" not in done.stderr


def test_speaker_notes_too_long_for_their_page_fail_the_render_naming_the_slide(inputs, tmp_path):
    slides = minimal("x")
    slides[2] = slides[2].replace("notes", "Une phrase des notes. " * 400)
    done = render("--source", str(write_deck(tmp_path / "deck.md", *slides)), "--out-dir", str(tmp_path / "out"), *conf_args(inputs))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "render_deck: slide 3 (Partie): its speaker notes do not fit their A4 page (notes.pdf): shorten them"
    ]


def test_a_missing_image_fails_the_render_naming_the_slide(inputs, tmp_path):
    source = write_deck(tmp_path / "deck.md", *minimal("![capture](screenshots/absent.png)"))
    done = render("--source", str(source), "--out-dir", str(tmp_path / "out"), *conf_args(inputs))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"render_deck: slide 1 (Première): image screenshots/absent.png missing (expected {inputs['screenshots'] / 'absent.png'})"
    ]


def test_parts_must_fill_their_minute_budget_and_figures_must_exist():
    source = load_script("deck_source")
    slides = source.parse("\n---\n".join(minimal("x")))
    assert [s.start_minute for s in slides] == [0, 3, 9, 15, 17]
    with pytest.raises(source.DeckError, match=r"part 2 \(Environnement big data : S3 et EMR\): its slides take 5 min"):
        source.parse("\n---\n".join(minimal("x")).replace("??? 2 6", "??? 2 5"))
    with pytest.raises(source.DeckError, match=r"slide 1 \(Première\): no speaker notes"):
        source.parse("## Première\n\nsans notes")
    slide = slides[0]
    with pytest.raises(source.DeckError, match=r"slide 1 \(Première\): \{\{run.gold.nothing\}\}"):
        source.substitute(slide, "{{run.gold.nothing}}", {"run": {"gold": {}}}, PROJECT_ROOT, None)
    with pytest.raises(source.DeckError, match=r"code:pipelines/gold.py\|no such line\|2"):
        source.substitute(slide, "{{code:pipelines/gold.py|no such line|2}}", {}, PROJECT_ROOT, None)


def test_code_excerpts_are_the_real_lines_wrapped_to_fit():
    source = load_script("deck_source")
    excerpt = source.code_excerpt(PROJECT_ROOT, "pipelines/silver.py|broadcast_payload = spark.sparkContext.broadcast|2")
    lines = excerpt.splitlines()[1:-1]
    assert lines[0] == "broadcast_payload = spark.sparkContext.broadcast(loaded.payload)"
    assert all(len(line) <= source.CODE_COLUMNS for line in lines)
    real = (PROJECT_ROOT / "pipelines" / "silver.py").read_text(encoding="utf-8")
    assert re.sub(r"\s+", " ", " ".join(lines)) in re.sub(r"\s+", " ", real)
    assert source.french_number(6270) == "6\u202f270" and source.format_figure(0.9501, "fr") == "0,9501"
