"""A round's model answering prompts: sampled answers to learn from, greedy answers to held-out prompts scored with their
mean and standard error, and a KL(round model ‖ start model) estimate from samples of the round model."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from .. import stats
from ..config import GenerationConfig, LossConfig, ModelConfig, RunConfig
from ..data.records import Text, as_text
from ..evaluation.generation import decode_usage, sampled_kl, sample_lengths
from ..evaluation.judging import Judge, rewards
from ..evaluation.models import EvalModels, load_eval_models
from ..evaluation.run import decode, prompt_tokenizer, sample_logps
from ..models.generate import Sample, generate
from ..models.loading import load_model, load_tokenizer
from ..run_files import write_json, write_jsonl
from ..progress import stage
from ..scoring.batches import LossFunction


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Answerer:
    """A loaded model and tokenizer answering prompts tokenized as training tokenizes them."""

    def __init__(self, cfg: RunConfig, model: torch.nn.Module, tokenizer: Any) -> None:
        self.model, self.tokenizer, self.encode = model, tokenizer, prompt_tokenizer(tokenizer, cfg)

    @classmethod
    def load(cls, cfg: RunConfig, model_path: str) -> "Answerer":
        model = load_model(ModelConfig(name_or_path=model_path, dtype=cfg.model.dtype, trust_remote_code=cfg.model.trust_remote_code), trainable=False)
        return cls(cfg, model.to(device()), load_tokenizer(model_path, cfg.model.trust_remote_code))

    def prompt_ids(self, prompts: list[Text]) -> list[list[int]]:
        return [self.encode.prompt_ids(p) for p in prompts]

    def answer(self, prompts: list[Text], gen: GenerationConfig, label: str, show: bool) -> tuple[list[Sample], list[str], dict[str, float]]:
        """`gen.num_samples` answers per prompt (one when greedy): samples, decoded texts, and the decode usage."""
        ids = self.prompt_ids(prompts)
        start = time.perf_counter()
        with stage(label, len(ids), show) as advance:
            samples = generate(self.model, self.tokenizer, ids, gen, device(), advance)
        usage = decode_usage(samples, gen.batch_size, time.perf_counter() - start)
        return samples, [decode(self.tokenizer, s.ids) for s in samples], usage


def evaluate_round(cfg: RunConfig, model_path: str, start_model: str | None, prompts: list[Text], judge: Judge, folder: Path, seed: int,
                   show: bool) -> dict[str, Any]:
    """Greedy answers to the held-out `prompts`, scored by `judge`: mean score with its standard error, lengths, decode
    usage; with `start_model` and `iterate.kl_prompts` > 0, also KL(model ‖ start model) estimated on that many held-out
    prompts answered once by plain sampling (temperature 1). Writes folder/eval.json and folder/eval_samples.jsonl."""
    n_kl = min(cfg.iterate.kl_prompts, len(prompts)) if start_model is not None else 0
    models = load_eval_models(model_path, start_model if n_kl else None, cfg.model.dtype, device(), reference_free=not n_kl, chunk=cfg.train.logits_chunk)
    answerer = Answerer(cfg, models.policy, models.tokenizer)
    greedy = cfg.generation.model_copy(update={"do_sample": False, "num_samples": 1})
    samples, texts, usage = answerer.answer(prompts, greedy, f"evaluate {folder.name}", show)
    prompt_texts = [as_text(p) for p in prompts]
    scores = rewards(judge, [prompt_texts[s.prompt_index] for s in samples], texts)
    mean, stderr = stats.mean_stderr(scores)
    result: dict[str, Any] = {"model": model_path, "prompts": len(prompts), "judge": judge.name, "greedy_judge_mean": mean,
                              "greedy_judge_stderr": stderr, "length_tokens": sample_lengths(samples), "generation": usage}
    if n_kl:
        result["kl_to_start"] = kl_to_reference(cfg, models, answerer, prompts[:n_kl], seed, show)
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "eval_samples.jsonl", ({"prompt": prompt_texts[s.prompt_index], "response": t, "score": v}
                                                for s, t, v in zip(samples, texts, scores)), ensure_ascii=False)
    write_json(folder / "eval.json", result)
    return result


def kl_to_reference(cfg: RunConfig, models: EvalModels, answerer: Answerer, prompts: list[Text], seed: int, show: bool) -> dict[str, object]:
    """KL(policy ‖ reference) in nats per response from one plain sample (temperature 1, no top-p/top-k) per prompt."""
    plain = cfg.generation.model_copy(update={"do_sample": True, "num_samples": 1, "temperature": 1.0, "top_p": 1.0, "top_k": 0, "seed": seed})
    samples, _, _ = answerer.answer(prompts, plain, "KL samples", show)
    loss = LossFunction.from_config(LossConfig())
    lp, lref = sample_logps(models, answerer.prompt_ids(prompts), samples, loss, cfg.train.batch_size, cfg.train.logits_chunk, device(), show)
    assert lref is not None, "kl_to_reference needs models with a reference"
    return sampled_kl(lp, lref, plain)
