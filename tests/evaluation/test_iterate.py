"""`preftune iterate`: rounds of sample → judge → best-vs-worst pairs → train → evaluate, resumable by round."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from preftune.cli import main
from preftune.config import JudgeConfig, load_config
from preftune.errors import DataError
from preftune.evaluation.judges import load_judge
from preftune.iterate.pairs import best_and_worst, sample_scores
from preftune.iterate.prompts import read_prompts, round_prompts

J = "tests.evaluation.judges_for_tests"


def test_best_and_worst() -> None:
    assert best_and_worst([0.0, 1.0, 1.0, -2.0]) == (1, 3)
    assert best_and_worst([1.0, 1.0]) is None and best_and_worst([]) is None


def test_pairwise_scores_are_round_robin_wins() -> None:
    judge = load_judge(JudgeConfig(name="preftune.judges:prefer_shorter"))
    assert sample_scores(judge, "p", ["a b c", "a", "a b", "x"]) == [0.0, 2.5, 1.0, 2.5]


def test_round_prompts_are_disjoint_and_files_are_checked(tmp_path: Path) -> None:
    train, held = round_prompts("builtin:arithmetic", 50, 20, None, 0)
    assert len(train) == 50 and len(held) == 20
    assert not {p[0]["content"] for p in train} & {p[0]["content"] for p in held}
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a"}\n{"prompt": [{"role": "user", "content": "b"}]}\n{"prompt": "c"}\n{"prompt": "d"}\n')
    tr, ev = round_prompts(str(f), 10, 1, None, 0)
    assert tr == ["a", [{"role": "user", "content": "b"}], "c"] and ev == ["d"]
    f.write_text('{"prompt": "a"}\n{"question": "b"}\n')
    with pytest.raises(DataError, match=r"p.jsonl:2: no 'prompt' field"):
        read_prompts(str(f))


def config(tmp_path: Path, model_dir: Path, rounds: int, *extra: str) -> list[str]:
    return [f"model.name_or_path={model_dir}", f"output_dir={tmp_path / 'it'}", f"data.cache_dir={tmp_path / 'tok'}", "data.num_proc=1",
            "report=false", "generation.max_new_tokens=6", "train.batch_size=4", "train.learning_rate=1e-2", "train.warmup_ratio=0",
            f"iterate.rounds={rounds}", "iterate.prompts_per_round=8", "iterate.num_eval_prompts=6", "iterate.samples_per_prompt=3",
            f"iterate.judge.name={J}:shorter_is_better", *extra]


def test_iterate_runs_rounds_and_resumes_by_round(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "it"
    assert main(["iterate", *config(tmp_path, tiny_model_dir, 1)]) == 0
    r1 = out / "round-01"
    done1 = (r1 / "done.json").read_text()
    samples = [json.loads(line) for line in (r1 / "samples.jsonl").read_text().splitlines()]
    pairs = [json.loads(line) for line in (r1 / "pairs.jsonl").read_text().splitlines()]
    assert len(samples) == 8 * 3 and 0 < len(pairs) <= 8
    # each pair is its prompt's best sample against its worst, by the judge
    for p in pairs:
        mine = [s for s in samples if s["prompt"] == "user: " + p["prompt"][0]["content"]]
        assert -len(p["chosen"][0]["content"]) == max(s["score"] for s in mine)
        assert -len(p["rejected"][0]["content"]) == min(s["score"] for s in mine)
    # the round trained the start model on those pairs: its weights moved
    start = load_file(str(tiny_model_dir / "model.safetensors"))
    after = load_file(str(r1 / "model" / "model.safetensors"))
    assert any((start[k] - after[k]).abs().max() > 0 for k in start)

    # a second round: round 1 is not redone; a round cut short after sampling reuses its pairs
    assert main(["iterate", *config(tmp_path, tiny_model_dir, 2)]) == 0
    assert (r1 / "done.json").read_text() == done1
    r2 = out / "round-02"
    summary = json.loads((r2 / "done.json").read_text())
    assert summary["model"] == str(r2 / "model") and summary["sampling"]["prompts"] == 8
    mtime = (r2 / "samples.jsonl").stat().st_mtime_ns
    (r2 / "done.json").unlink()
    assert main(["iterate", *config(tmp_path, tiny_model_dir, 2)]) == 0
    assert (r2 / "samples.jsonl").stat().st_mtime_ns == mtime
    lines = [json.loads(line) for line in (out / "iterate.jsonl").read_text().splitlines()]
    assert [s["round"] for s in lines] == [0, 1, 2]
    assert all("greedy_judge_mean" in s for s in lines)
    assert "round 2: greedy judge mean" in capsys.readouterr().out


def test_iterate_with_original_reference_and_no_pairs(tmp_path: Path, tiny_model_dir: Path) -> None:
    cfg = load_config(None, config(tmp_path, tiny_model_dir, 2, "iterate.reference=original"))
    from preftune.iterate.rounds import round_config

    rc = round_config(cfg, "prev", str(tiny_model_dir), tmp_path / "pairs.jsonl", tmp_path / "round-02", 2)
    assert (rc.reference.strategy, rc.reference.name_or_path, rc.model.name_or_path) == ("separate", str(tiny_model_dir), "prev")
    assert rc.resume_from == "auto" and rc.data.eval is None and rc.data.eval_fraction == 0
    # a judge that ties every sample gives no pairs: the round keeps the model and says so
    assert main(["iterate", *config(tmp_path, tiny_model_dir, 1, "iterate.judge.name=preftune.judges:keywords",
                                    "iterate.judge.args={words: [zzzzqqq]}")]) == 0
    summary = json.loads((tmp_path / "it" / "round-01" / "done.json").read_text())
    assert summary["sampling"]["pairs"] == 0 and summary["model"] == str(tiny_model_dir)
