"""Shared bits of the experiment scripts: where data and results live, running a configured training, writing tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "docs" / "experiments"


def need(path: Path) -> Path:
    if not path.exists():
        raise SystemExit(f"{path} is missing: the experiments read ../shared/data beside the checkout")
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    from preftune import run_files

    path.parent.mkdir(parents=True, exist_ok=True)
    run_files.write_jsonl(path, rows, ensure_ascii=False)
    return path


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def train_run(overrides: list[str]) -> Any:
    from preftune.config import load_config
    from preftune.training.run import train

    return train(load_config(None, overrides), show_progress=True)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
