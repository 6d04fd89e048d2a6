"""`preftune compare`: runs side by side, with the settings that differ, held-out accuracy with its standard error, the
paired bootstrap difference on shared held-out pairs, and a page that draws every run's curves in a real browser."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest

import preftune
from preftune.cli import main
from preftune.errors import PreftuneError
from preftune.report.compare import correct, differing_keys, paired_bootstrap
from preftune.stats import mean_stderr

from ..conftest import write_jsonl
from ..training.helpers import TOY, tiny_config


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> list[Path]:
    """β 0.1, β 0.5, and β 0.1 again (a twin of the first), all evaluated on the same 10 held-out pairs."""
    tmp = tmp_path_factory.mktemp("compare")
    held = write_jsonl(tmp / "held.jsonl", TOY[30:40])
    runs = []
    for name, beta in (("beta-0.1", 0.1), ("beta-0.5", 0.5), ("twin", 0.1)):
        cfg = tiny_config(tmp, tiny_model_dir, f"data.eval={held}", f"loss.beta={beta}", "train.max_steps=6", "train.eval_every=3",
                          "train.learning_rate=2e-2", "report=false", name=name)
        runs.append(preftune.train(cfg, progress=False).output_dir)
    return runs


def test_the_settings_that_differ_and_the_paired_difference_on_shared_pairs(three_runs: list[Path]) -> None:
    a, b, twin = three_runs
    data = preftune.compare([a, b])
    assert data["differing"] == {"loss.beta": [0.1, 0.5]}
    pairs = {d: [json.loads(x) for x in (d / "eval_pairs.jsonl").read_text().splitlines()] for d in (a, b)}
    acc = {d: [correct(p["margin"]) for p in pairs[d]] for d in (a, b)}
    (p,) = data["paired"]
    assert p["shared_pairs"] == 10 and p["difference"] == pytest.approx(statistics.mean(acc[b]) - statistics.mean(acc[a]))
    assert p["low"] <= p["difference"] <= p["high"]
    held = data["runs"][0]["held_out"]
    assert held["pairs"] == 10 and held["accuracy"] == pytest.approx(statistics.mean(acc[a]))
    assert held["accuracy_stderr"] == pytest.approx(statistics.stdev(acc[a]) / math.sqrt(10))
    same = preftune.compare([a, twin])
    assert same["differing"] == {}
    assert (same["paired"][0]["difference"], same["paired"][0]["low"], same["paired"][0]["high"]) == (0.0, 0.0, 0.0)


def test_the_cli_writes_the_page_and_prints_each_run(three_runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp.html"
    assert main(["compare", *map(str, three_runs[:2]), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "beta-0.1: accuracy" in printed and "beta-0.5 − beta-0.1:" in printed and "settings that differ: loss.beta" in printed
    page = out.read_text()
    assert 'id="differing"' in page and "<script" not in page and "http" not in page.replace("http-equiv", "")


def test_compare_needs_two_run_folders(three_runs: list[Path], tmp_path: Path) -> None:
    with pytest.raises(PreftuneError, match="at least two run folders"):
        preftune.compare([three_runs[0]])
    with pytest.raises(PreftuneError, match="not a preftune run folder"):
        preftune.compare([three_runs[0], tmp_path])


def test_the_page_draws_every_run_in_chromium(browser: Any, three_runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "cmp.html"
    preftune.compare(three_runs[:2], output=out)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(out.resolve().as_uri())
    for metric in ("loss", "rewards-margins", "rewards-accuracies", "logratios-chosen"):
        runs = page.eval_on_selector_all(f"#chart-{metric} path.series[data-part=train]", "ps => ps.map(p => p.dataset.run)")
        assert sorted(runs) == ["beta-0.1", "beta-0.5"], metric
        held = page.eval_on_selector_all(f"#chart-{metric} path.series[data-part=eval]", "ps => ps.length")
        assert held == 2, metric
    rows = page.eval_on_selector_all("#differing tr", "rs => rs.map(r => r.innerText)")
    assert len(rows) == 2 and "loss.beta" in rows[1]
    assert page.eval_on_selector_all("li.paired", "ls => ls.length") == 1
    assert errors == []
    page.close()


def test_paired_bootstrap_interval_matches_the_normal_approximation() -> None:
    a, b = [0.0] * 50 + [1.0] * 50, [1.0] * 100
    out = paired_bootstrap(a, b)
    assert out["difference"] == 0.5 and out["pairs"] == 100
    se = math.sqrt(0.25 / 100)  # the differences are 0 or 1, half each
    assert out["high"] - out["low"] == pytest.approx(2 * 1.96 * se, abs=0.03)
    assert out == paired_bootstrap(a, b)  # seeded: the same interval every time
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 0.0])


def test_helpers() -> None:
    assert mean_stderr([1.0, 0.0, 1.0, 0.0]) == pytest.approx((0.5, statistics.stdev([1, 0, 1, 0]) / 2))
    assert [correct(m) for m in (0.3, 0.0, -1.0)] == [1.0, 0.5, 0.0]
    assert differing_keys([{"a": {"b": 1, "c": 2}, "output_dir": "x"}, {"a": {"b": 1, "c": 3}, "output_dir": "y"}]) == {"a.c": [2, 3]}
