"""PNG copies of the report's charts (for papers and chat), drawn with matplotlib's Agg backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .panels import DEFAULT_COLOR, KIND_COLORS, OTHER_KIND_COLOR, SERIES_COLORS


def write_pngs(charts: list[dict[str, Any]], markers: dict[str, list[int]], folder: Path) -> list[Path]:
    """One PNG per chart in `folder` (plots/<id>.png); train solid, held-out dashed with dots, diagnostics shaded."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for chart in charts:
        fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
        for line in chart["series"]:
            xs, ys = zip(*line["points"])
            style = dict(color=SERIES_COLORS.get(line["metric"], DEFAULT_COLOR), linewidth=1.6)
            if line["split"] == "eval":
                ax.plot(xs, ys, linestyle="--", marker="o", markersize=3.5, label=line["label"], **style)
            else:
                ax.plot(xs, ys, label=line["label"], **style)
        for kind, steps in markers.items():
            if steps:
                ax.axvline(steps[0], color=KIND_COLORS.get(kind, OTHER_KIND_COLOR), linestyle=":", linewidth=1.2, label=f"{kind} (from step {steps[0]})")
        ax.set_title(chart["title"], fontsize=11)
        ax.set_xlabel("step")
        ax.set_ylabel(chart["ylabel"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        path = folder / f"{chart['id']}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
