"""Render the presentation deck (Markdown) to one HTML file and to PDF, for `make deck`.

    python scripts/render_deck.py --source docs/deck/deck.md --out-dir work/deck

Slides are the blocks of the Markdown file separated by a line holding only `---`. Each becomes a
16:9 page: the HTML shows them one under the other on screen and prints one per page, and headless
Chromium prints that HTML to PDF (`--print-to-pdf`), so the PDF is exactly the HTML. Everything is
local: no network, no JavaScript, fonts from the system. Chromium runs with a throwaway profile
and its background services off, so it neither reads nor writes anything of the user's.
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import markdown

SLIDE_SEPARATOR = re.compile(r"^---[ \t]*$", re.MULTILINE)
HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
MARKDOWN_EXTENSIONS = ["tables", "fenced_code", "sane_lists", "attr_list"]
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-pdf-header-footer",
]
PDF_TIMEOUT_SECONDS = 180

# 16:9 pages of 254 x 142.875 mm (10 x 5.625 in, the size of a widescreen slide).
STYLE = """
@page { size: 254mm 142.875mm; margin: 0; }
* { box-sizing: border-box; }
html { background: #d9dde3; }
body { margin: 0; font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; color: #1d2733; }
.slide {
  width: 254mm; min-height: 142.875mm; margin: 8mm auto; padding: 10mm 14mm 9mm;
  background: #fff; position: relative; font-size: 14pt; line-height: 1.35;
  box-shadow: 0 1mm 4mm rgba(0, 0, 0, .18); border-top: 3mm solid #2e7d32;
}
.slide h1 { font-size: 34pt; margin: 18mm 0 4mm; color: #2e7d32; }
.slide h2 { font-size: 23pt; margin: 0 0 4mm; color: #2e7d32; }
.slide h1 + h2 { font-size: 19pt; color: #1d2733; font-weight: normal; }
.slide p, .slide li { margin: 1.2mm 0; }
.slide ul, .slide ol { padding-left: 6mm; margin: 1mm 0; }
.slide table { border-collapse: collapse; margin: 2mm 0; font-size: 12pt; }
.slide th, .slide td { border: .25mm solid #c5ccd4; padding: 1mm 2.5mm; text-align: left; vertical-align: top; }
.slide th { background: #eef3ee; }
.slide code { font-family: "DejaVu Sans Mono", "Liberation Mono", monospace; font-size: 90%; background: #f1f3f5; padding: 0 .6mm; }
.slide pre { background: #f6f8fa; border: .25mm solid #d0d7de; padding: 2mm 3mm; font-size: 9.5pt; line-height: 1.3; white-space: pre-wrap; }
.slide pre code { background: none; padding: 0; font-size: 100%; }
.slide pre.diagram { font-family: "DejaVu Sans Mono", "Liberation Mono", monospace; font-size: 10.5pt; }
.slide .note { color: #5b6673; font-size: 11pt; }
.slide .number { position: absolute; right: 8mm; bottom: 4mm; color: #8a94a0; font-size: 8pt; }
@media print {
  html { background: none; }
  .slide { margin: 0; box-shadow: none; page-break-after: always; break-after: page; }
  .slide:last-child { page-break-after: auto; break-after: auto; }
}
"""


def split_slides(source: str) -> list[str]:
    """The slides' Markdown, in order: blocks between `---` lines, author comments removed, empty blocks dropped."""
    blocks = SLIDE_SEPARATOR.split(HTML_COMMENT.sub("", source))
    return [block.strip() for block in blocks if block.strip()]


def slide_html(slide_markdown: str, number: int, total: int) -> str:
    body = markdown.markdown(slide_markdown, extensions=MARKDOWN_EXTENSIONS, output_format="html")
    return f'<section class="slide" id="slide-{number}">\n{body}\n<div class="number">{number} / {total}</div>\n</section>'


def deck_html(slides: list[str], title: str) -> str:
    sections = "\n".join(slide_html(text, i, len(slides)) for i, text in enumerate(slides, start=1))
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="fr">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{STYLE}</style>\n</head>\n<body>\n{sections}\n</body>\n</html>\n"
    )


def deck_title(slides: list[str], fallback: str) -> str:
    first_heading = re.search(r"^#\s+(.+)$", slides[0], re.MULTILINE) if slides else None
    return first_heading.group(1).strip() if first_heading else fallback


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


def print_to_pdf(chromium: str, html_file: Path, pdf_file: Path) -> None:
    """Headless Chromium prints the HTML file to PDF, with a throwaway profile."""
    with tempfile.TemporaryDirectory(prefix="deck-chromium-") as profile:
        command = [
            chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
            f"--print-to-pdf={pdf_file}", html_file.resolve().as_uri(),
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=PDF_TIMEOUT_SECONDS)
    if result.returncode != 0 or not pdf_file.is_file() or pdf_file.stat().st_size == 0:
        raise RuntimeError(
            f"Chromium could not print {html_file} to {pdf_file} (exit {result.returncode}):\n{result.stderr[-2000:]}"
        )


def pdf_page_count(pdf: bytes) -> int:
    """Pages of a PDF as Chromium writes it (one `/Type /Page` object per page, uncompressed)."""
    return len(re.findall(rb"/Type\s*/Page(?![s\w])", pdf))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, type=Path, help="the deck's Markdown file")
    parser.add_argument("--out-dir", required=True, type=Path, help="folder for <name>.html and <name>.pdf")
    parser.add_argument("--chromium", default=None, help="Chromium executable (default: found on PATH)")
    parser.add_argument("--html-only", action="store_true", help="write the HTML and stop")
    args = parser.parse_args(argv)
    if not args.source.is_file():
        print(f"render_deck: {args.source} does not exist (pass the deck's Markdown with --source)", file=sys.stderr)
        return 2
    slides = split_slides(args.source.read_text(encoding="utf-8"))
    if not slides:
        print(f"render_deck: {args.source} holds no slide", file=sys.stderr)
        return 2
    args.out_dir.mkdir(parents=True, exist_ok=True)
    html_file = args.out_dir / f"{args.source.stem}.html"
    html_file.write_text(deck_html(slides, deck_title(slides, args.source.stem)), encoding="utf-8")
    print(f"{html_file}: {len(slides)} slides")
    if args.html_only:
        return 0
    pdf_file = args.out_dir / f"{args.source.stem}.pdf"
    try:
        print_to_pdf(find_chromium(args.chromium), html_file, pdf_file)
    except (FileNotFoundError, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"render_deck: {exc}", file=sys.stderr)
        return 1
    pages = pdf_page_count(pdf_file.read_bytes())
    print(f"{pdf_file}: {pages} pages, {pdf_file.stat().st_size // 1024} KB")
    if pages != len(slides):
        print(f"render_deck: {pages} PDF pages for {len(slides)} slides: a slide overflows its page", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
