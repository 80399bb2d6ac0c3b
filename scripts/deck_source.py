"""The deck's Markdown as slides: speaker notes, timings, figures and code excerpts (for render_deck.py).

A slide is a block between lines holding only `---`. Inside it, a line `??? PART MINUTES` starts the
speaker notes (everything after it): PART is the number of the defence's part (PARTS) and MINUTES
the slide's share of that part's budget (`??? annexe` for the appendix, which has no budget). The
parts' shares must add up to their budgets, so the timing cannot drift when slides are added.

`{{name}}` takes a figure from docs/deck/figures.yaml (dotted path, optional `|fr`, `|usd`,
`|pct`, `|int`, `|thousands`, `|g` format), so that no figure the docs also quote is typed in the deck. Three directives build
content at render time: `{{code:FILE|ANCHOR|LINES}}` (LINES lines of the real source from the first
line containing ANCHOR), `{{table:cost.SCENARIO}}` (the cost table of a scenario) and
`{{fruits:Label,Label,...}}` (the sample's images, filled in by render_deck.py).
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

# The five timed parts of the 20-minute defence (then 5 minutes of questions).
PARTS = {
    1: ("Problème et jeu de données", 3.0),
    2: ("Environnement big data : S3 et EMR", 6.0),
    3: ("Chaîne de traitement dans le cloud", 6.0),
    4: ("Démo du script PySpark dans le cloud", 2.0),
    5: ("Synthèse et conclusion", 3.0),
}
APPENDIX = "annexe"
SLIDE_SEPARATOR = re.compile(r"^---[ \t]*$", re.MULTILINE)
HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
NOTES_LINE = re.compile(r"^\?\?\?[ \t]*(.*)$", re.MULTILINE)
PLACEHOLDER = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
# Code lines longer than this are wrapped at a ", " (13 pt monospace on the slide's width).
CODE_COLUMNS = 80
COST_COLUMNS = {"on_demand": "EC2 à la demande", "spot": "EC2, tâches spot", "serverless": "Serverless"}


class DeckError(ValueError):
    """A problem in the deck's source, named with its slide."""


@dataclass
class Slide:
    number: int
    markdown: str
    notes: str
    part: int | None  # None: appendix
    minutes: float
    start_minute: float = 0.0
    title: str = field(default="")


def split_slides(source: str) -> list[str]:
    """The slides' Markdown, in order: blocks between `---` lines, author comments removed, empty blocks dropped."""
    blocks = SLIDE_SEPARATOR.split(HTML_COMMENT.sub("", source))
    return [block.strip() for block in blocks if block.strip()]


def parse(source: str) -> list[Slide]:
    """Slides with their notes and timing; checks each part's minutes add up to its budget."""
    slides = []
    for number, block in enumerate(split_slides(source), start=1):
        found = NOTES_LINE.search(block)
        if not found:
            raise DeckError(f"slide {number} ({_title(block)}): no speaker notes (a line `??? PART MINUTES`)")
        body, notes = block[: found.start()].strip(), block[found.end():].strip()
        head = found.group(1).split()
        if head == [APPENDIX]:
            part, minutes = None, 0.0
        else:
            try:
                part, minutes = int(head[0]), float(head[1].replace(",", "."))
            except (IndexError, ValueError):
                raise DeckError(f"slide {number} ({_title(block)}): notes line must be `??? PART MINUTES` or `??? annexe`") from None
            if part not in PARTS:
                raise DeckError(f"slide {number} ({_title(block)}): part {part} is not one of {sorted(PARTS)}")
        slides.append(Slide(number, body, notes, part, minutes, title=_title(body)))
    _check_timing(slides)
    return slides


def _title(markdown: str) -> str:
    heading = re.search(r"^#{1,2}\s+(.+)$", markdown, re.MULTILINE)
    return heading.group(1).strip() if heading else "sans titre"


def _check_timing(slides: list[Slide]) -> None:
    elapsed, last_part = 0.0, 0
    for slide in slides:
        if slide.part is None:
            continue
        if slide.part < last_part:
            raise DeckError(f"slide {slide.number} ({slide.title}): part {slide.part} after part {last_part}")
        last_part = slide.part
        slide.start_minute = elapsed
        elapsed += slide.minutes
    for part, (name, budget) in PARTS.items():
        spent = sum(s.minutes for s in slides if s.part == part)
        if abs(spent - budget) > 1e-9:
            raise DeckError(f"part {part} ({name}): its slides take {spent:g} min, its budget is {budget:g} min")


def clock(minutes: float) -> str:
    whole = int(round(minutes * 60))
    return f"{whole // 60}:{whole % 60:02d}"


def french_number(value: float | int, decimals: int | None = None) -> str:
    """1234567.5 -> '1 234 567,5' (narrow no-break space between thousands, decimal comma)."""
    text = f"{value:,.{decimals}f}" if decimals is not None else f"{value:,}"
    return text.replace(",", "\u202f").replace(".", ",")


def lookup(figures: dict, path: str):
    node = figures
    for key in path.split("."):
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, dict) and key.isdigit() and int(key) in node:
            node = node[int(key)]
        else:
            raise KeyError(path)
    return node


def format_figure(value, style: str | None) -> str:
    if style is None:
        return str(value)
    if style == "fr":
        return french_number(value) if isinstance(value, int) else french_number(value, len(str(value).split(".")[-1]) if "." in str(value) else 0)
    if style == "usd":
        return f"{french_number(value, 2)} $"
    if style == "pct":
        return f"{french_number(value * 100, 2)} %"
    if style == "int":
        return french_number(int(round(value)))
    if style == "thousands":
        return french_number(int(round(value, -3)))
    if style == "g":
        return f"{value:g}".replace(".", ",")
    raise KeyError(f"|{style}")


def cost_table(scenario: dict) -> str:
    """The cost rows of one scenario of figures.yaml as a French Markdown table."""
    columns = [c for c in COST_COLUMNS if c in next(iter(scenario["rows"].values()))]
    lines = ["| images | " + " | ".join(COST_COLUMNS[c] for c in columns) + " |", "|---:|" + "---:|" * len(columns)]
    for images, row in scenario["rows"].items():
        cheapest = min(row[c]["usd"] for c in columns)
        cells = []
        for c in columns:
            cell = f"{format_figure(row[c]['usd'], 'usd')} ({french_number(row[c]['minutes'])} min)"
            cells.append(f"**{cell}**" if row[c]["usd"] == cheapest else cell)
        lines.append(f"| {french_number(int(images))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def code_excerpt(root: Path, spec: str) -> str:
    """`FILE|ANCHOR|LINES`: LINES lines of FILE from the first line containing ANCHOR, dedented, long lines wrapped."""
    try:
        file, anchor, count = spec.split("|")
        lines = (root / file).read_text(encoding="utf-8").splitlines()
        start = next(i for i, line in enumerate(lines) if anchor in line)
    except (ValueError, OSError, StopIteration):
        raise KeyError(f"code:{spec} (a FILE|ANCHOR|LINES whose ANCHOR is in FILE)") from None
    excerpt = textwrap.dedent("\n".join(lines[start:start + int(count)])).splitlines()
    suffix = Path(file).suffix.lstrip(".") or "text"
    return f"```{'python' if suffix == 'py' else suffix}\n" + "\n".join(w for line in excerpt for w in wrap_code(line)) + "\n```"


def wrap_code(line: str) -> list[str]:
    """A line over CODE_COLUMNS broken after its last ', ' that fits, continued 4 spaces deeper."""
    out, indent = [], len(line) - len(line.lstrip()) + 4
    while len(line) > CODE_COLUMNS and (cut := line.rfind(", ", 0, CODE_COLUMNS)) > indent:
        out.append(line[: cut + 1])
        line = " " * indent + line[cut + 2:]
    return [*out, line]


def substitute(slide: Slide, text: str, figures: dict, root: Path, fruits) -> str:
    """`text` (the slide's Markdown or notes) with every `{{...}}` replaced; an unknown figure names the slide."""
    def replace(match: re.Match) -> str:
        expression = match.group(1)
        try:
            if expression.startswith("code:"):
                return code_excerpt(root, expression[5:])
            if expression.startswith("table:"):
                return cost_table(lookup(figures, expression[6:]))
            if expression.startswith("fruits:"):
                return fruits([label.strip() for label in expression[7:].split(",")])
            path, _, style = expression.partition("|")
            return format_figure(lookup(figures, path.strip()), style.strip() or None)
        except KeyError as exc:
            raise DeckError(f"slide {slide.number} ({slide.title}): {{{{{expression}}}}}: {exc.args[0]} not found "
                            "(docs/deck/figures.yaml, scripts/deck_figures.py)") from None
    return PLACEHOLDER.sub(replace, text)
