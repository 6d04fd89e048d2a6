"""Experiment: length bias. On pairs whose chosen answer is the longer one, does training make the model's answers longer,
and does its reward margin follow length? `dpo` against `simpo` (length-normalized, reference-free).

Training pairs: HH-RLHF harmless train pairs whose chosen response is at least 30% and 40 characters longer than the
rejected one. The embedded SmolLM2-135M-Instruct is fully fine-tuned with each loss (lr 1e-5, batch 2, 32 steps; β 0.1
for DPO, SimPO's defaults β 2.0, γ/β 0.5). Then, for the start model and each trained model: the length of greedy answers
to 16 held-out HH test prompts (at most 256 new tokens), and on 64 HH test pairs (both length directions) the
correlation between the DPO-style reward margin β·(Δ log-ratio against the start model) and the length difference, and
how often the longer response is preferred. Writes docs/experiments/length_bias.{md,json,png}.

    python examples/experiments/length_bias.py            # about 12 minutes on a 2-core CPU
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, SHARED, markdown_table, need, train_run, write_jsonl  # noqa: E402

STEPS, BATCH, N_PROMPTS, N_PAIRS, MAX_NEW = 32, 2, 16, 64, 256


def longer_chosen_pairs(n: int) -> list[dict[str, Any]]:
    from preftune.config import DataConfig
    from preftune.data.pipeline import load_examples

    examples = load_examples(str(need(SHARED / "hh-rlhf-harmless" / "train.jsonl")), DataConfig(on_error="skip").load_settings()).examples
    keep = [e for e in examples if len(e.chosen) >= 1.3 * len(e.rejected) and len(e.chosen) - len(e.rejected) >= 40]
    return [{"prompt": e.prompt, "chosen": e.chosen, "rejected": e.rejected} for e in keep[:n]]


def measure(model: str, test: Path, out: Path, with_reference: bool) -> dict[str, Any]:
    from preftune.config import load_config
    from preftune.evaluation.models import load_eval_models
    from preftune.evaluation.run import EvalSettings, run_eval

    cfg = load_config(None, ["data.on_error=skip", "generation.do_sample=false", f"generation.max_new_tokens={MAX_NEW}",
                             f"generation.max_prompts={N_PROMPTS}", "generation.batch_size=8"])
    models = load_eval_models(model, None, reference_free=not with_reference)
    return run_eval(models, str(test), cfg, EvalSettings(beta=0.1, max_pairs=N_PAIRS, generate=True), out)


def main() -> None:
    t0 = time.time()
    work = ROOT / "runs" / "experiments"
    pairs = longer_chosen_pairs(STEPS * BATCH)
    train_file = write_jsonl(work / "hh-longer-chosen.jsonl", pairs)
    test = need(SHARED / "hh-rlhf-harmless" / "test.jsonl")
    results: dict[str, dict[str, Any]] = {"start": measure("smollm2-135m-instruct", test, work / "length-eval-start", with_reference=False)}
    for loss in ("dpo", "simpo"):
        out = work / f"length-{loss}"
        train_run([f"data.train={train_file}", "data.eval_fraction=0", f"loss.name={loss}", "train.learning_rate=1e-5", f"train.batch_size={BATCH}",
                   f"train.max_steps={STEPS}", "train.warmup_ratio=0.1", "train.seed=0", f"output_dir={out}", "report=true"])
        results[loss] = measure(str(out), test, out / "eval", with_reference=True)
    seconds = time.time() - t0
    mean_chosen = sum(len(p["chosen"]) for p in pairs) / len(pairs)
    mean_rejected = sum(len(p["rejected"]) for p in pairs) / len(pairs)
    rows = []
    for name, r in results.items():
        g, p = r["generation"]["length_tokens"], r["preference"]
        ref = name != "start"
        rows.append([name, g["mean"], g["median"], g["truncated_fraction"],
                     p["margin_length_correlation"] if ref else "–", p["prefers_longer"] if ref else "–",
                     p["rewards/accuracies"] if ref else "–", p["accuracy_per_token"]])
    table = markdown_table(["model", "greedy answer tokens (mean)", "median", "share cut at max", "corr(margin, length diff)",
                            "prefers longer", "held-out accuracy", "per-token log-prob accuracy"], rows)
    head = (f"Training pairs: {len(pairs)} HH harmless pairs with the chosen response longer (mean {mean_chosen:.0f} against {mean_rejected:.0f} "
            f"characters). SmolLM2-135M-Instruct full fine-tuning, lr 1e-5, batch {BATCH}, {STEPS} steps. Greedy answers to {N_PROMPTS} HH test "
            f"prompts (at most {MAX_NEW} new tokens); margins on the first {N_PAIRS} HH test pairs, against the start model, β 0.1. "
            f"Whole experiment: {seconds / 60:.1f} minutes.\n\n")
    (RESULTS / "length_bias.md").write_text(head + table)
    (RESULTS / "length_bias.json").write_text(json.dumps({"results": results, "seconds": seconds, "train_pairs": len(pairs)}, indent=1))
    plot(results, RESULTS / "length_bias.png")
    print(head + table)


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    means = [results[n]["generation"]["length_tokens"]["mean"] for n in names]
    corr = [results[n]["preference"]["margin_length_correlation"] if n != "start" else 0.0 for n in names]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    ax1.bar(names, means, color=["#7f7f7f", "#d62728", "#1f77b4"])
    ax1.set(title="mean greedy answer length (tokens)")
    ax2.bar(names[1:], corr[1:], color=["#d62728", "#1f77b4"])
    ax2.axhline(0, color="grey", linewidth=0.8)
    ax2.set(title="corr(reward margin, length difference)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
