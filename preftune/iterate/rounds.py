"""`preftune iterate`: on-policy DPO rounds, each sample → judge → pair → train → evaluate, resumable by round.

Layout under output_dir: round-00/eval.json (the start model), and per round r ≥ 1 round-NN/{samples.jsonl, pairs.jsonl,
train/ (a preftune train run), eval.json, eval_samples.jsonl, done.json}; iterate.jsonl holds one line per finished round.
A round with done.json is never redone; a round cut short reuses its pairs and resumes its training from its checkpoints."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from ..config import GenerationConfig, ModelConfig, RunConfig
from ..data.records import Text, as_text
from ..evaluation.generation import length_stats
from ..models.generate import Sample, generate
from ..errors import ConfigError, JudgeError
from ..evaluation.judges import Judge, load_judge
from ..evaluation.run import decode, prompt_tokenizer
from ..models.loading import load_model, load_tokenizer
from ..training.artifacts import MERGED_DIR, MODEL_DIR, write_json, write_jsonl
from .pairs import best_and_worst, sample_scores
from .prompts import round_prompts

logger = logging.getLogger("preftune.iterate")


def round_dir(out: Path, r: int) -> Path:
    return out / f"round-{r:02d}"


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def generate_texts(cfg: RunConfig, model_path: str, prompts: list[Text], gen: GenerationConfig, label: str, show: bool) -> tuple[list[Sample], list[str]]:
    """Load `model_path` and answer `prompts` with `gen` (prompts tokenized as training tokenizes them); samples and texts."""
    from ..training.progress import stage

    model = load_model(ModelConfig(name_or_path=model_path, dtype=cfg.model.dtype, trust_remote_code=cfg.model.trust_remote_code), trainable=False)
    model.to(_device())
    tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code)
    encode = prompt_tokenizer(tokenizer, cfg)
    ids = [encode.prompt_ids(p) for p in prompts]
    with stage(label, len(ids), show) as advance:
        samples = generate(model, tokenizer, ids, gen, _device(), advance)
    return samples, [decode(tokenizer, s.ids) for s in samples]


def evaluate_greedy(cfg: RunConfig, model_path: str, prompts: list[Text], judge: Judge, folder: Path, show: bool) -> dict[str, Any]:
    """Greedy responses to the held-out prompts, scored by the judge (mean reward; for exact match, the accuracy)."""
    greedy = cfg.generation.model_copy(update={"do_sample": False, "num_samples": 1})
    samples, texts = generate_texts(cfg, model_path, prompts, greedy, f"evaluate {folder.name}", show)
    prompt_texts = [as_text(p) for p in prompts]
    if judge.kind == "reward":
        scores = [judge.reward(prompt_texts[s.prompt_index], t) for s, t in zip(samples, texts)]
    else:
        scores = [float("nan")] * len(samples)
    result = {"model": model_path, "prompts": len(prompts), "greedy_judge_mean": sum(scores) / len(scores) if scores else float("nan"),
              "judge": judge.name, "length_tokens": length_stats(samples)}
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "eval_samples.jsonl", ({"prompt": prompt_texts[s.prompt_index], "response": t, "score": v}
                                                for s, t, v in zip(samples, texts, scores)))
    write_json(folder / "eval.json", result)
    return result


def sample_and_pair(cfg: RunConfig, model_path: str, prompts: list[Text], judge: Judge, folder: Path, seed: int,
                    show: bool) -> list[dict[str, Any]]:
    """K samples per prompt from the current model, judged; the best-vs-worst pairs (also recorded in folder/pairs.jsonl)."""
    gen = cfg.generation.model_copy(update={"do_sample": True, "num_samples": cfg.iterate.samples_per_prompt, "seed": seed})
    samples, texts = generate_texts(cfg, model_path, prompts, gen, f"sample {folder.name}", show)
    pairs, records, ties, all_scores = [], [], 0, []
    for i, prompt in enumerate(prompts):
        responses = [t for s, t in zip(samples, texts) if s.prompt_index == i]
        scores = sample_scores(judge, as_text(prompt), responses)
        all_scores += scores
        records += [{"prompt": as_text(prompt), "sample": j, "response": r, "score": v} for j, (r, v) in enumerate(zip(responses, scores))]
        pick = best_and_worst(scores)
        if pick is None:
            ties += 1
            continue
        best, worst = responses[pick[0]], responses[pick[1]]
        if isinstance(prompt, list):
            pairs.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": best}], "rejected": [{"role": "assistant", "content": worst}]})
        else:
            pairs.append({"prompt": prompt, "chosen": best, "rejected": worst})
    write_jsonl(folder / "samples.jsonl", records, ensure_ascii=False)
    stats = {"prompts": len(prompts), "pairs": len(pairs), "tied_prompts": ties, "sample_score_mean": sum(all_scores) / max(1, len(all_scores)),
             "sample_length_tokens": length_stats(samples)}
    write_json(folder / "sampling.json", stats)
    write_jsonl(folder / "pairs.jsonl", pairs, ensure_ascii=False)  # last: marks sampling done
    return pairs


def round_config(cfg: RunConfig, start_model: str, original: str, pairs: Path, folder: Path, r: int) -> RunConfig:
    """The training run of round r: the round's pairs (recorded in `pairs`, handed over in memory), the previous model as
    policy start, the chosen reference."""
    data = cfg.data.model_copy(update={"train": str(pairs), "eval": None, "eval_fraction": 0.0, "recipe": None, "columns": None})
    model = cfg.model.model_copy(update={"name_or_path": start_model}, deep=True)
    reference = cfg.reference.model_copy()
    if cfg.iterate.reference == "original" and r > 1 and cfg.loss.uses_reference():
        reference = reference.model_copy(update={"strategy": "separate", "name_or_path": original})
    train = cfg.train.model_copy(update={"merge_adapter": True, "eval_every": None, "seed": cfg.train.seed + r})
    return cfg.model_copy(update={"model": model, "data": data, "reference": reference, "train": train, "output_dir": str(folder / "train"),
                                  "resume_from": "auto"})


def iterate(cfg: RunConfig, show_progress: bool = True) -> list[dict[str, Any]]:
    """Run (or finish) cfg.iterate.rounds rounds; returns one summary per round, round 0 being the start model."""
    from ..data.readers import InMemoryRecords
    from ..report import ReportWriter
    from ..training.run import train

    it = cfg.iterate
    if cfg.output_dir is None:
        raise ConfigError("iterate keeps each round in output_dir (to resume by round); output_dir is null. Fix: set output_dir.")
    judge = load_judge(it.judge)
    if judge.kind != "reward":
        raise JudgeError(f"iterate.judge.name = {judge.name}: a pairwise judge (prompt, a, b); iterate scores each round's greedy answers "
                         "one by one, which needs a reward judge (prompt, response) -> float. Fix: give a reward judge, or set "
                         "iterate.judge.kind: reward if the function takes (prompt, response).")
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
        evaluate_greedy(cfg, original, eval_prompts, judge, first, show_progress)
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
        if (folder / "pairs.jsonl").exists():  # a round cut short after sampling: its pairs as recorded
            pairs = [json.loads(line) for line in (folder / "pairs.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            pairs = sample_and_pair(cfg, model_path, prompts, judge, folder, cfg.generation.seed + r, show_progress)
        sampling = json.loads((folder / "sampling.json").read_text())
        trained: dict[str, Any] = {}
        if sampling["pairs"] > 0:
            run_cfg = round_config(cfg, model_path, original, folder / "pairs.jsonl", folder, r)
            result = train(run_cfg, train_data=InMemoryRecords(pairs, f"round {r} pairs"), show_progress=show_progress,
                           callbacks=[ReportWriter()] if cfg.report else [])
            if result.interrupted:
                raise KeyboardInterrupt
            weights = folder / "train" / (MERGED_DIR if (folder / "train" / MERGED_DIR).exists() else MODEL_DIR)
            shutil.rmtree(folder / "model", ignore_errors=True)
            weights.rename(folder / "model")
            model_path = str(folder / "model")
            trained = {"steps": result.steps, "last_train": {k: v for k, v in result.last.items() if k.startswith(("loss", "rewards/"))}}
        else:
            logger.warning("round %d: every prompt's samples tied under the judge; no pairs, the model is unchanged", r)
        ev = evaluate_greedy(cfg, model_path, eval_prompts, judge, folder, show_progress)
        summary = {"round": r, "model": model_path, "sampling": sampling, "train": trained, **ev}
        write_json(done, summary)
        summaries.append(summary)
        write_jsonl(out / "iterate.jsonl", summaries)
        _prune(out, r)
    write_jsonl(out / "iterate.jsonl", summaries)
    return summaries


def _prune(out: Path, r: int) -> None:
    """Delete weights no later round needs (rounds before r-1 keep their numbers and pairs, not their models)."""
    old = round_dir(out, r - 2) / "model"
    if r >= 3 and old.exists():
        shutil.rmtree(old, ignore_errors=True)
