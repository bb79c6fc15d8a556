"""The self-contained HTML report: text is escaped, missing values show as "—", numbers are
right-aligned, images are embedded, the table of contents links resolve, the file is written
atomically; and headless Chromium renders it (screenshot + DOM)."""

import base64
import math
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest

from tasks.plots import figure_png, pyplot
from tasks.report.html import MISSING, Report, format_value

ROOT = Path(__file__).resolve().parents[3]
SCREENSHOTS = ROOT / "test-artifacts"
VOID = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "source",
    "track",
    "wbr",
}


class Parsed(HTMLParser):
    """Collects ids, links, cells, images and checks that every element is closed in order."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.ids, self.hrefs, self.toc_hrefs = [], [], [], [], []
        self.cells: list[tuple[str, str | None, str]] = []  # (tag, class, text)
        self.images: list[dict] = []
        self.text_parts: list[str] = []
        self.doctype = None
        self._cell = None
        self.feed(text)
        self.close()

    def handle_decl(self, decl):
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "a" and "href" in attrs:
            self.hrefs.append(attrs["href"])
            if "nav" in self.stack:
                self.toc_hrefs.append(attrs["href"])
        if tag == "img":
            self.images.append(attrs)
        if tag in ("td", "th"):
            self._cell = [tag, attrs.get("class"), ""]
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()
        if tag in ("td", "th") and self._cell:
            self.cells.append(tuple(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[2] += data
        if "style" not in self.stack:
            self.text_parts.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.text_parts).split())


def _png(color: str = "#1f77b4") -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4, 2.5))
    ax.plot([0, 1, 2, 3], [1.3, 1.1, 1.07, 1.05], color=color, linewidth=4)
    ax.set_title("validation loss")
    return figure_png(fig)


def _report(png: bytes) -> Report:
    report = Report("Distillation <run>", subtitle="tiny preset & friends")
    report.markdown_text("Kept answers are **strictly** better; see `select.py`.")
    report.section("Selection", intro="What the Safety RM kept.")
    report.table(
        [
            {"category": "illicit_criminal", "kept": 812, "mean_delta": 0.41237},
            {"category": "hateful_harmful", "kept": None, "mean_delta": math.nan},
            {"category": "unqualified_advice", "kept": 95},
        ],
        caption="Kept per category",
        number_format=".3f",
    )
    report.key_values({"rows": 1000, "kept_share": 0.907, "delta_median": None}, caption="Totals")
    report.section("Loss curve")
    report.image(png, caption="Validation loss")
    report.section("Selection")  # same title again: still its own anchor
    report.paragraph("Second section with the same title.")
    return report


def test_render_is_a_balanced_html5_document():
    html = _report(_png()).render()
    doc = Parsed(html)
    assert html.startswith("<!DOCTYPE html>") and doc.doctype.lower() == "doctype html"
    assert doc.errors == [] and doc.stack == []
    assert '<meta charset="utf-8">' in html and '<html lang="en">' in html
    assert re.search(r"<style>.*td\.num.*text-align: right", html, re.S)
    assert "<script" not in html  # no scripts at all
    assert "<title>Distillation &lt;run&gt;</title>" in html


def test_toc_links_resolve_to_unique_section_ids():
    report = _report(_png())
    ids = [report.section("Extra")]
    doc = Parsed(report.render())
    section_ids = [i for i in doc.ids if i.startswith("sec-")]
    assert len(section_ids) == 4 == len(set(section_ids))
    assert ids[0] == section_ids[-1]
    assert doc.toc_hrefs == [f"#{i}" for i in section_ids]
    assert all(h[1:] in doc.ids for h in doc.hrefs if h.startswith("#"))


def test_text_is_escaped_everywhere():
    evil = "<script>alert('x')</script>"
    report = Report(evil, subtitle=evil)
    report.paragraph(evil)
    report.section(evil, intro=evil)
    report.markdown_text(f"{evil}\n\n- {evil}\n\n[click](javascript:alert(1)) `{evil}`")
    report.table([{evil: evil}], caption=evil)
    report.key_values({evil: evil}, caption=evil)
    report.image(_png(), caption=evil, alt=evil)
    html = report.render()
    assert "<script" not in html.lower()
    assert html.count("&lt;script&gt;") >= 12
    doc = Parsed(html)
    assert doc.errors == []
    assert not any(h.lower().startswith("javascript") for h in doc.hrefs)
    assert "[click](javascript:alert(1))" in doc.text  # left as text, not a link
    assert doc.images[0]["alt"] == evil


def test_missing_values_render_as_a_dash_and_numbers_right_aligned():
    doc = Parsed(_report(_png()).render())
    cells = {(tag, cls, text) for tag, cls, text in doc.cells}
    assert ("td", "num", "812") in cells and ("td", "num", "0.412") in cells  # .3f format
    assert ("td", "num", "0.907") in cells  # key_values default .4g
    assert ("td", "num", "1000") in cells
    missing = [c for c in doc.cells if c[2] == MISSING]
    # None kept, NaN mean_delta, the key the third row lacks, and delta_median=None
    assert len(missing) == 4 and all(c[1] == "missing" for c in missing)
    headers = [(cls, text) for tag, cls, text in doc.cells if tag == "th"]
    assert ("num", "kept") in headers and ("num", "mean_delta") in headers
    assert (None, "category") in headers


def test_polars_frames_and_odd_values():
    df = pl.DataFrame(
        {"name": ["a", None], "x": [1.5, float("nan")], "n": [None, 3], "tags": [["p", "q"], []]}
    )
    report = Report("t")
    report.table(df, caption="frame")
    report.table(pl.DataFrame({"only": []}), caption="no rows")
    report.table([], caption="nothing")
    report.table(None)
    report.key_values({})
    report.image(None, caption="not made")
    report.paragraph(None)
    report.markdown_text(None)
    doc = Parsed(report.render())
    assert doc.errors == []
    texts = [text for tag, _, text in doc.cells if tag == "td"]
    assert texts[:8] == ["a", "1.5", MISSING, '["p", "q"]', MISSING, MISSING, "3", "[]"]
    assert texts[8:] == [MISSING] * 4
    assert "not made" in doc.text and doc.images == []
    assert format_value(math.inf) == "∞" and format_value(True) == "true"
    assert format_value(2.0, lambda v: f"{v:.1%}") == "200.0%"


def test_images_are_embedded_as_data_uris():
    png = _png()
    doc = Parsed(_report(png).render())
    (img,) = doc.images
    prefix = "data:image/png;base64,"
    assert img["src"].startswith(prefix)
    assert base64.b64decode(img["src"][len(prefix) :]) == png
    assert img["alt"] == "Validation loss"
    with pytest.raises(ValueError, match="PNG"):
        Report("t").image(b"GIF89a not a png")


def test_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "reports" / "run.html"
    assert Report("first").write(target) == target
    assert "<h1>first</h1>" in target.read_text(encoding="utf-8")

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        Report("second").write(target)
    assert "<h1>first</h1>" in target.read_text(encoding="utf-8")  # the old report is intact
    assert sorted(p.name for p in target.parent.iterdir()) == ["run.html"]  # no temp file left
    monkeypatch.undo()
    Report("third").write(target)
    assert "<h1>third</h1>" in target.read_text(encoding="utf-8")
    assert sorted(p.name for p in target.parent.iterdir()) == ["run.html"]


# --- in a real browser ------------------------------------------------------------------------


def _chromium_flags() -> list[str]:
    """The e2e browser test's flags (tests/e2e/test_services.py), minus its window size."""
    from tests.e2e.test_services import CHROMIUM_FLAGS

    return [f for f in CHROMIUM_FLAGS if not f.startswith("--window-size=")]


def _chromium(*args: str) -> str:
    out = subprocess.run(
        [shutil.which("chromium"), *_chromium_flags(), "--window-size=1200,1600", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="chromium is not installed: `make browser` (part of `make test`) installs it",
)
def test_report_renders_in_headless_chromium(tmp_path):
    import numpy as np
    from matplotlib.image import imread

    path = _report(_png("#ff00ff")).write(tmp_path / "report.html")  # a magenta curve
    SCREENSHOTS.mkdir(exist_ok=True)
    shot = SCREENSHOTS / "html-report.png"
    shot.unlink(missing_ok=True)
    _chromium(f"--screenshot={shot}", path.as_uri())
    pixels = imread(shot)
    assert pixels.shape[:2] == (1600, 1200)
    rgb = (pixels[..., :3] * 255).round()
    magenta = np.all(np.abs(rgb - [255, 0, 255]) < 40, axis=-1).sum()
    assert magenta > 200, "the embedded PNG (a thick magenta line) is not on the screenshot"

    dom = _chromium("--dump-dom", path.as_uri())
    doc = Parsed(dom)
    assert doc.errors == []
    for title in ("Selection", "Loss curve"):
        assert f"<h2>{title}</h2>" in dom
    cells = {text for _, _, text in doc.cells}
    assert {"illicit_criminal", "812", "0.412", MISSING} <= cells
    assert doc.toc_hrefs and all(h[1:] in doc.ids for h in doc.toc_hrefs)
    assert doc.images and doc.images[0]["src"].startswith("data:image/png;base64,")
