"""Render the presentation deck (Markdown) to HTML and PDF, with its notes, for `make deck`.

    python scripts/render_deck.py --source docs/deck/deck.md --out-dir work/deck [--conf conf/local.yaml]

Writes, in the output folder: deck.html and deck.pdf (one 16:9 page per slide, what is projected),
notes.html and notes.pdf (one A4 page per slide: the slide, its part, its minutes and the elapsed
time, the speaker notes), and the pictures they show:
- architecture.svg, rendered by Graphviz `dot` from docs/deck/architecture.dot (never hand-drawn);
- plots/: the run's PCA and classifier plots, committed with the figures they go with
  (scripts/deck_figures.py regenerates both from one run);
- screenshots/: the rehearsal's screenshots (docs/deck/screenshots/, or --screenshots);
- fruits/: sample images copied from the conf's input folder (`input.path`, else
  `input.seed_path`), never committed (Fruits-360 is CC BY-SA: the slide credits it).
Figures come from docs/deck/figures.yaml (`{{name}}`, scripts/deck_source.py). The render fails,
exit 1 with one line naming the slide, when a picture is missing or does not load, a slide overflows
its page, code is under 13 pt, or the PDF has not one page per slide; exit 2 for a source to fix.
Chromium (Debian's, driven by Playwright) runs with a throwaway profile and no network service.
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import subprocess
import sys
from pathlib import Path

import markdown
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from scripts import deck_source  # noqa: E402
from scripts.deck_source import DeckError, split_slides  # noqa: E402,F401  (split_slides: used by tests)

MARKDOWN_EXTENSIONS = ["tables", "fenced_code", "sane_lists", "attr_list", "md_in_html"]
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DECK_DIR = PROJECT_ROOT / "docs" / "deck"
IMAGE_SRC = re.compile(r'<img [^>]*src="([^"]+)"')
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
STYLE = (Path(__file__).resolve().parent / "deck.css")


def find_chromium(explicit: str | None) -> str:
    if explicit:
        if shutil.which(explicit) is None:
            raise FileNotFoundError(f"--chromium {explicit!r} is not an executable")
        return shutil.which(explicit)
    for name in CHROMIUM_NAMES:
        if shutil.which(name):
            return shutil.which(name)
    raise FileNotFoundError(
        "no Chromium found (looked for " + ", ".join(CHROMIUM_NAMES) + "): install it "
        "(Debian: `apt-get install -y chromium`, which `make setup` does) or pass --chromium PATH"
    )


def pdf_page_count(pdf: bytes) -> int:
    """Pages of a PDF as Chromium writes it (one `/Type /Page` object per page, uncompressed)."""
    return len(re.findall(rb"/Type\s*/Page(?![s\w])", pdf))


def render_diagram(source: Path, target: Path) -> None:
    dot = shutil.which("dot")
    if dot is None:
        raise DeckError("Graphviz `dot` not found: `make setup` installs it (Debian package graphviz)")
    done = subprocess.run([dot, "-Tsvg", str(source), "-o", str(target)], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise DeckError(f"{source}: dot failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")


def input_folder(conf_files: list[str], overrides: list[str]) -> Path:
    """The sample's folder: conf `input.path`, else `input.seed_path` (what scripts/fetch_dataset.py links)."""
    from pipelines.config import load_conf

    conf = load_conf(conf_files, overrides)
    tried = []
    for key in ("input.path", "input.seed_path"):
        folder = Path(conf.path(key))
        if folder.is_dir():
            return folder
        tried.append(f"{key}={folder}")
    raise DeckError(f"no input folder ({', '.join(tried)}): run `make test-data` or set FRUITS_INPUT")


class FruitPictures:
    """`{{fruits:...}}`: copies one Training image per label into out_dir/fruits/ and lays them out."""

    def __init__(self, folder_of, out_dir: Path):
        self.folder_of, self.out_dir = folder_of, out_dir

    def __call__(self, labels: list[str]) -> str:
        folder = self.folder_of()
        (self.out_dir / "fruits").mkdir(exist_ok=True)
        cells = []
        for label in labels:
            found = sorted(p for p in (folder / "Training" / label).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise KeyError(f"no Training image of {label!r} in {folder}")
            target = self.out_dir / "fruits" / f"{label.replace(' ', '_')}{found[0].suffix.lower()}"
            shutil.copyfile(found[0], target)
            cells.append(f'<figure><img src="fruits/{target.name}" alt="{html.escape(label)}">'
                         f"<figcaption>{html.escape(label)}</figcaption></figure>")
        return '<div class="fruits">' + "".join(cells) + "</div>"


def slide_html(slide: deck_source.Slide, body_md: str, total: int) -> str:
    body = markdown.markdown(body_md, extensions=MARKDOWN_EXTENSIONS, output_format="html")
    return (f'<section class="slide" id="slide-{slide.number}">\n{body}\n'
            f'<div class="number">{slide.number} / {total}</div>\n</section>')


def timing_line(slide: deck_source.Slide) -> str:
    if slide.part is None:
        return "Annexe : questions probables (hors des 20 minutes)"
    name, budget = deck_source.PARTS[slide.part]
    return (f"Partie {slide.part} : {name} ({budget:g} min) · cette diapositive "
            f"{deck_source.french_number(slide.minutes, 1)} min · temps écoulé {deck_source.clock(slide.start_minute)} "
            f"→ {deck_source.clock(slide.start_minute + slide.minutes)} (sur 20:00)")


def page(title: str, body: str, css: str, kind: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="fr">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{css}</style>\n</head>\n<body class=\"{kind}\">\n{body}\n</body>\n</html>\n")


def build(source: Path, out_dir: Path, figures_file: Path, screenshots: Path, folder_of) -> tuple[list, Path, Path]:
    """Write deck.html, notes.html and their pictures; returns the slides and the two HTML files."""
    slides = deck_source.parse(source.read_text(encoding="utf-8"))
    figures = yaml.safe_load(figures_file.read_text(encoding="utf-8"))
    for sub in ("plots", "screenshots", "fruits"):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    render_diagram(DECK_DIR / "architecture.dot", out_dir / "architecture.svg")
    shutil.copytree(DECK_DIR / "plots", out_dir / "plots")
    if screenshots.is_dir():
        shutil.copytree(screenshots, out_dir / "screenshots")
    fruits = FruitPictures(folder_of, out_dir)
    sections, notes = [], []
    for slide in slides:
        body = deck_source.substitute(slide, slide.markdown, figures, PROJECT_ROOT, fruits)
        for src in IMAGE_SRC.findall(markdown.markdown(body, extensions=MARKDOWN_EXTENSIONS)):
            if not (out_dir / src).is_file():
                origin = screenshots / Path(src).name if src.startswith("screenshots/") else DECK_DIR / src
                raise DeckError(f"slide {slide.number} ({slide.title}): image {src} missing (expected {origin})")
        section = slide_html(slide, body, len(slides))
        sections.append(section)
        spoken = markdown.markdown(deck_source.substitute(slide, slide.notes, figures, PROJECT_ROOT, fruits),
                                   extensions=MARKDOWN_EXTENSIONS)
        notes.append(f'<article class="notes-page"><p class="timing">{html.escape(timing_line(slide))}</p>'
                     f'<div class="thumb">{section}</div><div class="spoken">{spoken}</div></article>')
    css = STYLE.read_text(encoding="utf-8")
    title = slides[0].title
    deck_html, notes_html = out_dir / f"{source.stem}.html", out_dir / "notes.html"
    deck_html.write_text(page(title, "\n".join(sections), css, "deck"), encoding="utf-8")
    notes_css = css + "\n@page { size: 210mm 297mm; margin: 0; }\n"  # after the slides' @page: A4 wins
    notes_html.write_text(page(f"{title} : notes", "\n".join(notes), notes_css, "notes"), encoding="utf-8")
    return slides, deck_html, notes_html


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, type=Path, help="the deck's Markdown file")
    parser.add_argument("--out-dir", required=True, type=Path, help="folder for the HTML, PDF and pictures")
    parser.add_argument("--figures", type=Path, default=DECK_DIR / "figures.yaml", help="figures file ({{name}})")
    parser.add_argument("--screenshots", type=Path, default=DECK_DIR / "screenshots", help="the rehearsal's screenshots")
    parser.add_argument("--conf", action="append", default=[], help="conf overlay naming the input folder (repeatable)")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--chromium", default=None, help="Chromium executable (default: found on PATH)")
    parser.add_argument("--html-only", action="store_true", help="write the HTML and stop (no browser check)")
    args = parser.parse_args(argv)
    if not args.source.is_file():
        print(f"render_deck: {args.source} does not exist (pass the deck's Markdown with --source)", file=sys.stderr)
        return 2
    from pipelines.config import ConfError

    try:
        slides, deck_html, notes_html = build(args.source, args.out_dir, args.figures, args.screenshots,
                                              lambda: input_folder(args.conf, args.overrides))
    except (DeckError, ConfError, OSError) as exc:
        print(f"render_deck: {exc}", file=sys.stderr)
        return 2 if not isinstance(exc, DeckError) or "image" not in str(exc) else 1
    print(f"{deck_html}: {len(slides)} slides, notes in {notes_html.name}")
    if args.html_only:
        return 0
    from scripts import deck_pages

    deck_pdf, notes_pdf = deck_html.with_suffix(".pdf"), args.out_dir / "notes.pdf"
    try:
        reports = deck_pages.inspect_and_print(find_chromium(args.chromium), deck_html, deck_pdf, notes_html, notes_pdf)
    except Exception as exc:  # Playwright's own errors: one line, the browser's message
        print(f"render_deck: Chromium could not open or print {deck_html}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    failed = [(r, p) for r in reports for p in r.problems()]
    for report, problem in failed:
        print(f"render_deck: slide {report.slide} ({slides[report.slide - 1].title}): {problem}", file=sys.stderr)
    pages = pdf_page_count(deck_pdf.read_bytes())
    print(f"{deck_pdf}: {pages} pages, {deck_pdf.stat().st_size // 1024} KB; {notes_pdf.name}: "
          f"{pdf_page_count(notes_pdf.read_bytes())} pages")
    if pages != len(slides):
        print(f"render_deck: {pages} PDF pages for {len(slides)} slides: a slide overflows its page", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
