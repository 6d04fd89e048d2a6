"""`preftune eval`: preference metrics on held-out pairs, optional generation (samples JSONL, lengths, KL estimate) and
judge rewards / win rates; written to OUTPUT/eval.json and OUTPUT/samples.jsonl."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import GenerationConfig, JudgeConfig, LossConfig, RunConfig
from ..data.pipeline import Sources, load_examples
from ..data.prepare import TokenizedSplit, tokenize_split
from ..data.stream import BatchSource
from ..data.records import as_text
from ..data.tokenize import PairTokenizer, TokenizedPair
from ..errors import DataError
from ..run_files import write_jsonl, write_text_atomic
from ..models.generate import Sample, generate
from .generation import sampled_kl, sample_lengths
from .judging import Judge, load_judge, rewards, win_rate
from .models import EvalModels
from ..scoring.batches import LossFunction, loss_on_batch, score
from .preference import preference_summary
from ..progress import stage


@dataclass(frozen=True)
class EvalSettings:
    """What `preftune eval` does besides the preference metrics. `loss` is the loss whose rewards are reported (a run's
    own, by default); `beta` replaces its β when given."""

    loss: LossConfig = field(default_factory=LossConfig)
    beta: float | None = None
    max_pairs: int | None = None
    batch_size: int = 8
    generate: bool = False
    judge: JudgeConfig | None = None
    show_progress: bool = True

    def loss_function(self, has_reference: bool) -> LossFunction:
        """The scoring loss: without a reference, the uniform one (rewards from the model's own log-probs). A run trained
        with KTO is scored on pairs through the rewards KTO trains, β·(log π − log πref), with DPO's loss of them."""
        loss = LossConfig(name="dpo", beta=self.loss.beta) if self.loss.unpaired() else self.loss
        return LossFunction.from_config(loss, beta=self.resolved_beta(), reference_free=None if has_reference else True)

    def resolved_beta(self) -> float:
        return self.beta if self.beta is not None else self.loss.resolved_beta()


def load_split(data: Sources, tokenizer: Any, cfg: RunConfig, max_pairs: int | None) -> TokenizedSplit:
    """The evaluation pairs, read, mapped and tokenized with the config's data settings."""
    settings = cfg.data.settings(train=data)
    loaded = load_examples(data, settings.load)
    examples = [e for e in loaded.examples if hasattr(e, "chosen")][:max_pairs]
    if not examples:
        raise DataError(f"{data}: no preference pairs to evaluate. Fix: point --data at pairs with prompt, chosen and rejected.")
    return tokenize_split(examples, tokenizer, settings)


SCORED = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected",
          "ref_logps/chosen", "ref_logps/rejected")


def score_pairs(models: EvalModels, pairs: list[TokenizedPair], loss: LossFunction, batch_size: int, chunk: int, device: Any, label: str,
                show: bool) -> dict[str, torch.Tensor]:
    """Per-pair values of training's scoring path (rewards, log-probs, reference log-probs), in the order of `pairs`."""
    source = BatchSource(pairs, batch_size, 0, False, models.tokenizer.pad_token_id, device=device, layout="packed")
    values = lambda b: loss_on_batch(models.policy, b, models.reference, loss, chunk)[1]  # noqa: E731
    with stage(label, len(pairs), show) as advance:
        _, per_pair = score(source.epoch(0), values, SCORED, on_batch=advance)
    order = per_pair.pop("index").argsort()
    return {k: v[order].double() for k, v in per_pair.items()}


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


def sample_logps(models: EvalModels, prompts: list[list[int]], samples: list[Sample], loss: LossFunction, batch_size: int, chunk: int, device: Any,
                 show: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π and log πref of each sample, in sample order."""
    pairs, slots = sample_pairs(prompts, samples)
    v = score_pairs(models, pairs, loss, batch_size, chunk, device, "sample log-probs", show)
    pc, pr, rc, rr = v["logps/chosen"], v["logps/rejected"], v.get("ref_logps/chosen"), v.get("ref_logps/rejected")

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
                      loss: LossFunction, batch_size: int, chunk: int, device: Any, show: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Generate from the policy (and from the reference when a judge compares them); lengths, KL estimate, judge numbers."""
    with stage("generate (policy)", len(prompt_ids), show) as advance:
        samples = generate(models.policy, models.tokenizer, prompt_ids, gen, device, advance)
    texts = [decode(models.tokenizer, s.ids) for s in samples]
    report: dict[str, Any] = {"prompts": len(prompt_ids), "samples": len(samples), "settings": gen.model_dump(), "length_tokens": sample_lengths(samples)}
    records = [{"prompt_index": s.prompt_index, "sample": s.sample_index, "prompt": prompt_texts[s.prompt_index], "response": t,
                "tokens": len(s.ids), "finished": s.finished} for s, t in zip(samples, texts)]
    if models.has_reference:
        lp, lref = sample_logps(models, prompt_ids, samples, loss, batch_size, chunk, device, show)
        assert lref is not None
        report["kl"] = sampled_kl(lp, lref, gen)
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
    with models.reference.as_model() as ref:
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


def run_eval(models: EvalModels, data: Sources, cfg: RunConfig, settings: EvalSettings, output_dir: Path | None) -> dict[str, Any]:
    """Every number `preftune eval` reports, as one JSON-ready dict; files go under `output_dir` when given."""
    device = next(models.policy.parameters()).device
    split = load_split(data, models.tokenizer, cfg, settings.max_pairs)
    show = settings.show_progress
    chunk = cfg.train.logits_chunk
    loss = settings.loss_function(models.has_reference)
    values = score_pairs(models, split.pairs, loss, settings.batch_size, chunk, device, "score pairs", show)
    lengths = lambda side: torch.tensor([len(getattr(p, side)) for p in split.pairs], dtype=torch.float64)  # noqa: E731
    result: dict[str, Any] = {"model": models.policy_name, "reference": models.reference_name, "data": str(data) if not isinstance(data, (str, list)) else data,
                              "loss": settings.loss.name if not settings.loss.components else "+".join(c.name for c in settings.loss.components),
                              "beta": settings.resolved_beta(),
                              "preference": preference_summary(values, lengths("chosen"), lengths("rejected"))}
    records: list[dict[str, Any]] = []
    if settings.generate or settings.judge is not None:
        judge = load_judge(settings.judge) if settings.judge is not None else None
        prompt_ids, prompt_texts = unique_prompts(split, cfg.generation.max_prompts)
        result["generation"], records = generation_report(models, prompt_ids, prompt_texts, cfg.generation, judge, loss, settings.batch_size,
                                                          chunk, device, show)
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(output_dir / "eval.json", json.dumps(result, indent=1) + "\n")
        if records:
            write_jsonl(output_dir / "samples.jsonl", records, ensure_ascii=False)
        result["files"] = {"eval": str(output_dir / "eval.json"), **({"samples": str(output_dir / "samples.jsonl")} if records else {})}
    return result


def prompt_tokenizer(tokenizer: Any, cfg: RunConfig) -> PairTokenizer:
    return PairTokenizer(tokenizer, cfg.data.tokenize_settings())
