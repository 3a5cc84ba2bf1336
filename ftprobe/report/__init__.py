"""The report people look at: ``results.json`` (versioned, with a JSON Schema), ``figures/*.png`` and a
self-contained ``report.html``, all from a :class:`~ftprobe.core.results.Result` (no model is run).

    from ftprobe.report import write_report
    html = write_report(result, "out/", summary_lines=["Fine-tuning mostly changed mixed5b."])

Rendering only reads the result (DESIGN.md invariant 5); ``ftprobe report results.json --out DIR`` re-renders.
"""

from __future__ import annotations

import fnmatch
import shutil
from collections.abc import Sequence
from pathlib import Path

from ftprobe.core.results import Result

from ._access import MetricValues, figure_globs
from .figures import Figure, draw_figures
from .grids import draw_topk_grid, render_grids, report_channels
from .html import ExtraSection, build_html
from .schema import SCHEMA_PATH, ResultsFileError, load_results, results_schema, validate_results

__all__ = [
    "SCHEMA_PATH",
    "ExtraSection",
    "Figure",
    "MetricValues",
    "ResultsFileError",
    "draw_topk_grid",
    "load_results",
    "render_figures",
    "report_channels",
    "results_schema",
    "validate_results",
    "write_report",
]


def _as_result(result: Result | str | Path) -> Result:
    return result if isinstance(result, Result) else load_results(result)


def _results_file(path: str | Path) -> Path:
    path = Path(path)
    return path / "results.json" if path.is_dir() else path


def _figures(result: Result, fig_dir: Path) -> list[Figure]:
    figs = draw_figures(result, fig_dir)
    figs.extend(render_grids(result, fig_dir))
    return figs


_GRID_NAMES = "grid_pair[0-9]*_layer[0-9]*_*.png"


def _remove_stale(result: Result, fig_dir: Path, keep: set[str]) -> None:
    """Delete figures an earlier render wrote that this one did not (only the names the metrics declare their
    figures have, the default figures' names and the grids')."""
    globs = [*figure_globs(result), _GRID_NAMES]
    for p in fig_dir.glob("*.png"):
        if p.name not in keep and any(fnmatch.fnmatchcase(p.name, g) for g in globs):
            p.unlink()


def render_figures(result: Result | str | Path, out_dir: str | Path) -> list[Path]:
    """Draw every figure the result has values for, and the top-image grids, as PNGs in ``out_dir``.

    Args:
        result: A :class:`Result`, or the path of a ``results.json``.
        out_dir: Where the PNGs go (created). :func:`write_report` uses its ``figures/`` sub-folder.

    Returns:
        The PNG paths, in report order.
    """
    return [f.path for f in _figures(_as_result(result), Path(out_dir))]


def write_report(
    result: Result | str | Path,
    out_dir: str | Path,
    *,
    summary_lines: Sequence[str] | None = None,
    extra_sections: Sequence[ExtraSection] | None = None,
) -> Path:
    """Write ``results.json``, ``figures/*.png`` and ``report.html`` into ``out_dir``.

    Args:
        result: A :class:`Result`, or the path of a ``results.json`` to re-render.
        out_dir: The report folder (created).
        summary_lines: Sentences shown first in the summary (plain text; escaped).
        extra_sections: ``(title, html_fragment, [png paths])`` sections added after the built-in ones. The fragment
            is trusted HTML inserted as it is; the title is escaped; the PNGs are embedded.

    Returns:
        The path of ``report.html``.
    """
    res = _as_result(result)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "results.json"
    if isinstance(result, Result):
        res.save(target)
    elif not (target.exists() and target.samefile(_results_file(result))):
        shutil.copyfile(_results_file(result), target)  # the file as written, byte for byte
    figs = _figures(res, out / "figures")
    _remove_stale(res, out / "figures", {f.path.name for f in figs})
    html_path = out / "report.html"
    tmp = html_path.with_suffix(".html.tmp")
    tmp.write_text(build_html(res, figs, summary_lines=summary_lines, extra_sections=extra_sections), encoding="utf-8")
    tmp.replace(html_path)
    return html_path
