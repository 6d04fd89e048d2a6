"""`preftune report`: one self-contained HTML page (plus PNG plots) that shows what a run did."""

from __future__ import annotations

from pathlib import Path

from ..train.artifacts import write_text_atomic

from .collect import RunView, collect
from .html import render
from .panels import chart_data, diagnostic_steps
from .png import write_pngs

REPORT = "report.html"


def write_report(run_dir: Path | str, pngs: bool = True) -> Path:
    """Write RUN_DIR/report.html (and RUN_DIR/plots/*.png); returns the page's path."""
    view = collect(Path(run_dir))
    charts = chart_data(view.train_rows, view.eval_rows)
    markers = diagnostic_steps(view.train_rows, view.eval_rows, view.diagnostics)
    written = write_pngs(charts, markers, view.run_dir / "plots") if pngs else []
    page = view.run_dir / REPORT
    write_text_atomic(page, render(view, charts, markers, [p.name for p in written]))
    return page


__all__ = ["REPORT", "RunView", "collect", "write_report"]
