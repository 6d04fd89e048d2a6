"""Read what a run wrote (metrics, config, summaries, held-out pairs, diagnostics) into one view for the report."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from ..errors import PreftuneError
from ..run_files import CONFIG, DATA_SUMMARY, DIAGNOSTICS, EVAL_PAIRS, METRICS, SAMPLES, SUMMARY, read_run_file


@dataclass
class RunView:
    """Everything the report shows about one run folder."""

    run_dir: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    eval_pairs: list[dict[str, Any]] = field(default_factory=list)
    diagnostics: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)  # SFT: held-out answers before and after training

    @property
    def kind(self) -> str:
        """sft, kto or pairs: which page fits the run."""
        if self.config.get("stage") == "sft":
            return "sft"
        loss = self.config.get("loss") or {}
        return "kto" if loss.get("name") == "kto" and not loss.get("components") else "pairs"

    @property
    def train_rows(self) -> list[dict[str, Any]]:
        return [m for m in self.metrics if _number(m.get("loss")) and _number(m.get("step"))]

    @property
    def eval_rows(self) -> list[dict[str, Any]]:
        return [m for m in self.metrics if _number(m.get("eval/loss")) and _number(m.get("step"))]

    @property
    def finished(self) -> bool:
        return bool(self.summary)


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _json(path: Path, default: dict[str, Any]) -> dict[str, Any]:
    value = read_run_file(path) if path.exists() else default
    if not isinstance(value, dict):
        raise PreftuneError(f"{path}: not a JSON object. Fix: re-run the training, or delete the file.")
    return value


def _jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file; a last line cut short by a crash is ignored."""
    if not path.exists():
        return []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise PreftuneError(f"{path}: cannot be read ({e.strerror or e}). Fix: check the run folder's permissions.") from None
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def collect(run_dir: Path) -> RunView:
    """The run in `run_dir`; fails with a readable error when it is not a preftune run folder."""
    run_dir = Path(run_dir)
    if not (run_dir / METRICS).exists():
        raise PreftuneError(f"{run_dir}: no {METRICS} here, so this is not a preftune run folder. "
                            "Fix: give the output_dir of a `preftune train` run.")
    config_path = run_dir / CONFIG
    config = read_run_file(config_path, "yaml") if config_path.exists() else {}
    if not isinstance(config or {}, dict):
        raise PreftuneError(f"{config_path}: not a mapping of config sections. Fix: restore the run's config.yaml.")
    return RunView(run_dir, config or {}, _jsonl(run_dir / METRICS), _json(run_dir / SUMMARY, {}),
                   _json(run_dir / DATA_SUMMARY, {}), _jsonl(run_dir / EVAL_PAIRS), _json(run_dir / DIAGNOSTICS, {}), _jsonl(run_dir / SAMPLES))
