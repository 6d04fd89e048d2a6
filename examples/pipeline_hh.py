"""The whole pipeline on the embedded model, through the Python API: SFT on the HH-RLHF harmless chosen responses,
then DPO (and, with --kto, KTO) on the HH pairs starting from (and referenced against) the SFT model, against DPO alone
given the same total training time. Each stage is stopped by a time budget (train.max_time), set-up included, so both arms spend the
same wall time. Preference accuracy is measured on the 200 HH test pairs, which no stage trains on.

    python examples/pipeline_hh.py [--minutes 15] [--sft-share 0.3] [--kto]   # about 2 (3 with --kto) x minutes + 2 minutes per evaluation

Writes docs/experiments/pipeline_hh.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "experiments"))
from common import RESULTS, ROOT, SHARED, markdown_table, need  # noqa: E402

import preftune  # noqa: E402

DATA = {"on_error": "skip", "eval_fraction": 0}
COMMON = {"model": {"name_or_path": "smollm2-135m-instruct", "lora": {"enabled": True, "r": 16, "alpha": 32, "target_modules": "all-linear"}},
          "train": {"batch_size": 8, "max_steps": 5000, "scheduler": "constant", "warmup_ratio": 0.002, "seed": 0}, "report": False}


def config(stage_lr: float, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**COMMON, **extra, "data": {**DATA, **data}, "train": {**COMMON["train"], "learning_rate": stage_lr}}


def run(fn: Any, cfg: dict[str, Any], out: Path, seconds: float) -> dict[str, Any]:
    t0 = time.time()
    result = fn(cfg, overrides={"train.max_time": seconds}, output_dir=out)  # stops after the step that ends past the budget
    steps = [h for h in result.history if "loss" in h]
    return {"folder": str(out), "seconds": round(time.time() - t0, 1), "steps": result.steps, "examples": int(sum(h["num_pairs"] for h in steps)),
            "first_loss": steps[0]["loss"], "last_loss": sum(h["loss"] for h in steps[-10:]) / len(steps[-10:])}


def accuracy(model: str, test: Path, reference_free: bool = False) -> dict[str, Any]:
    t0 = time.time()
    out = preftune.evaluate(model, str(test), config={"data": DATA}, reference_free=reference_free, batch_size=8)
    p = out["preference"]
    return {"model": model, "reference": out["reference"], "accuracy": p["rewards/accuracies"], "margin": p["rewards/margins"],
            "prefers_longer": p["prefers_longer"], "pairs": p["pairs"], "eval_seconds": round(time.time() - t0, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=15.0, help="training wall time of each arm, all stages counted")
    parser.add_argument("--sft-share", type=float, default=0.3, help="share of the chain's time given to SFT")
    parser.add_argument("--sft-lr", type=float, default=2e-4)
    parser.add_argument("--dpo-lr", type=float, default=2e-4, help="learning rate of DPO (and KTO)")
    parser.add_argument("--max-length", type=int, default=512, help="data.max_length (prompt + each response, tokens)")
    parser.add_argument("--max-prompt-length", type=int, default=384, help="data.max_prompt_length (the prompt's end is kept)")
    parser.add_argument("--kto", action="store_true", help="also run SFT -> KTO on the same SFT model, with the DPO stage's time")
    args = parser.parse_args()
    DATA.update(max_length=args.max_length, max_prompt_length=args.max_prompt_length)
    budget = args.minutes * 60
    train_file = str(need(SHARED / "hh-rlhf-harmless" / "train.jsonl"))
    test = need(SHARED / "hh-rlhf-harmless" / "test.jsonl")
    work = ROOT / "runs" / "pipeline_hh"
    dpo_cfg = config(args.dpo_lr, {"train": train_file}, loss={"name": "dpo", "beta": 0.1})
    results: dict[str, Any] = {"settings": {"minutes": args.minutes, "sft_share": args.sft_share, "sft_lr": args.sft_lr, "dpo_lr": args.dpo_lr,
                                            "data": DATA, **COMMON}}
    results["dpo_alone"] = run(preftune.train, dpo_cfg, work / "dpo-alone", budget)
    results["sft"] = run(preftune.sft, config(args.sft_lr, {"train": train_file}), work / "sft", budget * args.sft_share)
    chained = {**dpo_cfg, "model": {**dpo_cfg["model"], "name_or_path": str(work / "sft")}}
    results["sft_then_dpo"] = run(preftune.train, chained, work / "sft-dpo", budget - results["sft"]["seconds"])
    if args.kto:
        kto_cfg = {**chained, "loss": {"name": "kto", "beta": 0.1}}
        results["sft_then_kto"] = run(preftune.train, kto_cfg, work / "sft-kto", budget - results["sft"]["seconds"])
    results["eval"] = {"start (own log-probs)": accuracy("smollm2-135m-instruct", test, reference_free=True),
                       "sft (own log-probs)": accuracy(str(work / "sft"), test, reference_free=True),
                       "dpo alone (vs start)": accuracy(str(work / "dpo-alone"), test),
                       "sft → dpo (vs sft)": accuracy(str(work / "sft-dpo"), test)}
    if args.kto:
        results["eval"]["sft → kto (vs sft)"] = accuracy(str(work / "sft-kto"), test)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pipeline_hh.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
    rows = [[name, e["reference"] or "none", e["accuracy"], e["margin"], e["prefers_longer"], e["pairs"]] for name, e in results["eval"].items()]
    stages = [[name, results[name]["seconds"], results[name]["steps"], results[name]["examples"], results[name]["first_loss"], results[name]["last_loss"]]
              for name in ("dpo_alone", "sft", "sft_then_dpo", "sft_then_kto") if name in results]
    text = ("# SFT → DPO against DPO alone on HH-RLHF harmless (embedded SmolLM2-135M-Instruct, LoRA r=16)\n\n"
            f"Command: `python examples/pipeline_hh.py {' '.join(sys.argv[1:])}` on a 2-core CPU.\n\n"
            "## Training (wall seconds include set-up and saving)\n\n"
            + markdown_table(["stage", "seconds", "steps", "examples", "first loss", "last-10 loss"], stages)
            + "\n## Held-out preference accuracy on the 200 HH test pairs\n\n"
            + markdown_table(["model", "reference", "accuracy", "margin", "prefers longer", "pairs"], rows))
    (RESULTS / "pipeline_hh.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
