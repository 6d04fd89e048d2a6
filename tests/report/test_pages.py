"""The report page fits the run: SFT (loss, token accuracy, perplexity, greedy samples before and after) and KTO (its
KL reference point, the explorer with KTO highlighted), drawn without errors in a real browser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import preftune
from preftune.report import collect

from ..training.helpers import TOY
from .test_browser import open_report

UNPAIRED = [{"prompt": f"Q{i}: pick the good word.", "completion": f" good{i % 3}" if i % 2 else f" bad{i % 5} bad", "label": bool(i % 2)}
            for i in range(40)]


def _run(tmp: Path, model_dir: Path, name: str, config: dict, data: list[dict], stage: str = "preference") -> Path:
    base = {"model": {"name_or_path": str(model_dir)}, "data": {"eval_fraction": 0.25, "cache_dir": str(tmp / "tok")},
            "train": {"batch_size": 4, "max_steps": 8, "eval_every": 4, "learning_rate": 1e-2, "warmup_ratio": 0, "shuffle": False}}
    cfg = {**base, **config, "train": {**base["train"], **config.get("train", {})}}
    run = preftune.sft if stage == "sft" else preftune.train
    return run(cfg, train_data=data, output_dir=str(tmp / name), progress=False).output_dir


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    return _run(tmp_path_factory.mktemp("sft-page"), tiny_model_dir, "sft", {"sft": {"samples": 3}, "generation": {"max_new_tokens": 6}}, TOY,
                stage="sft")


@pytest.fixture(scope="module")
def kto_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    return _run(tmp_path_factory.mktemp("kto-page"), tiny_model_dir, "kto", {"loss": {"name": "kto"}}, UNPAIRED)


def payload(run_dir: Path) -> dict[str, Any]:
    page = (run_dir / "report.html").read_text()
    start = page.index('<script type="application/json" id="run-data">') + len('<script type="application/json" id="run-data">')
    return json.loads(page[start:page.index("</script>", start)].replace("<\\/", "</"))


def test_sft_run_keeps_greedy_answers_before_and_after(sft_run: Path) -> None:
    rows = [json.loads(line) for line in (sft_run / "samples.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 0, 0, 8, 8, 8]
    assert [r["prompt"] for r in rows[:3]] == [r["prompt"] for r in rows[3:]]
    held = {p["prompt"]: p["chosen"] for p in TOY}
    assert all(held[r["prompt"]] == r["target"] for r in rows)  # the held-out completion of that prompt
    assert rows[0]["answer"] != rows[3]["answer"]  # eight steps at lr 1e-2 change what the tiny model says


def test_sft_page_shows_its_own_curves_cards_and_samples(sft_run: Path) -> None:
    page = (sft_run / "report.html").read_text()
    assert [c["id"] for c in payload(sft_run)["charts"]] == ["loss", "accuracy", "perplexity", "lr", "grad_norm"]
    for text in ("Samples before and after", "eval/mean_token_accuracy", "eval/perplexity", "before (step 0)", "after (step 8)", "<b>SFT</b>"):
        assert text in page, text
    for absent in ("Loss explorer", "Held-out pairs", "Diagnostics", "rewards/margins"):
        assert absent not in page, absent
    assert collect(sft_run).kind == "sft"


def test_kto_page_draws_the_kl_point_and_highlights_kto_in_the_explorer(kto_run: Path) -> None:
    charts = {c["id"]: c for c in payload(kto_run)["charts"]}
    assert list(charts) == ["loss", "rewards", "margins", "kl", "logps", "lr", "grad_norm"]
    assert {s["split"] for s in charts["kl"]["series"]} == {"train", "eval"}
    page = (kto_run / "report.html").read_text()
    assert "eval/kl" in page and "Loss explorer" in page and "Held-out pairs" not in page


@pytest.mark.parametrize("which", ["sft", "kto"])
def test_sft_and_kto_pages_draw_without_errors(browser: Any, sft_run: Path, kto_run: Path, which: str) -> None:
    run = sft_run if which == "sft" else kto_run
    page, errors = open_report(browser, run)
    paths = page.eval_on_selector_all("#charts figure path.series", "ps => ps.map(p => p.getAttribute('d').split('L').length)")
    assert paths and all(n >= 2 for n in paths)
    if which == "kto":
        assert page.get_attribute("#row-kto", "class") == "current"
        before = float(page.get_attribute("#loss-kto", "data-value"))
        page.fill("#in-z", "7.5")
        assert float(page.get_attribute("#loss-kto", "data-value")) != before  # z0 moves the KTO loss
    else:
        assert page.query_selector("#explorer") is None
    assert errors == []
    page.close()
