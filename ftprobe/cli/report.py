"""``ftprobe report RESULTS``: re-render the figures and ``report.html`` from a ``results.json``, no model run."""

from __future__ import annotations

from pathlib import Path

import click

from ._lock import output_lock
from .app import App


@click.command(short_help="Re-render figures and report.html from a results.json (no model is run).")
@click.argument("results", metavar="RESULTS.json")
@click.option("--out", "out_dir", metavar="DIR",
              help="Report folder for results.json, figures/ and report.html. Default: the folder of RESULTS.")
@click.option("--summary", "summary", multiple=True, metavar="TEXT",
              help="A sentence shown first in the report's summary (repeatable).")
@click.pass_obj
def report(app: App, results: str, out_dir: str | None, summary: tuple[str, ...]) -> None:
    """Check RESULTS.json against the results schema and write figures/*.png and a self-contained report.html
    (figures embedded, readable offline) into --out, with a copy of RESULTS.json beside them."""
    from ftprobe.report import load_results, write_report

    src = Path(results)
    load_results(src)  # a clear error (missing file, not JSON, wrong schema) before anything is written
    out = Path(out_dir) if out_dir else (src if src.is_dir() else src.parent)
    with output_lock(out, command=f"ftprobe report {results}"):  # not while a compare writes into that folder
        html = write_report(src, out, summary_lines=list(summary) or None)
    app.info(f"figures in {out / 'figures'}")
    app.info(f"report written to {html}")
