"""Metrics out: OUTPUT/metrics.jsonl always, plus TensorBoard / MLflow / W&B through accelerate's trackers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..run_files import write_text_atomic


def tracker_setup(report_to: list[str], output_dir: Path) -> dict[str, Any]:
    """Keyword arguments for `Accelerator(...)`; MLflow defaults to a local file store inside the run folder."""
    if not report_to:
        return {}
    if "mlflow" in report_to and not os.environ.get("MLFLOW_TRACKING_URI"):
        os.environ["MLFLOW_TRACKING_URI"] = (output_dir / "mlruns").resolve().as_uri()
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this switch
    return {"log_with": list(report_to), "project_dir": str(output_dir / "trackers")}


def flat_config(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config as flat `a.b` keys with scalar values (what trackers accept)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_config(v, key + "."))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[key] = "" if v is None else v
        else:
            out[key] = json.dumps(v)
    return out


class MetricsFile:
    """Appends one JSON object per logging step. On resume the file is cut back to what it held when the checkpoint
    was taken (`keep_lines`), or, for older checkpoints, to the lines up to the resumed step; a line cut short by a
    crash is dropped."""

    def __init__(self, path: Path, resume_step: int | None, keep_lines: int | None = None):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        kept: list[str] = []
        if resume_step is not None and path.exists():
            lines = [line for line in path.read_text().splitlines() if _step_of(line) is not None]
            kept = lines[:keep_lines] if keep_lines is not None else [line for line in lines if _step_of(line) <= resume_step]
        write_text_atomic(path, "".join(line + "\n" for line in kept))
        self.lines = len(kept)

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.lines += 1


def _step_of(line: str) -> int | None:
    """The step of a metrics line; None for a blank line or one cut short by a crash."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record.get("step", 0) if isinstance(record, dict) else None
