"""The report: what train writes, what the page holds, and the pieces it is built from."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from preftune.cli import main
from preftune.errors import PreftuneError
from preftune.report import collect, write_report
from preftune.report.panels import PANELS, chart_data, diagnostic_steps, series
from preftune import train

from ..training.helpers import tiny_config


def test_train_writes_report_plots_and_pairs(tiny_run: Path) -> None:
    page = (tiny_run / "report.html").read_text()
    for section in ("Diagnostics", "Training curves", "Held-out pairs", "Loss explorer", "Data", "Settings"):
        assert f"<h2>{section}</h2>" in page
    assert sorted(p.name for p in (tiny_run / "plots").glob("*.png")) == sorted(f"{p.id}.png" for p in PANELS)
    for png in (tiny_run / "plots").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    pairs = [json.loads(line) for line in (tiny_run / "eval_pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == 10 and all(p["step"] == 12 for p in pairs)
    assert all(p["prompt"].startswith("Q") and p["chosen"].startswith(" good") for p in pairs)
    # the page shows the pair with the largest margin and the one with the smallest
    best, worst = max(pairs, key=lambda p: p["margin"]), min(pairs, key=lambda p: p["margin"])
    assert f"{best['margin']:.4g}" in page and f"{worst['margin']:.4g}" in page


def test_report_is_self_contained(tiny_run: Path) -> None:
    page = (tiny_run / "report.html").read_text()
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|<img[^>]+src=\"?https?:|url\(\s*['\"]?https?:", page)
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", page))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls  # the SVG namespace name is not a fetch


def test_report_is_written_at_each_checkpoint(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import preftune.report as report

    calls: list[int] = []
    real = report.write_report

    def spy(run_dir: Path, pngs: bool = True) -> Path:
        calls.append(len([line for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]))
        return real(run_dir, pngs=False)

    monkeypatch.setattr(report, "write_report", spy)
    train(tiny_config(tmp_path, tiny_model_dir, "train.max_steps=4", "train.save_every=2"), progress=False)
    assert calls == [2, 4, 4]  # after the checkpoints at steps 2 and 4, and at the end


def test_report_off(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = train(tiny_config(tmp_path, tiny_model_dir, "train.max_steps=1", "report=false"), progress=False).output_dir
    assert not (out / "report.html").exists()


def test_report_cli_on_a_run_and_on_a_wrong_folder(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tiny_run / "report.html").unlink()
    assert main(["report", str(tiny_run)]) == 0
    assert (tiny_run / "report.html").exists()
    assert main(["report", str(tmp_path)]) == 2
    assert "no metrics.jsonl here" in capsys.readouterr().err
    with pytest.raises(PreftuneError, match="not a preftune run folder"):
        collect(tmp_path)


def test_interrupted_run_metrics_still_report(tmp_path: Path) -> None:
    """A run killed mid-write leaves a cut-off last line; the report reads the rest."""
    rows = [{"step": 1, "loss": 0.69, "rewards/margins": 0.0}, {"step": 2, "loss": 0.6, "rewards/margins": 0.2}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 3, "lo')
    page = write_report(tmp_path, pngs=False).read_text()
    assert "in progress or interrupted: 2 steps logged" in page


def test_series_and_markers() -> None:
    train_rows = [{"step": 1, "loss": 0.7, "rewards/chosen": 0.1}, {"step": 2, "loss": 0.6, "diagnostics/drift": 1.0}]
    eval_rows = [{"step": 0, "eval/loss": 0.69}, {"step": 2, "eval/loss": 0.5, "diagnostics/flat_margins": 1.0}]
    loss_panel = next(p for p in PANELS if p.id == "loss")
    assert series(train_rows, eval_rows, loss_panel) == [
        {"label": "train loss", "metric": "loss", "split": "train", "points": [[1, 0.7], [2, 0.6]]},
        {"label": "eval loss", "metric": "loss", "split": "eval", "points": [[0, 0.69], [2, 0.5]]}]
    assert [c["id"] for c in chart_data(train_rows, eval_rows)] == ["loss", "rewards"]
    assert diagnostic_steps(train_rows, eval_rows, {"drift": {"steps": [5]}}) == {"drift": [2, 5], "flat_margins": [2]}
