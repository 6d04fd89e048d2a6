"""`preftune iterate`: rounds of sample → judge → best-vs-worst pairs → train → evaluate, resumable by round."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from safetensors.torch import load_file

import preftune
from preftune.cli import main
from preftune.config import IterateConfig, JudgeConfig, load_config
from preftune.errors import ConfigError, DataError
from preftune.evaluation.judging import load_judge
from preftune.iterate.page import change, write_page
from preftune.iterate.pairs import best_and_worst, correct_samples, pick_best_worst, pick_correct_incorrect, sample_scores, select_pairs
from preftune.iterate.rounds import sampling_summary, settles, training_examples
from preftune.iterate.sampling import AdaptiveSamples, Judged, adaptive_sample
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
    assert main(["iterate", *config(tmp_path, tiny_model_dir, 1, "iterate.max_samples_per_prompt=3")]) == 0
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
    assert main(["iterate", *config(tmp_path, tiny_model_dir, 2, "iterate.max_samples_per_prompt=3")]) == 0
    assert (r1 / "done.json").read_text() == done1
    r2 = out / "round-02"
    summary = json.loads((r2 / "done.json").read_text())
    assert summary["model"] == str(r2 / "model") and summary["sampling"]["prompts"] == 8
    mtime = (r2 / "samples.jsonl").stat().st_mtime_ns
    (r2 / "done.json").unlink()
    assert main(["iterate", *config(tmp_path, tiny_model_dir, 2, "iterate.max_samples_per_prompt=3")]) == 0
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


def test_pair_strategies() -> None:
    texts = ["a", "b", "c", "d", "e"]
    scores = [1.0, 0.2, 1.0, 0.0, 0.5]
    assert pick_best_worst(scores, texts, 1.0, 4) == [(0, 3)]
    assert pick_best_worst([1.0, 1.0], ["x", "y"], 1.0, 4) == []
    # each correct (0, 2) against the incorrect, lowest score first (3, 1, 4), spread before repeating, capped
    assert pick_correct_incorrect(scores, texts, 1.0, 10) == [(0, 3), (2, 1), (0, 1), (2, 4), (0, 4), (2, 3)]
    assert pick_correct_incorrect(scores, texts, 1.0, 3) == [(0, 3), (2, 1), (0, 1)]
    assert pick_correct_incorrect(scores, texts, 0.5, 2) == [(0, 3), (2, 1)]  # 0.5 counts as correct at threshold 0.5
    assert pick_correct_incorrect([1.0, 1.0], ["x", "y"], 1.0, 4) == [] and pick_correct_incorrect([0.0, 0.5], ["x", "y"], 1.0, 4) == []
    # the same text twice is one sample: no duplicate pairs, no pair of a text with itself
    assert pick_correct_incorrect([1.0, 1.0, 0.0, 0.0], ["x", "x", "y", "y"], 1.0, 4) == [(0, 2)]
    assert pick_best_worst([1.0, 0.0], ["x", "x"], 1.0, 4) == []
    assert correct_samples([1.0, 0.0, 1.0, 1.0], ["x", "y", "x", "z"], 1.0) == [0, 3]
    # strategies in order: the first that finds a pair wins and is named
    assert select_pairs([0.4, 0.1], ["n", "f"], ["correct_incorrect", "best_worst"], 1.0, 4) == ([(0, 1)], "best_worst")
    assert select_pairs(scores, texts, ["correct_incorrect", "best_worst"], 1.0, 1) == ([(0, 3)], "correct_incorrect")
    assert select_pairs([0.0, 0.0], ["n", "f"], ["correct_incorrect", "best_worst"], 1.0, 4) == ([], None)


def test_adaptive_sampling_resamples_only_unsettled_prompts_up_to_the_cap() -> None:
    # prompt 0 settles at once, prompt 1 on its second draw, prompt 2 never (drawn up to the cap of 5: 2 + 2 + 1)
    correct_at = {0: 0, 1: 3, 2: None}
    calls: list[tuple[list[int], int, int]] = []

    def draw(positions: list[int], n: int, attempt: int) -> list[tuple[int, str, int, bool]]:
        calls.append((list(positions), n, attempt))
        return [(i, f"{i}-{attempt}-{j}", 3, True) for i in positions for j in range(n)]

    def score(i: int, texts: list[str]) -> list[float]:
        return [1.0 if k == correct_at[i] else 0.0 for k in range(len(texts))]

    out = adaptive_sample(3, 2, 5, draw, score, lambda s, t: max(s) > min(s))
    assert calls == [([0, 1, 2], 2, 0), ([1, 2], 2, 1), ([2], 1, 2)]
    assert [len(p) for p in out.per_prompt] == [2, 4, 5] and out.per_prompt[1][3].score == 1.0
    assert out.stats() == {"draws": 3, "samples": 11, "resampled_prompts": 2, "settled_by_resampling": 1, "prompts_per_draw": [3, 2, 1]}
    # cap = k: one draw, nothing resampled
    calls.clear()
    assert adaptive_sample(3, 2, 2, draw, score, lambda s, t: False).stats()["draws"] == 1 and len(calls) == 1
    with pytest.raises(ValueError, match="k ≤ cap"):
        adaptive_sample(1, 3, 2, draw, score, lambda s, t: False)


def test_a_preference_round_does_not_resample_prompts_whose_samples_are_all_correct() -> None:
    it = IterateConfig(pair_strategies=["correct_incorrect"])
    done = settles(it)
    assert done([1.0, 1.0], ["a", "b"])  # all correct: learned, not resampled
    assert not done([0.0, 0.5], ["a", "b"]) and done([1.0, 0.0], ["a", "b"])  # none correct: resample; a pair: settled
    assert not settles(it.model_copy(update={"resample_all_correct": True}))([1.0, 1.0], ["a", "b"])
    assert not settles(IterateConfig(round_type="rejection_sft"))([0.0, 0.0], ["a", "b"])
    draws: list[list[int]] = []

    def draw(positions: list[int], n: int, attempt: int) -> list[tuple[int, str, int, bool]]:
        draws.append(list(positions))
        return [(i, f"{i}-{attempt}-{j}", 3, True) for i in positions for j in range(n)]

    # prompt 0 always right, prompt 1 always wrong, prompt 2 right only on its first sample: only prompt 1 is drawn again
    score = lambda i, texts: [1.0 if i == 0 or (i == 2 and k == 0) else 0.0 for k in range(len(texts))]  # noqa: E731
    out = adaptive_sample(3, 2, 6, draw, score, done)
    assert draws == [[0, 1, 2], [1], [1]] and out.settled_by_resampling == 0


def test_training_examples_and_sampling_summary_count_what_happened() -> None:
    it = IterateConfig(pair_strategies=["correct_incorrect", "best_worst"], max_pairs_per_prompt=2)
    j = lambda t, s, n=5: Judged(t, s, n, True)  # noqa: E731
    sampled = AdaptiveSamples([[j("a", 1.0), j("b", 0.0), j("c", 0.0)], [j("d", 0.3), j("e", 0.1, 9)], [j("f", 0.0), j("g", 0.0)], [j("h", 1.0), j("i", 1.0)]],
                              draws=2, resampled_prompts=2, settled_by_resampling=0, draw_sizes=[4, 2])
    chat = [{"role": "user", "content": "q"}]
    rows, counts = training_examples([chat, "p1", "p2", "p3"], sampled, it)
    assert counts == {"examples": 3, "prompts_without_examples": 2, "pairs": 3, "pairs_by_strategy": {"correct_incorrect": 2, "best_worst": 1},
                      "prompts_by_strategy": {"correct_incorrect": 1, "best_worst": 1}}
    assert rows[0] == {"prompt": chat, "chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]}
    assert rows[2] == {"prompt": "p1", "chosen": "d", "rejected": "e"}
    sft_rows, sft_counts = training_examples([chat, "p1", "p2", "p3"], sampled, IterateConfig(round_type="rejection_sft", max_pairs_per_prompt=1))
    assert sft_counts == {"examples": 2, "prompts_without_examples": 2}
    assert sft_rows == [{"prompt": chat, "completion": [{"role": "assistant", "content": "a"}]}, {"prompt": "p3", "completion": "h"}]
    usage = [{"tokens": 30.0, "seconds": 2.0, "row_steps": 40.0}, {"tokens": 10.0, "seconds": 2.0, "row_steps": 10.0}]
    s = sampling_summary(sampled, it, usage)
    assert (s["samples"], s["prompts_all_correct"], s["prompts_none_correct"], s["sample_correct_share"]) == (9, 1, 2, 3 / 9)
    assert s["generation"] == {"tokens": 40.0, "seconds": 4.0, "tokens_per_s": 10.0, "idle_row_share": pytest.approx(0.2)}
    assert s["sample_length_tokens"]["max"] == 9 and s["resampled_prompts"] == 2


def test_iterate_config_checks_the_sample_cap() -> None:
    assert IterateConfig().sample_cap() == 16 and IterateConfig(samples_per_prompt=3, max_samples_per_prompt=3).sample_cap() == 3
    with pytest.raises(ConfigError, match="max_samples_per_prompt 4 is below samples_per_prompt 8"):
        load_config(None, ["iterate.samples_per_prompt=8", "iterate.max_samples_per_prompt=4"])
    with pytest.raises(ConfigError, match="pair_strategies"):
        load_config(None, ["iterate.pair_strategies=[best]"])


def test_iterate_page_shows_each_round_with_its_error_and_counts(tmp_path: Path) -> None:
    cfg = load_config(None, ["iterate.pair_strategies=[correct_incorrect]"])
    rounds = [{"round": 0, "greedy_judge_mean": 0.1, "greedy_judge_stderr": 0.03, "prompts": 300, "length_tokens": {"mean": 40.0}},
              {"round": 1, "greedy_judge_mean": 0.25, "greedy_judge_stderr": 0.04, "sampling": {"examples": 37, "pairs_by_strategy": {"correct_incorrect": 37},
               "prompts_without_examples": 20, "resampled_prompts": 30, "settled_by_resampling": 9, "sample_correct_share": 0.2},
               "kl_to_start": {"estimate": 1.5, "stderr": 0.25}, "seconds": {"sampling": 100.0, "training": 50.0, "evaluation": 60.0}}]
    assert change(rounds[0], rounds[1]) == (pytest.approx(0.15), pytest.approx(0.05))
    page = write_page(tmp_path, rounds, cfg).read_text()
    assert "0.250 ± 0.040" in page and "+0.150 ± 0.050" in page and "correct_incorrect 37" in page and "1.50 ± 0.25" in page
    assert "30 / 9" in page and "100 / 50 / 60" in page and "300 held-out prompts" in page and page.count("<circle") == 2


def by_prompt(folder: Path) -> dict[str, list[dict[str, object]]]:
    out: dict[str, list[dict[str, object]]] = {}
    for line in (folder / "samples.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out.setdefault(rec["prompt"], []).append(rec)
    return out


def test_rejection_sft_round_with_adaptive_k(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = config(tmp_path, tiny_model_dir, 1, "iterate.round_type=rejection_sft", f"iterate.judge.name={J}:even_length", "iterate.samples_per_prompt=2",
                  "iterate.max_samples_per_prompt=8", "iterate.max_pairs_per_prompt=2", "iterate.kl_prompts=4", "report=true")
    assert main(["iterate", *args]) == 0
    r1 = tmp_path / "it" / "round-01"
    sampling = json.loads((r1 / "sampling.json").read_text())
    rows = [json.loads(line) for line in (r1 / "sft.jsonl").read_text().splitlines()]
    samples = by_prompt(r1)
    assert len(samples) == 8 and sampling["samples"] == sum(map(len, samples.values()))
    for prompt, got in samples.items():
        correct = [s["score"] == 1.0 for s in got]
        # a prompt is sampled again, two at a time, until it has a correct sample or 8 samples
        assert len(got) % 2 == 0 and (len(got) == 8 or (any(correct) and not any(correct[:len(got) - 2])))
        kept = [r["completion"][0]["content"] for r in rows if "user: " + r["prompt"][0]["content"] == prompt]
        assert kept == list(dict.fromkeys(s["response"] for s in got if s["score"] == 1.0))[:2]
    assert sampling["resampled_prompts"] > 0 and sampling["draws"] > 1 and sampling["examples"] == len(rows) > 0
    assert sampling["prompts_without_examples"] == sum(not any(s["score"] == 1.0 for s in g) for g in samples.values())
    summary = json.loads((r1 / "done.json").read_text())
    assert summary["round_type"] == "rejection_sft" and summary["train"]["steps"] > 0 and "mean_token_accuracy" in summary["train"]["last_train"]
    assert summary["kl_to_start"]["samples"] == 4 and math.isfinite(summary["kl_to_start"]["estimate"])
    assert math.isfinite(summary["greedy_judge_stderr"]) and set(summary["seconds"]) == {"sampling", "training", "evaluation"}
    assert summary["sampling"]["generation"]["tokens_per_s"] > 0
    train_cfg = (r1 / "train" / "config.yaml").read_text()
    assert "stage: sft" in train_cfg
    page = (tmp_path / "it" / "report.html").read_text()
    assert "rejection_sft rounds" in page and page.count("<circle") == 2
    out = capsys.readouterr().out
    assert f"round 1: greedy judge mean {summary['greedy_judge_mean']:.4f} ± {summary['greedy_judge_stderr']:.4f}" in out and "report:" in out


def test_correct_incorrect_pairs_and_a_separate_eval_judge(tmp_path: Path, tiny_model_dir: Path) -> None:
    args = config(tmp_path, tiny_model_dir, 1, f"iterate.judge.name={J}:even_length", "iterate.pair_strategies=[correct_incorrect]",
                  "iterate.max_samples_per_prompt=6", "iterate.max_pairs_per_prompt=3", f"iterate.eval_judge.name={J}:shorter_is_better",
                  "iterate.kl_prompts=0")
    summaries = preftune.iterate_rounds(overrides=args, progress=False)  # the Python API of `preftune iterate`
    r1 = tmp_path / "it" / "round-01"
    assert [s["round"] for s in summaries] == [0, 1] and summaries[1] == json.loads((r1 / "done.json").read_text())
    pairs = [json.loads(line) for line in (r1 / "pairs.jsonl").read_text().splitlines()]
    samples = by_prompt(r1)
    for p in pairs:
        got = {s["response"]: s["score"] for s in samples["user: " + p["prompt"][0]["content"]]}
        assert got[p["chosen"][0]["content"]] == 1.0 and got[p["rejected"][0]["content"]] == 0.0
    summary = json.loads((r1 / "done.json").read_text())
    assert summary["sampling"]["pairs_by_strategy"] == {"correct_incorrect": len(pairs)} and len(pairs) > 0
    assert summary["judge"] == f"{J}:shorter_is_better" and summary["greedy_judge_mean"] < 0 and "kl_to_start" not in summary
    evals = [json.loads(line) for line in (r1 / "eval_samples.jsonl").read_text().splitlines()]
    assert all(e["score"] == -len(e["response"]) for e in evals)
