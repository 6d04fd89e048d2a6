"""The data doctor's model checks on the tiny model: cross-fitted label-noise scores rank planted label flips above
clean pairs on data the tiny model can learn, confident learning's threshold flags them, the numbers behind AUROC and
precision, and the command end to end."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from preftune.cli import main
from preftune.data.records import PreferencePair
from preftune.evaluation.label_noise import (CrossFit, auroc, confident_threshold, fold_of, likely_mislabeled, model_checks,
                                             precision_at)

from ..conftest import write_jsonl

N, FLIPS = 40, 8


def pairs() -> tuple[list[PreferencePair], list[bool]]:
    """One easy rule to learn, "Good." is preferred over "Bad.", with a seeded 20% of the labels flipped."""
    rng = random.Random(0)
    flipped = set(rng.sample(range(N), FLIPS))
    out = []
    for i in range(N):
        chosen, rejected = ("Bad.", "Good.") if i in flipped else ("Good.", "Bad.")
        out.append(PreferencePair(f"Question {i}: how was item {i * 7 % 13}?", chosen, rejected, source="t", id=str(i)))
    return out, [i in flipped for i in range(N)]


FAST = ("model.lora.enabled=false", "train.learning_rate=3e-3", "train.batch_size=8", "train.warmup_ratio=0", "train.deterministic=true")


def test_planted_flips_rank_above_clean_pairs_and_are_flagged(tiny_model_dir: Path, tmp_path: Path) -> None:
    data, flipped = pairs()
    scores = model_checks(data, str(tiny_model_dir), tmp_path / "checks", CrossFit(folds=2, steps=12, overrides=FAST), show=False)
    assert [s["index"] for s in scores] == list(range(N)) and all(s["suspect"] is not None for s in scores)
    assert all(0 <= s["suspect"] <= 1 and s["suspect"] == pytest.approx(1 - s["p_chosen"]) for s in scores)
    suspect = [s["suspect"] for s in scores]
    assert auroc(suspect, flipped) >= 0.95  # the flips are the pairs whose label the folds contradict
    threshold = confident_threshold(scores)
    assert threshold is not None and threshold > 0.5
    caught = [likely_mislabeled(s, threshold) for s in scores]
    assert sum(c and f for c, f in zip(caught, flipped)) >= FLIPS - 1 and sum(c and not f for c, f in zip(caught, flipped)) <= 2
    assert sorted({s["fold"] for s in scores}) == [0, 1] and (tmp_path / "checks" / "folds" / "fold-1" / "run" / "model").is_dir()
    assert all(isinstance(s["reference_margin"], float) for s in scores)


def test_the_rankings_numbers_against_their_definitions() -> None:
    assert auroc([0.9, 0.8, 0.3, 0.1], [True, True, False, False]) == 1.0
    assert auroc([0.1, 0.8, 0.3, 0.9], [True, True, False, False]) == 0.25  # one of four (pos, neg) pairs ordered right
    assert auroc([0.5, 0.5], [True, False]) == 0.5
    assert precision_at([0.9, 0.8, 0.3, 0.1, 0.7], [True, False, False, False, True], 0.4) == 0.5  # top 2: 0.9 (yes), 0.8 (no)
    folds = fold_of(11, 3, seed=4)
    assert sorted(folds.count(k) for k in range(3)) == [3, 4, 4] and fold_of(11, 3, seed=4) == folds != fold_of(11, 3, seed=5)
    scores = [{"p_chosen": p, "suspect": 1 - p} for p in (0.9, 0.8, 0.7, 0.2)]
    t = confident_threshold(scores)
    assert t == pytest.approx(0.65) and [likely_mislabeled(s, t) for s in scores] == [False, False, False, True]
    unlearned = [{"p_chosen": p, "suspect": 1 - p} for p in (0.5, 0.45, 0.55, 0.4)]
    assert not any(likely_mislabeled(s, confident_threshold(unlearned)) for s in unlearned)  # the folds learned nothing: no flags


def test_the_command_adds_the_scores_and_the_filter_reads_them(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, flipped = pairs()
    file = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in data])
    out = tmp_path / "doctor"
    args = ["data", "doctor", str(file), "--model", str(tiny_model_dir), "--folds", "2", "--steps", "12", "-o", str(out)]
    assert main(args + [a for o in FAST for a in ("--set", o)]) == 0
    printed = capsys.readouterr().out
    assert "likely_mislabeled" in printed and "label noise" in printed
    records = [json.loads(line) for line in (out / "doctor.jsonl").read_text().splitlines()]
    assert [r["index"] for r in records] == list(range(N)) and all(0 <= r["suspect"] <= 1 for r in records)
    assert auroc([r["suspect"] for r in records], flipped) >= 0.95
    summary = json.loads((out / "doctor_summary.json").read_text())
    assert summary["train"]["label_noise"]["learned"] is True and summary["train"]["label_noise"]["scored"] == N
    assert "suspect" in (out / "doctor.html").read_text()

    from preftune.config import load_config
    from preftune.data.pipeline import load_examples

    strict = load_config(None, [f"data.filters.exclude_from=[{out / 'doctor.jsonl'}]", "data.filters.exclude_flags=[]",
                                "data.filters.exclude_suspect_above=0.5"]).data.load_settings()
    kept = load_examples(str(file), strict).examples
    dropped = {r["index"] for r in records if r["suspect"] > 0.5}
    assert len(kept) == N - len(dropped) and dropped and sum(flipped[i] for i in dropped) >= len(dropped) - 2
