"""report.html: self-contained, escaped, and every figure loads in a real browser (headless Chromium)."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pytest

from ftprobe.report.html import build_html


@pytest.fixture(scope="module")
def page(report_dir: Path) -> str:
    return (report_dir / "report.html").read_text(encoding="utf-8")


def test_report_is_one_file_with_every_figure_embedded(report_dir: Path, page: str) -> None:
    pngs = sorted(p for p in (report_dir / "figures").glob("*.png") if not p.name.startswith("grid_"))
    embedded = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(embedded) == len(pngs) >= 10
    assert sorted(base64.b64decode(e) for e in embedded) == sorted(p.read_bytes() for p in pngs)
    # the grids are laid out in the page, each of their images embedded once, as a CSS background
    thumbs = re.findall(r"\.(t\d+)\{background-image:url\(data:image/(?:png|jpeg);base64,[A-Za-z0-9+/=]+\)\}", page)
    cells = re.findall(r'<div class="th (t\d+)" role="img"', page)
    assert thumbs and len(thumbs) == len(set(thumbs)) and set(cells) == set(thumbs) and len(cells) > len(thumbs)
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), [r for r in refs if not r.startswith("data:")]
    assert "<script" not in page.lower()
    assert "Content-Security-Policy" in page and "script-src 'none'" in page


def test_user_names_are_escaped(page: str, names) -> None:
    for name in (*names.classes, names.models[1]):
        assert html.escape(name) in page, name
    assert "<script>alert(1)" not in page and "<img src=x" not in page and "<i>tuned" not in page
    assert "Fine-tuning changed &lt;b&gt;mixed5b&lt;/b&gt; most." in page  # summary lines are text, not markup


def test_report_has_summary_metric_sections_grids_and_provenance(report_result, page: str) -> None:
    for title in ("Summary", "CKA (feature space)", "Weight change (parameter space)",
                  "Top-k overlap of maximal-activation images", "Class concentration of the top-k images",
                  "Top images per channel", "Provenance"):
        assert f"<h2>{title}</h2>" in page, title
    sha = report_result.models[0]["sha256"]
    assert report_result.run["versions"]["torch"] in page and (sha is None or sha in page)
    assert "mixed4d" in page and "overlap_mean@5" in page and "entropy_mean@3" in page
    # the summary lines come first, then the generated sentences
    assert page.index("Fine-tuning changed") < page.index("Models: base")


def test_extra_sections_are_trusted_fragments_with_embedded_pngs(report_result, report_dir: Path) -> None:
    png = report_dir / "figures" / "cka_per_layer.png"
    text = build_html(report_result, [], extra_sections=[
        ("Feature <visualisation>", '<p class="fv">rendered channels</p>', [png])])
    assert "<h2>Feature &lt;visualisation&gt;</h2>" in text and '<p class="fv">rendered channels</p>' in text
    assert base64.b64encode(png.read_bytes()).decode() in text


@pytest.mark.slow
def test_report_loads_in_headless_chromium(report_dir: Path, page: str, tmp_path: Path, chromium, names) -> None:
    found = chromium.check(report_dir / "report.html", tmp_path)
    n_imgs = page.count("<img ")
    assert found["images"] == n_imgs >= 10
    assert found["broken"] == [], f"images that did not load: {found['broken']}"
    assert min(found["widths"]) > 100
    assert found["scripts"] == 0 and found["errors"] == []
    assert found["console"] == [], "console messages (script errors, blocked loads):\n" + "\n".join(found["console"])
    for name in names.classes:  # shown as text, in the rendered page
        assert name in found["text"], name
    assert found["title"].startswith("ftprobe report")
    shot = chromium.screenshot(report_dir / "report.html", tmp_path / "report.png", tmp_path)
    assert shot.stat().st_size > 10_000
