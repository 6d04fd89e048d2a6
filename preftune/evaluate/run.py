"""`preftune eval`: preference metrics on held-out pairs, optional generation (samples JSONL, lengths, KL estimate) and
judge rewards / win rates; written to OUTPUT/eval.json and OUTPUT/samples.jsonl."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import GenerationConfig, JudgeConfig, RunConfig
from ..data.pipeline import load_examples
from ..data.prepare import TokenizedSplit, load_settings, tokenize_settings, tokenize_split
from ..data.records import as_text
from ..data.tokenize import PairTokenizer, TokenizedPair
from ..errors import DataError
from ..train.artifacts import write_jsonl, write_text_atomic
from .generation import Sample, generate, kl_estimate, length_stats
from .judges import Judge, load_judge, rewards, win_rate
from .models import EvalModels
from .preference import PairScores, preference_summary
from .progress import stage
from .scoring import pair_logps


@dataclass(frozen=True)
class EvalSettings:
    """What `preftune eval` does besides the preference metrics."""

    beta: float = 0.1
    max_pairs: int | None = None
    batch_size: int = 8
    generate: bool = False
    judge: JudgeConfig | None = None
    show_progress: bool = True


def load_split(data: str | list[str], tokenizer: Any, cfg: RunConfig, max_pairs: int | None) -> TokenizedSplit:
    """The evaluation pairs, read, mapped and tokenized with the config's data settings."""
    loaded = load_examples(data, load_settings(cfg.data))
    examples = [e for e in loaded.examples if hasattr(e, "chosen")][:max_pairs]
    if not examples:
        raise DataError(f"{data}: no preference pairs to evaluate. Fix: point --data at pairs with prompt, chosen and rejected.")
    return tokenize_split(examples, tokenizer, cfg.data)


def score(models: EvalModels, pairs: list[TokenizedPair], batch_size: int, chunk: int, device: Any, label: str,
          show: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Summed response log-probs under the policy and (when there is one) the reference."""
    pad = models.tokenizer.pad_token_id
    with stage(f"{label} (policy)", len(pairs), show) as advance:
        pc, pr = pair_logps(models.policy, pairs, pad, batch_size, chunk, device=device, on_batch=advance)
    rc = rr = None
    with models.as_reference() as ref:
        if ref is not None:
            with stage(f"{label} (reference)", len(pairs), show) as advance:
                rc, rr = pair_logps(ref, pairs, pad, batch_size, chunk, device=device, on_batch=advance)
    return pc, pr, rc, rr


def sample_pairs(prompts: list[list[int]], samples: list[Sample]) -> tuple[list[TokenizedPair], list[tuple[int, int]]]:
    """Samples two at a time as (prompt, a, b) pairs of the same prompt, so one scoring pass gives every sample's log-prob;
    returns the pairs and the sample positions (i, j) of each (j == i for an odd one out)."""
    pairs: list[TokenizedPair] = []
    slots: list[tuple[int, int]] = []
    i = 0
    while i < len(samples):
        j = i + 1 if i + 1 < len(samples) and samples[i + 1].prompt_index == samples[i].prompt_index else i
        pairs.append(TokenizedPair(prompts[samples[i].prompt_index], samples[i].ids, samples[j].ids))
        slots.append((i, j))
        i = j + 1
    return pairs, slots


def sample_logps(models: EvalModels, prompts: list[list[int]], samples: list[Sample], batch_size: int, chunk: int, device: Any,
                 show: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π and log πref of each sample, in sample order."""
    pairs, slots = sample_pairs(prompts, samples)
    pc, pr, rc, rr = score(models, pairs, batch_size, chunk, device, "sample log-probs", show)

    def unpair(c: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(samples), dtype=torch.float64)
        for k, (i, j) in enumerate(slots):
            out[j], out[i] = r[k], c[k]
        return out

    return unpair(pc, pr), (unpair(rc, rr) if rc is not None and rr is not None else None)


def unique_prompts(split: TokenizedSplit, limit: int | None) -> tuple[list[list[int]], list[str]]:
    """Distinct prompts of the split in order (ids and text), at most `limit`."""
    ids: list[list[int]] = []
    texts: list[str] = []
    seen: set[tuple[int, ...]] = set()
    for pair, ex in zip(split.pairs, split.examples):
        key = tuple(pair.prompt)
        if key in seen:
            continue
        seen.add(key)
        ids.append(pair.prompt)
        texts.append(as_text(ex.prompt))
        if limit is not None and len(ids) >= limit:
            break
    return ids, texts


def decode(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


def generation_report(models: EvalModels, prompt_ids: list[list[int]], prompt_texts: list[str], gen: GenerationConfig, judge: Judge | None,
                      batch_size: int, chunk: int, device: Any, show: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Generate from the policy (and from the reference when a judge compares them); lengths, KL estimate, judge numbers."""
    with stage("generate (policy)", len(prompt_ids), show) as advance:
        samples = generate(models.policy, models.tokenizer, prompt_ids, gen, device, advance)
    texts = [decode(models.tokenizer, s.ids) for s in samples]
    report: dict[str, Any] = {"prompts": len(prompt_ids), "samples": len(samples), "settings": gen.model_dump(), "length_tokens": length_stats(samples)}
    records = [{"prompt_index": s.prompt_index, "sample": s.sample_index, "prompt": prompt_texts[s.prompt_index], "response": t,
                "tokens": len(s.ids), "finished": s.finished} for s, t in zip(samples, texts)]
    if models.has_reference:
        lp, lref = sample_logps(models, prompt_ids, samples, batch_size, chunk, device, show)
        assert lref is not None
        report["kl"] = kl_estimate(lp, lref, gen)
        for rec, a, b in zip(records, lp.tolist(), lref.tolist()):
            rec["policy_logp"], rec["reference_logp"] = a, b
    if judge is not None:
        report["judge"] = judge_report(models, prompt_ids, prompt_texts, samples, texts, records, gen, judge, device, show)
    return report, records


def judge_report(models: EvalModels, prompt_ids: list[list[int]], prompt_texts: list[str], samples: list[Sample], texts: list[str],
                 records: list[dict[str, Any]], gen: GenerationConfig, judge: Judge, device: Any, show: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": judge.name, "kind": judge.kind}
    prompts_of = [prompt_texts[s.prompt_index] for s in samples]
    if judge.kind == "reward":
        r = rewards(judge, prompts_of, texts)
        for rec, v in zip(records, r):
            rec["reward"] = v
        out["reward_mean"] = sum(r) / len(r) if r else float("nan")
    with models.as_reference() as ref:
        if ref is not None:
            with stage("generate (reference)", len(prompt_ids), show) as advance:
                ref_samples = generate(ref, models.tokenizer, prompt_ids, gen, device, advance)
            ref_texts = [decode(models.tokenizer, s.ids) for s in ref_samples]
            for rec, t in zip(records, ref_texts):
                rec["reference_response"] = t
            if judge.kind == "reward":
                ref_r = rewards(judge, prompts_of, ref_texts)
                out["reference_reward_mean"] = sum(ref_r) / len(ref_r) if ref_r else float("nan")
            out |= win_rate(judge, prompts_of, texts, ref_texts, gen.seed)
    return out


def run_eval(models: EvalModels, data: str | list[str], cfg: RunConfig, settings: EvalSettings, output_dir: Path | None) -> dict[str, Any]:
    """Every number `preftune eval` reports, as one JSON-ready dict; files go under `output_dir` when given."""
    device = next(models.policy.parameters()).device
    split = load_split(data, models.tokenizer, cfg, settings.max_pairs)
    show = settings.show_progress
    chunk = cfg.train.logits_chunk
    pc, pr, rc, rr = score(models, split.pairs, settings.batch_size, chunk, device, "score pairs", show)
    lengths = lambda side: torch.tensor([len(getattr(p, side)) for p in split.pairs], dtype=torch.float64)  # noqa: E731
    scores = PairScores(pc, pr, rc, rr, lengths("chosen"), lengths("rejected"))
    result: dict[str, Any] = {"model": models.policy_name, "reference": models.reference_name, "data": data, "beta": settings.beta,
                              "preference": preference_summary(scores, settings.beta)}
    records: list[dict[str, Any]] = []
    if settings.generate or settings.judge is not None:
        judge = load_judge(settings.judge) if settings.judge is not None else None
        prompt_ids, prompt_texts = unique_prompts(split, cfg.generation.max_prompts)
        result["generation"], records = generation_report(models, prompt_ids, prompt_texts, cfg.generation, judge, settings.batch_size,
                                                          chunk, device, show)
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(output_dir / "eval.json", json.dumps(result, indent=1) + "\n")
        if records:
            write_jsonl(output_dir / "samples.jsonl", records, ensure_ascii=False)
        result["files"] = {"eval": str(output_dir / "eval.json"), **({"samples": str(output_dir / "samples.jsonl")} if records else {})}
    return result


def prompt_tokenizer(tokenizer: Any, cfg: RunConfig) -> PairTokenizer:
    return PairTokenizer(tokenizer, tokenize_settings(cfg.data))
