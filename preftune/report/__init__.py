"""`preftune report`: one self-contained HTML page (plus PNG plots) that shows what a run did."""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import PreftuneError
from ..run_files import write_text_atomic
from ..training.callbacks import Callback, TrainResult

from .collect import RunView, collect
from .html import render
from .panels import PANELS_OF, chart_data, diagnostic_steps
from .png import write_pngs

REPORT = "report.html"


def write_report(run_dir: Path | str, pngs: bool = True) -> Path:
    """Write RUN_DIR/report.html (and RUN_DIR/plots/*.png); returns the page's path."""
    view = collect(Path(run_dir))
    page = view.run_dir / REPORT
    try:
        charts = chart_data(view.train_rows, view.eval_rows, PANELS_OF[view.kind])
        markers = diagnostic_steps(view.train_rows, view.eval_rows, view.diagnostics)
        written = write_pngs(charts, markers, view.run_dir / "plots") if pngs else []
        write_text_atomic(page, render(view, charts, markers, [p.name for p in written]))
    except OSError as e:
        raise PreftuneError(f"{view.run_dir}: the report cannot be written there ({e.strerror or e}). Fix: make the run folder writable.") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:  # the run's files parse but hold other shapes
        raise PreftuneError(f"{view.run_dir}: its files are not in the shape preftune writes ({type(e).__name__}: {e}). "
                            "Fix: re-run the training, or restore the run folder's JSON files.") from None
    return page


class ReportWriter(Callback):
    """Writes the report at each checkpoint and at the end of a run (`report: true`); a report never costs the run."""

    def __init__(self) -> None:
        self.page: Path | None = None

    def _write(self, run_dir: Path) -> None:
        try:
            self.page = write_report(run_dir)
        except Exception as e:  # noqa: BLE001 - the run's files are intact whatever the page hit
            logging.getLogger("preftune.report").warning("report: could not be written (%s: %s); the run's files are intact, try `preftune report %s`",
                                                         type(e).__name__, e, run_dir)

    def on_save(self, checkpoint: Path) -> None:
        self._write(checkpoint.parent)

    def on_end(self, result: TrainResult) -> None:
        if result.output_dir is not None:
            self._write(result.output_dir)
            if self.page is not None:
                result.paths["report"] = self.page


__all__ = ["REPORT", "ReportWriter", "RunView", "collect", "write_report"]
