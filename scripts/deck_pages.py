"""Look at every rendered slide in Chromium, then print the PDFs (for render_deck.py).

Why a browser: whether a slide fits its 16:9 page, whether its pictures load and how large its
code is are only known once a browser has laid it out with the fonts of the machine. Playwright
drives Debian's Chromium (the project never downloads Playwright's own browser); the page is
printed by the same browser that measured it, so the PDF is what was checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Headless Chromium without the network features it would use in the background (as
# tests/serving/test_browser.py); Playwright adds --headless itself.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-proxy-server",
]
SLIDE_SIZE = {"width": "254mm", "height": "142.875mm"}
NOTES_SIZE = {"width": "210mm", "height": "297mm"}
MIN_CODE_PT = 13.0
# Per slide: overflow (content beyond the page, each way, in CSS px), pictures not loaded, smallest code font (pt).
MEASURE = """() => [...document.querySelectorAll('section.slide')].map(slide => {
  const box = slide.getBoundingClientRect();
  let bottom = 0, right = 0;
  for (const el of slide.querySelectorAll('*')) {
    if (el.classList.contains('number')) continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    bottom = Math.max(bottom, r.bottom - box.top);
    right = Math.max(right, r.right - box.left);
  }
  const pres = [...slide.querySelectorAll('pre')];
  // Columns and code blocks: content wider than its box spills over its neighbour or the page.
  const boxes = [...pres, ...slide.querySelectorAll('.cols > div, .cols-wide > div, .below > div, .grid4 > *, td, th')];
  return {
    id: slide.id,
    overflowY: Math.max(bottom - slide.clientHeight, slide.scrollHeight - slide.clientHeight),
    overflowX: Math.max(right - slide.clientWidth, slide.scrollWidth - slide.clientWidth,
                        ...boxes.map(b => b.scrollWidth - b.clientWidth)),
    broken: [...slide.querySelectorAll('img')].filter(i => !i.complete || i.naturalWidth === 0)
              .map(i => i.getAttribute('src')),
    images: slide.querySelectorAll('img').length,
    codePt: pres.length ? Math.min(...pres.map(p => parseFloat(getComputedStyle(p).fontSize) * 0.75)) : null,
  };
})"""


NOTES_OVERFLOW = """() => [...document.querySelectorAll('article.notes-page')].map((page, i) => [i + 1, page])
  .filter(([, page]) => page.scrollHeight > page.clientHeight + 1).map(([n]) => n)"""


@dataclass
class PageReport:
    slide: int
    overflow_y_px: float
    overflow_x_px: float
    broken_images: list[str]
    images: int
    code_pt: float | None
    notes_cut: bool = False

    def problems(self) -> list[str]:
        found = []
        if self.overflow_y_px > 1:
            found.append(f"overflows its 16:9 page by {self.overflow_y_px:.0f} px at the bottom")
        if self.overflow_x_px > 1:
            found.append(f"overflows its page, a column, a cell or a code block by {self.overflow_x_px:.0f} px on the right")
        if self.broken_images:
            found.append("image not loaded: " + ", ".join(self.broken_images))
        if self.code_pt is not None and self.code_pt < MIN_CODE_PT - 0.01:
            found.append(f"code at {self.code_pt:g} pt, under {MIN_CODE_PT:g} pt")
        if self.notes_cut:
            found.append("its speaker notes do not fit their A4 page (notes.pdf): shorten them")
        return found


def inspect_and_print(chromium: str, deck_html: Path, deck_pdf: Path, notes_html: Path, notes_pdf: Path) -> list[PageReport]:
    """Measure every slide of deck_html (print media), then print both HTML files to PDF."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.emulate_media(media="print")
            page.goto(deck_html.resolve().as_uri(), wait_until="load")
            page.evaluate("document.fonts.ready")
            reports = [
                PageReport(int(r["id"].split("-")[1]), r["overflowY"], r["overflowX"], r["broken"], r["images"], r["codePt"])
                for r in page.evaluate(MEASURE)
            ]
            page.pdf(path=str(deck_pdf), print_background=True, prefer_css_page_size=True, **SLIDE_SIZE)
            notes = browser.new_page()
            notes.emulate_media(media="print")
            notes.goto(notes_html.resolve().as_uri(), wait_until="load")
            cut = notes.evaluate(NOTES_OVERFLOW)
            for report in reports:
                report.notes_cut = report.slide in cut
            notes.pdf(path=str(notes_pdf), print_background=True, prefer_css_page_size=True, **NOTES_SIZE)
        finally:
            browser.close()
    return reports
