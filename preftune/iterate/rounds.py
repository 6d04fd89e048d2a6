"""`preftune iterate`: on-policy rounds, each sample (adaptive K) → judge → pair (or keep the correct samples) → train →
evaluate, resumable by round.

Layout under output_dir: round-00/eval.json (the start model), and per round r ≥ 1 round-NN/{samples.jsonl, pairs.jsonl or
sft.jsonl, sampling.json, train/ (a preftune run), model/, eval.json, eval_samples.jsonl, done.json}; iterate.jsonl holds
one line per finished round and report.html shows them. A round with done.json is never redone; a round cut short after
sampling reuses its examples and resumes its training from its checkpoints."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import stats
from ..config import IterateConfig, RunConfig
from ..data.records import Text, as_text
from ..errors import ConfigError, JudgeError
from ..evaluation.generation import decode_rates, length_summary
from ..evaluation.judging import Judge, load_judge
from ..run_files import MERGED_DIR, MODEL_DIR, write_json, write_jsonl
from .answers import Answerer, evaluate_round
from .pairs import correct_samples, sample_scores, select_pairs
from .prompts import round_prompts
from .sampling import AdaptiveSamples, adaptive_sample

logger = logging.getLogger("preftune.iterate")

SAMPLING = "sampling.json"  # written last: a round with it has finished sampling


def round_dir(out: Path, r: int) -> Path:
    return out / f"round-{r:02d}"


def examples_file(it: IterateConfig) -> str:
    return "sft.jsonl" if it.round_type == "rejection_sft" else "pairs.jsonl"


def settles(it: IterateConfig) -> Callable[[Sequence[float], Sequence[str]], bool]:
    """When a prompt needs no more samples: it has something to learn from (a pair under the strategies; for rejection_sft
    a correct sample), or, unless `resample_all_correct`, every sample of a preference round is correct (learned)."""
    if it.round_type == "rejection_sft":
        return lambda scores, texts: bool(correct_samples(scores, texts, it.correct_score))

    def settled(scores: Sequence[float], texts: Sequence[str]) -> bool:
        if not it.resample_all_correct and scores and all(s >= it.correct_score for s in scores):
            return True
        return select_pairs(scores, texts, it.pair_strategies, it.correct_score, it.max_pairs_per_prompt)[1] is not None
    return settled


def _turn(prompt: Text, text: str) -> Any:
    return [{"role": "assistant", "content": text}] if isinstance(prompt, list) else text


def training_examples(prompts: list[Text], sampled: AdaptiveSamples, it: IterateConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The round's training records (preference pairs, or prompt/completion records of correct samples) and their counts:
    examples, prompts without any, and for pairs how many each strategy made and for how many prompts."""
    rows: list[dict[str, Any]] = []
    pairs_by = {name: 0 for name in it.pair_strategies}
    prompts_by = {name: 0 for name in it.pair_strategies}
    none = 0
    for prompt, got in zip(prompts, sampled.per_prompt, strict=True):
        scores, texts = [s.score for s in got], [s.text for s in got]
        if it.round_type == "rejection_sft":
            keep = correct_samples(scores, texts, it.correct_score)[:it.max_pairs_per_prompt]
            rows += [{"prompt": prompt, "completion": _turn(prompt, texts[i])} for i in keep]
            none += not keep
            continue
        picked, name = select_pairs(scores, texts, it.pair_strategies, it.correct_score, it.max_pairs_per_prompt)
        if name is None:
            none += 1
            continue
        pairs_by[name] += len(picked)
        prompts_by[name] += 1
        rows += [{"prompt": prompt, "chosen": _turn(prompt, texts[c]), "rejected": _turn(prompt, texts[w])} for c, w in picked]
    counts: dict[str, Any] = {"examples": len(rows), "prompts_without_examples": none}
    if it.round_type == "preference":
        counts |= {"pairs": len(rows), "pairs_by_strategy": pairs_by, "prompts_by_strategy": prompts_by}
    return rows, counts


def sampling_summary(sampled: AdaptiveSamples, it: IterateConfig, usage: list[dict[str, float]]) -> dict[str, Any]:
    """How the round's samples came out: scores, correct share, prompts all / none correct, lengths, adaptive K, speed."""
    every = [s for got in sampled.per_prompt for s in got]
    correct = [[s.score >= it.correct_score for s in got] for got in sampled.per_prompt]
    tokens, seconds, slots = (sum(u[k] for u in usage) for k in ("tokens", "seconds", "row_steps"))
    return {"prompts": len(sampled.per_prompt), **sampled.stats(),
            "sample_score_mean": stats.mean_stderr([s.score for s in every])[0] if every else float("nan"),
            "sample_correct_share": sum(map(sum, correct)) / max(1, len(every)),
            "prompts_all_correct": sum(bool(c) and all(c) for c in correct), "prompts_none_correct": sum(not any(c) for c in correct),
            "sample_length_tokens": length_summary([s.tokens for s in every], [s.finished for s in every]),
            "generation": {"tokens": tokens, "seconds": seconds, **decode_rates(tokens, slots, seconds)}}


def sample_round(cfg: RunConfig, model_path: str, prompts: list[Text], judge: Judge, folder: Path, seed: int, show: bool) -> list[dict[str, Any]]:
    """Sample the current model on the round's prompts (adaptive K), judge, and write samples.jsonl, the examples file and
    sampling.json (last); returns the training records."""
    it = cfg.iterate
    answerer = Answerer.load(cfg, model_path)
    texts = [as_text(p) for p in prompts]
    usage: list[dict[str, float]] = []

    def draw(positions: list[int], n: int, attempt: int) -> list[tuple[int, str, int, bool]]:
        gen = cfg.generation.model_copy(update={"do_sample": True, "num_samples": n, "seed": seed + 7919 * attempt})
        label = f"sample {folder.name}" + (f" again ({len(positions)} prompts)" if attempt else "")
        samples, answers, used = answerer.answer([prompts[i] for i in positions], gen, label, show)
        usage.append(used)
        return [(positions[s.prompt_index], a, len(s.ids), s.finished) for s, a in zip(samples, answers)]

    scored: dict[int, list[float]] = {}

    def score(i: int, answers: list[str]) -> list[float]:
        if judge.kind != "reward":  # round-robin wins change as samples arrive: all of them again
            return sample_scores(judge, texts[i], answers)
        known = scored.setdefault(i, [])
        known += sample_scores(judge, texts[i], answers[len(known):])  # a reward is the sample's own: each scored once
        return list(known)

    sampled = adaptive_sample(len(prompts), it.samples_per_prompt, it.sample_cap(), draw, score, settles(it))
    rows, counts = training_examples(prompts, sampled, it)
    write_jsonl(folder / "samples.jsonl", ({"prompt": texts[i], "sample": j, "response": s.text, "score": s.score, "tokens": s.tokens}
                                           for i, got in enumerate(sampled.per_prompt) for j, s in enumerate(got)), ensure_ascii=False)
    write_jsonl(folder / examples_file(it), rows, ensure_ascii=False)
    write_json(folder / SAMPLING, {**counts, **sampling_summary(sampled, it, usage)})  # last: marks sampling done
    return rows


def round_config(cfg: RunConfig, start_model: str, original: str, examples: Path, folder: Path, r: int) -> RunConfig:
    """The training run of round r: the round's examples (recorded in `examples`, handed over in memory), the previous
    model as start; for preference rounds the chosen reference, for rejection_sft rounds the SFT stage."""
    data = cfg.data.model_copy(update={"train": str(examples), "eval": None, "eval_fraction": 0.0, "recipe": None, "columns": None})
    model = cfg.model.model_copy(update={"name_or_path": start_model}, deep=True)
    reference = cfg.reference.model_copy()
    if cfg.iterate.reference == "original" and r > 1 and cfg.loss.uses_reference():
        reference = reference.model_copy(update={"strategy": "separate", "name_or_path": original})
    train = cfg.train.model_copy(update={"merge_adapter": True, "eval_every": None, "seed": cfg.train.seed + r})
    update: dict[str, Any] = {"model": model, "data": data, "reference": reference, "train": train, "output_dir": str(folder / "train"),
                              "resume_from": "auto"}
    if cfg.iterate.round_type == "rejection_sft":
        update |= {"stage": "sft", "sft": cfg.sft.model_copy(update={"samples": 0})}
    return cfg.model_copy(update=update)


def _judges(it: IterateConfig) -> tuple[Judge, Judge]:
    """The sampling judge and the evaluation judge; the latter scores greedy answers one by one, so it must give rewards."""
    judge = load_judge(it.judge)
    evaluator = load_judge(it.eval_judge) if it.eval_judge is not None else judge
    if evaluator.kind != "reward":
        key = "iterate.eval_judge" if it.eval_judge is not None else "iterate.judge"
        raise JudgeError(f"{key}.name = {evaluator.name}: a pairwise judge (prompt, a, b); iterate scores each round's greedy answers "
                         "one by one, which needs a reward judge (prompt, response) -> float. Fix: give a reward judge (as "
                         "iterate.eval_judge to keep a pairwise judge for sampling), or set its kind: reward if the function takes "
                         "(prompt, response).")
    if it.round_type == "rejection_sft" and judge.kind != "reward":
        raise JudgeError(f"iterate.judge.name = {judge.name}: rejection_sft keeps samples scoring at least iterate.correct_score, which "
                         "needs a reward judge. Fix: give a reward judge, or round_type: preference.")
    return judge, evaluator


def iterate(cfg: RunConfig, show_progress: bool = True) -> list[dict[str, Any]]:
    """Run (or finish) cfg.iterate.rounds rounds; returns one summary per round, round 0 being the start model."""
    from ..data.readers import InMemoryRecords
    from ..report import ReportWriter
    from ..training.run import train
    from .page import write_page

    it = cfg.iterate
    if cfg.output_dir is None:
        raise ConfigError("iterate keeps each round in output_dir (to resume by round); output_dir is null. Fix: set output_dir.")
    judge, evaluator = _judges(it)
    out = Path(cfg.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"output_dir {out}: cannot be created ({e.strerror or e}). Fix: choose a folder you can write to.") from None
    train_prompts, eval_prompts = round_prompts(it.prompts, it.rounds * it.prompts_per_round, it.num_eval_prompts, it.eval_prompts, it.seed)
    original = cfg.model.name_or_path
    summaries: list[dict[str, Any]] = []
    first = round_dir(out, 0)
    if not (first / "eval.json").exists():
        evaluate_round(cfg, original, None, eval_prompts, evaluator, first, cfg.generation.seed, show_progress)
    summaries.append({"round": 0, "model": original, **json.loads((first / "eval.json").read_text())})
    model_path = original
    for r in range(1, it.rounds + 1):
        folder = round_dir(out, r)
        done = folder / "done.json"
        if done.exists():
            summary = json.loads(done.read_text())
            summaries.append(summary)
            model_path = summary["model"]
            logger.info("round %d: done already (%s)", r, done)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        start = (r - 1) * it.prompts_per_round % len(train_prompts)
        prompts = (train_prompts + train_prompts)[start:start + min(it.prompts_per_round, len(train_prompts))]
        seconds: dict[str, float] = {}
        t0 = time.perf_counter()
        if (folder / SAMPLING).exists():  # a round cut short after sampling: its examples as recorded
            rows = [json.loads(line) for line in (folder / examples_file(it)).read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            rows = sample_round(cfg, model_path, prompts, judge, folder, cfg.generation.seed + r, show_progress)
        sampling = json.loads((folder / SAMPLING).read_text())
        seconds["sampling"] = time.perf_counter() - t0
        trained: dict[str, Any] = {}
        if rows:
            t0 = time.perf_counter()
            run_cfg = round_config(cfg, model_path, original, folder / examples_file(it), folder, r)
            result = train(run_cfg, train_data=InMemoryRecords(rows, f"round {r} {examples_file(it)}"), show_progress=show_progress,
                           callbacks=[ReportWriter()] if cfg.report else [])
            if result.interrupted:
                raise KeyboardInterrupt
            weights = folder / "train" / (MERGED_DIR if (folder / "train" / MERGED_DIR).exists() else MODEL_DIR)
            shutil.rmtree(folder / "model", ignore_errors=True)
            weights.rename(folder / "model")
            model_path = str(folder / "model")
            trained = {"steps": result.steps, "last_train": {k: v for k, v in result.last.items() if k.startswith(("loss", "rewards/", "mean_token"))}}
            seconds["training"] = time.perf_counter() - t0
        else:
            logger.warning("round %d: no prompt gave a %s; the model is unchanged", r,
                           "correct sample" if it.round_type == "rejection_sft" else "pair (every prompt's samples tied)")
        t0 = time.perf_counter()
        ev = evaluate_round(cfg, model_path, original, eval_prompts, evaluator, folder, cfg.generation.seed + 1000 + r, show_progress)
        seconds["evaluation"] = time.perf_counter() - t0
        summary = {"round": r, "round_type": it.round_type, "model": model_path, "sampling": sampling, "train": trained, **ev, "seconds": seconds}
        write_json(done, summary)
        summaries.append(summary)
        write_jsonl(out / "iterate.jsonl", summaries)
        if cfg.report:
            write_page(out, summaries, cfg)
        _prune(out, r)
    write_jsonl(out / "iterate.jsonl", summaries)
    if cfg.report:
        write_page(out, summaries, cfg)
    return summaries


def _prune(out: Path, r: int) -> None:
    """Delete weights no later round needs (rounds before r-1 keep their numbers and pairs, not their models)."""
    old = round_dir(out, r - 2) / "model"
    if r >= 3 and old.exists():
        shutil.rmtree(old, ignore_errors=True)
