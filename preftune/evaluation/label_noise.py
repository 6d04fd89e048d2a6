"""The data doctor's checks with a model: each pair's log-probability margin under the reference (the start model),
and a label-noise score by cross-fitting. The pairs are split into K folds; for each fold a brief DPO run trains on
the other K−1 and scores the fold's held-out pairs; the implicit-reward margin m of a held-out pair gives the
out-of-fold probability σ(m) that its chosen response is preferred, and `suspect` = 1 − σ(m) (higher: the label is
more confidently contradicted). A pair is flagged `likely_mislabeled` by confident learning's rule (Northcutt et al.
2021), with each pair read as two examples, (chosen, rejected) labelled 1 and (rejected, chosen) labelled 0: when the
probability of the opposite label reaches the mean probability the models give the labels as given."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import RunConfig, load_config
from ..data.filters import content_key
from ..data.records import PreferencePair
from ..progress import stage
from ..run_files import write_jsonl
from .models import load_eval_models
from .run import EvalSettings, load_split, score_pairs

FOLD_DEFAULTS = [  # a brief LoRA run, as the quickstart trains the embedded model
    "model.lora.enabled=true", "model.lora.target_modules=all-linear", "train.learning_rate=5e-4", "train.batch_size=8",
    "train.warmup_ratio=0.1", "report=false", "data.eval_fraction=0",
    "data.filters.drop_duplicates=false", "data.filters.drop_near_identical=false", "data.on_error=skip",
]


@dataclass(frozen=True)
class CrossFit:
    """How the label-noise score is made: `folds` (K), `steps` of training per fold, the fold assignment's `seed`, and
    config overrides of the fold runs (on top of `FOLD_DEFAULTS` and a base config)."""

    folds: int = 5
    steps: int = 30
    seed: int = 0
    overrides: tuple[str, ...] = field(default_factory=tuple)


def as_record(p: PreferencePair) -> dict[str, Any]:
    return {"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}


def fold_of(n: int, folds: int, seed: int) -> list[int]:
    """Each pair's fold: a seeded shuffle dealt round-robin, so fold sizes differ by at most one."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    out = [0] * n
    for position, i in enumerate(order):
        out[i] = position % folds
    return out


def score_file(model: str, data: Path, cfg: RunConfig, reference_free: bool, show: bool) -> dict[str, dict[str, float]]:
    """Per-pair values of the pairs in `data`, scored by `model` (a run folder scores against its start), keyed by
    content: the log-probs, and the implicit-reward margin."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    models = load_eval_models(model, None, cfg.model.dtype, device, reference_free=reference_free, chunk=cfg.train.logits_chunk)
    split = load_split(str(data), models.tokenizer, cfg, None)
    loss = EvalSettings(loss=cfg.loss).loss_function(models.has_reference)
    values = score_pairs(models, split.pairs, loss, cfg.train.batch_size, cfg.train.logits_chunk, device, f"score {data.name}", show)
    out = {}
    for j, ex in enumerate(split.examples):
        out[content_key(ex)] = {"margin": float(values["rewards/margins"][j]), "logp_chosen": float(values["logps/chosen"][j]),
                                "logp_rejected": float(values["logps/rejected"][j])}
    return out


def model_checks(pairs: list[PreferencePair], model: str, folder: Path, crossfit: CrossFit = CrossFit(), config: str | None = None,
                 show: bool = True) -> list[dict[str, Any]]:
    """For each pair, in order: the reference's log-prob margin (log π(chosen) − log π(rejected), summed over response
    tokens; None when the pair could not be scored), the out-of-fold implicit-reward margin and probability that the
    chosen response is preferred, `suspect` = 1 − that probability, and its fold. Each fold's run is kept under
    `folder/folds/`."""
    from ..training.run import train

    if crossfit.folds < 2:
        raise ValueError(f"--folds {crossfit.folds}: cross-fitting needs at least 2 folds")
    folder.mkdir(parents=True, exist_ok=True)
    keys = [content_key(p) for p in pairs]
    folds = fold_of(len(pairs), crossfit.folds, crossfit.seed)
    base = [*FOLD_DEFAULTS, f"model.name_or_path={model}", f"train.max_steps={crossfit.steps}", f"train.seed={crossfit.seed}", *crossfit.overrides]
    every = folder / "pairs.jsonl"
    write_jsonl(every, [as_record(p) for p in pairs], ensure_ascii=False)
    ref_cfg = load_config(config, [*base, f"data.train={every}"])
    reference = score_file(model, every, ref_cfg, reference_free=True, show=show)
    held_out: dict[str, dict[str, float]] = {}
    with stage("cross-fitting folds", crossfit.folds, show) as advance:
        for k in range(crossfit.folds):
            fold_dir = folder / "folds" / f"fold-{k}"
            fold_dir.mkdir(parents=True, exist_ok=True)
            train_file, test_file = fold_dir / "train.jsonl", fold_dir / "heldout.jsonl"
            write_jsonl(train_file, [as_record(p) for p, f in zip(pairs, folds) if f != k], ensure_ascii=False)
            write_jsonl(test_file, [as_record(p) for p, f in zip(pairs, folds) if f == k], ensure_ascii=False)
            cfg = load_config(config, [*base, f"data.train={train_file}", f"output_dir={fold_dir / 'run'}"])
            train(cfg, show_progress=False)
            held_out |= score_file(str(fold_dir / "run"), test_file, cfg, reference_free=False, show=False)
            advance(1)
    out = []
    for i, key in enumerate(keys):
        ref, oof = reference.get(key), held_out.get(key)
        rec: dict[str, Any] = {"index": i, "fold": folds[i],
                               "reference_margin": None if ref is None else ref["logp_chosen"] - ref["logp_rejected"]}
        if oof is None:
            rec.update(oof_margin=None, p_chosen=None, suspect=None)
        else:
            p = 1 / (1 + math.exp(-oof["margin"]))
            rec.update(oof_margin=oof["margin"], p_chosen=p, suspect=1 - p)
        out.append(rec)
    return out


def confident_threshold(scores: list[dict[str, Any]]) -> float | None:
    """The mean probability the fold models give the labels as given (confident learning's per-class threshold; with
    each pair read both ways, both classes share it); None when nothing was scored."""
    ps = [s["p_chosen"] for s in scores if s["p_chosen"] is not None]
    return sum(ps) / len(ps) if ps else None


def likely_mislabeled(score: dict[str, Any], threshold: float | None) -> bool:
    """Whether the probability of the opposite label (`suspect`) reaches the threshold; never when the folds learned no
    preference (threshold at or below one half)."""
    return threshold is not None and threshold > 0.5 and score["suspect"] is not None and score["suspect"] >= threshold


def auroc(scores: list[float], positives: list[bool]) -> float:
    """The area under the ROC curve of `scores` for finding the `positives` (ties count one half)."""
    pos = [s for s, y in zip(scores, positives) if y]
    neg = [s for s, y in zip(scores, positives) if not y]
    if not pos or not neg:
        return math.nan
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def precision_at(scores: list[float], positives: list[bool], share: float) -> float:
    """The share of positives among the top `share` of scores."""
    k = max(1, round(share * len(scores)))
    top = sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
    return sum(positives[i] for i in top) / k


def merge_model_checks(report: dict[str, Any], scores: list[dict[str, Any]], crossfit: CrossFit) -> None:
    """Add the model checks to a doctor report's train records (in order) and summary: the scores, the
    `likely_mislabeled` flag, and what it counts."""
    from ..data.doctor import EXCLUDED

    threshold = confident_threshold(scores)
    train = [r for r in report["records"] if r["split"] == "train"]
    for rec, score in zip(train, scores, strict=True):
        rec.update({k: score[k] for k in ("reference_margin", "oof_margin", "p_chosen", "suspect", "fold")})
        if likely_mislabeled(score, threshold):
            rec["flags"].append("likely_mislabeled")
        rec["exclude"] = any(f in EXCLUDED for f in rec["flags"])
    summary = report["summary"]["train"]
    summary["flags"] = dict(sorted({**summary["flags"], **({"likely_mislabeled": n} if (n := sum("likely_mislabeled" in r["flags"] for r in train)) else {})}.items()))
    summary["excluded"] = sum(r["exclude"] for r in train)
    scored = [s for s in scores if s["suspect"] is not None]
    summary["label_noise"] = {"folds": crossfit.folds, "steps_per_fold": crossfit.steps, "seed": crossfit.seed, "scored": len(scored),
                              "threshold": threshold, "mean_suspect": sum(s["suspect"] for s in scored) / len(scored) if scored else None,
                              "learned": threshold is not None and threshold > 0.5}
