"""One self-contained HTML report: inline CSS, images embedded as data URIs, no scripts, no
files next to it. Standard library only (polars DataFrames are accepted, not required).

    report = Report("SFT run", "tiny preset")
    report.section("Data", intro="What went in.")
    report.table(rows, caption="Sources")          # list of dicts or a polars DataFrame
    report.image(png_bytes, caption="Loss")         # PNG bytes, e.g. from tasks.plots.figure_png
    report.key_values({"kept": 812, "loss": 1.07}, caption="Totals")
    report.write(run_dir / "report.html")           # atomic: temp file + os.replace

Every piece of text is HTML-escaped. Missing values (None, NaN, a key a row lacks, no image)
show as an em dash "—"; numbers are right-aligned in tabular figures.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import math
import numbers
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

MISSING = "—"  # em dash
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NumberFormat = str | Callable[[float], str]

CSS = """
:root { color-scheme: light; --ink: #1f2328; --muted: #59636e; --line: #d1d9e0;
        --band: #f6f8fa; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff; line-height: 1.5;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
             sans-serif; }
.page { max-width: 1100px; margin: 0 auto; padding: 24px 32px 64px; }
header { border-bottom: 2px solid var(--line); margin-bottom: 16px; }
h1 { font-size: 1.9rem; margin: 0 0 4px; }
.subtitle { color: var(--muted); margin: 0 0 12px; font-size: 1.05rem; }
h2 { font-size: 1.35rem; margin: 32px 0 8px; padding-bottom: 4px;
     border-bottom: 1px solid var(--line); }
h3 { font-size: 1.1rem; margin: 20px 0 6px; }
h4 { font-size: 1rem; margin: 16px 0 4px; }
nav.toc { background: var(--band); border: 1px solid var(--line); border-radius: 6px;
          padding: 8px 20px; margin: 16px 0 24px; }
nav.toc h2 { font-size: 1rem; margin: 4px 0; border: 0; }
nav.toc ol { margin: 4px 0 8px; padding-left: 22px; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
p.intro { color: var(--muted); }
code { font: 0.9em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
       background: var(--band); padding: 1px 4px; border-radius: 4px; }
.table-wrap { overflow-x: auto; margin: 12px 0 20px; }
table { border-collapse: collapse; font-size: 0.92rem; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: 4px 0 6px; }
th, td { border: 1px solid var(--line); padding: 4px 10px; vertical-align: top; }
thead th { background: var(--band); text-align: left; }
tbody tr:nth-child(even) { background: #fbfcfd; }
th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.missing { color: var(--muted); text-align: center; }
table.kv th { text-align: left; background: var(--band); font-weight: 600; }
figure { margin: 16px 0 24px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 0.9rem; margin-top: 4px; }
.placeholder { color: var(--muted); }
@media print { nav.toc { display: none; } .page { padding: 0; } }
"""


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def is_missing(value: Any) -> bool:
    """None and NaN (float, numpy or any other real number) are missing."""
    if value is None:
        return True
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)):
        try:
            return math.isnan(value)
        except (TypeError, ValueError):
            return False
    return False


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and not is_missing(value)


def format_value(value: Any, number_format: NumberFormat = ".4g") -> str:
    """A cell's text (not yet escaped). Missing -> "—"; integers as they are; other real numbers
    through `number_format` (a format spec such as ".3f", or a function); infinities as ∞/−∞;
    booleans as true/false; dates in ISO form; lists and dicts as JSON; anything else str()."""
    if is_missing(value):
        return MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        return number_format(value) if callable(number_format) else format(value, number_format)
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _cell(tag: str, value: Any, number_format: NumberFormat, extra: str = "") -> str:
    if is_missing(value):
        return f'<{tag} class="missing"{extra}>{MISSING}</{tag}>'
    cls = ' class="num"' if _is_number(value) else ""
    return f"<{tag}{cls}{extra}>{_esc(format_value(value, number_format))}</{tag}>"


# --- a small Markdown subset: paragraphs, "#"/"##" headings, "-"/"*" and "1." lists,
# `code`, **bold**, *italic*, [text](url) with http(s), mailto, "#" or relative URLs only
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_ITALIC = re.compile(r"(?<![\*\w])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\*\w])")
_LINK = re.compile(r"\[([^\]\n]+)\]\(([^)\s]+)\)")
_SAFE_URL = re.compile(r"^(https?://|mailto:|#|/|\./|\.\./|[\w.-]+(/|$|#|\?))", re.I)
_BULLET = re.compile(r"^\s*[-*]\s+(.*)$")
_NUMBERED = re.compile(r"^\s*\d+[.)]\s+(.*)$")
_HEADING = re.compile(r"^(#{1,2})\s+(.*)$")


def _link(match: re.Match) -> str:
    text, url = match.group(1), match.group(2)  # both already escaped
    if not _SAFE_URL.match(html.unescape(url)):
        return match.group(0)
    return f'<a href="{url}">{text}</a>'


def _inline(text: str) -> str:
    parts = _CODE_SPAN.split(text)  # even indices: prose, odd: code
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f"<code>{_esc(part)}</code>")
        else:
            part = _LINK.sub(_link, _esc(part))
            part = _BOLD.sub(r"<strong>\1</strong>", part)
            out.append(_ITALIC.sub(r"<em>\1</em>", part))
    return "".join(out)


def markdown_to_html(text: str) -> str:
    """The Markdown subset above as HTML; everything else is escaped text."""
    blocks: list[str] = []
    for block in re.split(r"\n\s*\n", (text or "").strip()):
        lines = [line for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        if all(_BULLET.match(line) for line in lines):
            items = "".join(f"<li>{_inline(_BULLET.match(x).group(1))}</li>" for x in lines)
            blocks.append(f"<ul>{items}</ul>")
        elif all(_NUMBERED.match(line) for line in lines):
            items = "".join(f"<li>{_inline(_NUMBERED.match(x).group(1))}</li>" for x in lines)
            blocks.append(f"<ol>{items}</ol>")
        else:
            prose: list[str] = []
            for line in lines:
                heading = _HEADING.match(line.strip())
                if heading:
                    if prose:
                        blocks.append(f"<p>{_inline(' '.join(prose))}</p>")
                        prose = []
                    level = len(heading.group(1)) + 2  # "#" -> h3: h1 is the title, h2 sections
                    blocks.append(f"<h{level}>{_inline(heading.group(2).strip())}</h{level}>")
                else:
                    prose.append(line.strip())
            if prose:
                blocks.append(f"<p>{_inline(' '.join(prose))}</p>")
    return "\n".join(blocks)


def _slug(title: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", title.casefold()).strip("-")
    return slug[:40].strip("-") or "section"


def _rows_and_columns(rows: Any, columns: Sequence[str] | None) -> tuple[list[Mapping], list[str]]:
    if rows is not None and hasattr(rows, "iter_rows") and hasattr(rows, "columns"):  # polars
        names = list(rows.columns)
        return list(rows.iter_rows(named=True)), list(columns) if columns is not None else names
    rows = list(rows or [])
    for n, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"table row {n} is a {type(row).__name__}, expected a dict")
    if columns is not None:
        return rows, list(columns)
    names: dict[str, None] = {}  # first appearance order, over all rows
    for row in rows:
        names.update(dict.fromkeys(row))
    return rows, list(names)


class Report:
    """An HTML report built section by section: content goes into the latest section; content
    added before any section goes at the top of the page, under the table of contents."""

    def __init__(self, title: str, subtitle: str | None = None):
        self.title = title
        self.subtitle = subtitle
        self._preamble: list[str] = []
        self._sections: list[dict] = []  # {"id", "title", "blocks"}

    def _add(self, fragment: str) -> None:
        (self._sections[-1]["blocks"] if self._sections else self._preamble).append(fragment)

    def section(self, title: str, intro: str | None = None) -> str:
        """Start a section (listed in the table of contents); returns its element id."""
        section_id = f"sec-{len(self._sections) + 1}-{_slug(str(title))}"
        self._sections.append({"id": section_id, "title": str(title), "blocks": []})
        if intro:
            self._add(f'<p class="intro">{_esc(intro)}</p>')
        return section_id

    def paragraph(self, text: Any) -> None:
        """Plain text as a paragraph (escaped; None shows as "—")."""
        self._add(f"<p>{MISSING if is_missing(text) else _esc(text)}</p>")

    def markdown_text(self, text: str | None) -> None:
        """A Markdown subset (see `markdown_to_html`); raw HTML in it is shown, not run."""
        self._add(markdown_to_html(text) if text and text.strip() else f"<p>{MISSING}</p>")

    def table(
        self,
        rows: Any,
        caption: str | None = None,
        number_format: NumberFormat = ".4g",
        columns: Sequence[str] | None = None,
    ) -> None:
        """A table of a list of dicts (columns in order of first appearance) or a polars
        DataFrame; `columns` picks and orders them. A column whose values are all numbers has a
        right-aligned header; number cells are right-aligned everywhere."""
        data, names = _rows_and_columns(rows, columns)
        cap = f"<caption>{_esc(caption)}</caption>" if caption else ""
        if not names:
            self._add(
                f'<div class="table-wrap"><table>{cap}<tbody><tr>'
                f'<td class="missing">{MISSING}</td></tr></tbody></table></div>'
            )
            return
        head = []
        for name in names:
            values = [row.get(name) for row in data if not is_missing(row.get(name))]
            numeric = bool(values) and all(_is_number(v) for v in values)
            cls = ' class="num"' if numeric else ""
            head.append(f'<th scope="col"{cls}>{_esc(name)}</th>')
        body = [
            "<tr>" + "".join(_cell("td", row.get(name), number_format) for name in names) + "</tr>"
            for row in data
        ]
        if not body:
            body = [f'<tr><td class="missing" colspan="{len(names)}">{MISSING}</td></tr>']
        self._add(
            f'<div class="table-wrap"><table>{cap}<thead><tr>{"".join(head)}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>"
        )

    def key_values(
        self,
        values: Mapping[str, Any] | None,
        caption: str | None = None,
        number_format: NumberFormat = ".4g",
    ) -> None:
        """A two-column table: each key, then its value (missing values as "—")."""
        cap = f"<caption>{_esc(caption)}</caption>" if caption else ""
        rows = [
            f'<tr><th scope="row">{_esc(k)}</th>{_cell("td", v, number_format)}</tr>'
            for k, v in (values or {}).items()
        ]
        if not rows:
            rows = [f'<tr><td class="missing">{MISSING}</td></tr>']
        self._add(
            f'<div class="table-wrap"><table class="kv">{cap}<tbody>{"".join(rows)}'
            f"</tbody></table></div>"
        )

    def image(
        self, png_bytes: bytes | None, caption: str | None = None, alt: str | None = None
    ) -> None:
        """A PNG embedded as a base64 data URI (no file next to the report). None or b"" shows
        "—"; bytes that are not a PNG raise ValueError."""
        figcaption = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
        if not png_bytes:
            self._add(f'<figure><div class="placeholder">{MISSING}</div>{figcaption}</figure>')
            return
        png_bytes = bytes(png_bytes)
        if not png_bytes.startswith(PNG_SIGNATURE):
            raise ValueError("image() takes PNG bytes (they start with the PNG signature)")
        data = base64.b64encode(png_bytes).decode("ascii")
        alt_text = _esc(alt if alt is not None else caption or "figure")
        self._add(
            f'<figure><img src="data:image/png;base64,{data}" alt="{alt_text}">'
            f"{figcaption}</figure>"
        )

    def render(self) -> str:
        """The whole report as an HTML5 document."""
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_esc(self.title)}</title>",
            f"<style>{CSS}</style>",
            "</head>",
            "<body>",
            '<div class="page">',
            "<header>",
            f"<h1>{_esc(self.title)}</h1>",
        ]
        if self.subtitle:
            parts.append(f'<p class="subtitle">{_esc(self.subtitle)}</p>')
        parts.append("</header>")
        if self._sections:
            links = "".join(
                f'<li><a href="#{s["id"]}">{_esc(s["title"])}</a></li>' for s in self._sections
            )
            parts.append(
                f'<nav class="toc" aria-label="Contents"><h2>Contents</h2><ol>{links}</ol></nav>'
            )
        parts.append("<main>")
        parts.extend(self._preamble)
        for s in self._sections:
            parts.append(f'<section id="{s["id"]}"><h2>{_esc(s["title"])}</h2>')
            parts.extend(s["blocks"])
            parts.append("</section>")
        parts += ["</main>", "</div>", "</body>", "</html>", ""]
        return "\n".join(parts)

    def write(self, path: str | os.PathLike) -> Path:
        """Render and write atomically (a temporary file in the same folder, then os.replace), so
        a reader never sees half a report; the folder is created if needed. Returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = self.render()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path
