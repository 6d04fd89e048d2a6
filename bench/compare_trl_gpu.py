"""preftune against TRL 1.16's DPOTrainer on one CUDA GPU: full fine-tuning in bf16 mixed precision, side by side.

Models: SmolLM2-135M's architecture and a 1B-parameter Llama configuration, both randomly initialized once with a fixed
seed and saved (a step's speed does not depend on the weights' values; both trainers load the same weights, so their
first-step loss and log-probs must agree). Data: HH-RLHF harmless pairs as explicit-prompt standard records, max_length
512, the same pairs, batch and steps for both; the first `--warmup` steps are not timed. TRL is tried with gradient
checkpointing on/off × precomputed reference on/off, preftune with a live and a precomputed reference; the fastest of
each then runs A B A B. Each run is its own subprocess. Reports pairs/s, data tokens/s, peak GPU memory (max allocated),
first-step loss and logps/chosen, and useful model FLOP/s as a share of the bf16 matmul FLOP/s measured in the same run.

    python bench/compare_trl_gpu.py --tokenizer DIR --data train.jsonl [--models smollm2-135m,llama-1b]

DIR holds SmolLM2's tokenizer files and config.json (e.g. ~/.cache/preftune/models/smollm2-135m-instruct).
Writes bench/results/compare_trl_gpu_<model>.{json,md}; the last line is
`ratio tokens/s preftune/TRL: X.XX; peak memory preftune/TRL: Y.YY` for the last model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from compare_trl import launch, live_reference, tokens_per_pair, useful_flops, write_pairs  # noqa: E402  (the same FLOP accounting as the CPU benchmark)

MAX_LENGTH = 512
LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8)
PREFTUNE_VARIANTS = [{}, {"reference.strategy": "precomputed"}]


def build_model(name: str, tokenizer_dir: Path, out: Path) -> dict[str, int]:
    """Randomly initialized weights (seed 0) of `name` saved with the tokenizer; returns body / LM-head parameter counts."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    base = json.loads((tokenizer_dir / "config.json").read_text())
    cfg = LlamaConfig(**{k: v for k, v in base.items() if k in LlamaConfig().to_dict() and k not in ("architectures", "model_type", "dtype", "torch_dtype")})
    if name == "llama-1b":
        for k, v in LLAMA_1B.items():
            setattr(cfg, k, v)
        cfg.head_dim = cfg.hidden_size // cfg.num_attention_heads
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
    d, f, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    kv = cfg.num_key_value_heads * (d // cfg.num_attention_heads)
    return {"body": L * (2 * d * d + 2 * d * kv + 3 * d * f), "head": cfg.vocab_size * d, "total": sum(p.numel() for p in model.parameters())}


def bf16_matmul_flops(n: int = 8192, reps: int = 20) -> float:
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t)


# ---------------------------------------------------------------- workers

def worker_preftune(spec: dict[str, Any]) -> dict[str, Any]:
    from preftune.config import load_config
    from preftune.training.run import train

    over = [f"model.name_or_path={spec['model']}", f"data.train={spec['data']}", "data.eval_fraction=0", "train.shuffle=false",
            f"train.batch_size={spec['batch']}", f"train.max_steps={spec['steps']}", "train.learning_rate=5e-6", "train.warmup_ratio=0",
            f"data.max_length={MAX_LENGTH}", "data.max_prompt_length=null", "report=false", f"output_dir={spec['out']}",
            "train.log_every=1", "loss.name=dpo", "loss.beta=0.1", "train.mixed_precision=bf16", "data.num_proc=4",
            f"reference.cache_dir={spec['out']}/refcache", f"data.cache_dir={spec['out']}/tokcache"]
    over += [f"{k}={v}" for k, v in spec.get("options", {}).items()]
    t0 = time.perf_counter()
    train(load_config(None, over), show_progress=False)
    rows = [json.loads(line) for line in (Path(spec["out"]) / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r and "eval/loss" not in r]
    return {"step_seconds": [r["num_pairs"] / r["pairs_per_second"] for r in rows], "first_loss": rows[0]["loss"],
            "first_logps_chosen": rows[0]["logps/chosen"], "wall_seconds": time.perf_counter() - t0}


def worker_trl(spec: dict[str, Any]) -> dict[str, Any]:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(spec["model"])
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32, attn_implementation="sdpa")
    opts = spec.get("options", {})
    args = DPOConfig(output_dir=spec["out"], per_device_train_batch_size=spec["batch"], max_steps=spec["steps"], learning_rate=5e-6,
                     lr_scheduler_type="cosine", warmup_steps=0, max_grad_norm=1.0, logging_steps=1, report_to="none", beta=0.1,
                     save_strategy="no", train_sampling_strategy="sequential", dataloader_num_workers=0, bf16=True, fp16=False,
                     max_length=MAX_LENGTH, gradient_checkpointing=bool(opts.get("gradient_checkpointing")),
                     precompute_ref_log_probs=bool(opts.get("precompute_ref_log_probs")), seed=0,
                     use_liger_kernel=bool(opts.get("use_liger_kernel")), padding_free=bool(opts.get("padding_free")))
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            torch.cuda.synchronize()
            self.t = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t)

    rows = [json.loads(line) for line in Path(spec["data"]).read_text().splitlines()]
    t0 = time.perf_counter()
    trainer = DPOTrainer(model=model, args=args, processing_class=tok, train_dataset=datasets.Dataset.from_list(rows), callbacks=[Clock()])
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    return {"step_seconds": times, "first_loss": logs[0]["loss"], "first_logps_chosen": logs[0].get("logps/chosen"),
            "wall_seconds": time.perf_counter() - t0}


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    out = (worker_preftune if spec["trainer"] == "preftune" else worker_trl)(spec)
    out["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


# ---------------------------------------------------------------- orchestration

def summarize(run: dict[str, Any], warmup: int, per_pair: dict[str, float], params: dict[str, int], peak: float) -> dict[str, Any]:
    timed = run["step_seconds"][warmup:]
    pairs_s = run["batch"] * len(timed) / sum(timed)
    live = live_reference(run["trainer"], run.get("options", {}))
    flops = useful_flops(per_pair, params, "full", live)
    return {"trainer": run["trainer"], "options": run.get("options", {}), "live_reference": live, "pairs_per_s": pairs_s,
            "tokens_per_s": pairs_s * sum(per_pair.values()), "peak_gpu_gib": run["peak_gpu_gib"], "first_loss": run["first_loss"],
            "first_logps_chosen": run["first_logps_chosen"], "useful_flops_per_pair": flops, "model_flops_per_s": pairs_s * flops,
            "mfu": pairs_s * flops / peak, "wall_seconds": run["wall_seconds"]}


def compare(name: str, args: argparse.Namespace, work: Path, peak: float) -> dict[str, Any]:
    model_dir = work / name
    params = build_model(name, Path(args.tokenizer), model_dir)
    data = work / f"pairs-{name}.jsonl"
    per_pair = tokens_per_pair(write_pairs(args.batch * args.steps, data, Path(args.data), args.tokenizer))
    base = {"model": str(model_dir), "data": str(data), "batch": args.batch, "steps": args.steps}
    n = 0

    def go(trainer: str, options: dict[str, Any]) -> dict[str, Any]:
        nonlocal n
        n += 1
        spec = {**base, "trainer": trainer, "options": options, "out": str(work / f"{name}-{n}-{trainer}")}
        try:
            r = summarize(launch(spec, work / f"{name}-{n}.log", __file__), args.warmup, per_pair, params, peak)
        except RuntimeError as e:  # out of memory is a result too: that configuration cannot run this batch
            why = "out of GPU memory" if "OutOfMemoryError" in str(e) else str(e).strip().splitlines()[-1][:200]
            print(f"[{name}] {trainer} {options or 'defaults'}: failed ({why})", flush=True)
            return {"trainer": trainer, "options": options, "failed": why, "tokens_per_s": 0.0, "peak_gpu_gib": float("nan"), "mfu": 0.0}
        print(f"[{name}] {trainer} {options or 'defaults'}: {r['tokens_per_s']:.0f} tokens/s, {r['pairs_per_s']:.2f} pairs/s, "
              f"peak {r['peak_gpu_gib']:.2f} GiB, MFU {r['mfu']:.1%}, first loss {r['first_loss']:.4f}", flush=True)
        return r

    trl_variants = [{"gradient_checkpointing": g, "precompute_ref_log_probs": p} for g in (False, True) for p in (False, True)]
    # TRL at its fastest: Liger's fused kernels (pip install liger-kernel) and padding-free batches; a setting TRL or the
    # machine cannot run is recorded as failed, with why, and the others go on
    trl_variants += [{"gradient_checkpointing": False, "precompute_ref_log_probs": True, "use_liger_kernel": True},
                     {"gradient_checkpointing": False, "precompute_ref_log_probs": True, "padding_free": True},
                     {"gradient_checkpointing": False, "precompute_ref_log_probs": True, "use_liger_kernel": True, "padding_free": True}]
    if args.trl_variants == "no-gc":
        trl_variants = [v for v in trl_variants if not v["gradient_checkpointing"]]
    tried = [go("trl", v) for v in trl_variants]
    if all("failed" in r for r in tried):
        raise SystemExit(f"every TRL configuration failed on {name} with batch {args.batch}")
    best = max(tried, key=lambda r: r["tokens_per_s"])
    ours = [go("preftune", v) for v in PREFTUNE_VARIANTS]
    our_best = max(ours, key=lambda r: r["tokens_per_s"])
    runs: dict[str, list[dict[str, Any]]] = {"preftune": [], "trl": []}
    for _ in range(args.rounds):
        runs["preftune"].append(go("preftune", our_best["options"]))
        runs["trl"].append(go("trl", best["options"]))
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("pairs_per_s", "tokens_per_s", "peak_gpu_gib", "mfu")} for k, v in runs.items()}
    return {"model": name, "params": params, "tokens_per_pair": per_pair, "batch": args.batch, "steps": args.steps, "warmup": args.warmup,
            "trl_variants": tried, "preftune_variants": ours, "trl_best_options": best["options"], "preftune_best_options": our_best["options"],
            "runs": runs, "median": med, "ratio_tokens_per_s": med["preftune"]["tokens_per_s"] / med["trl"]["tokens_per_s"],
            "ratio_peak_memory": med["preftune"]["peak_gpu_gib"] / med["trl"]["peak_gpu_gib"]}


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    c = result["comparison"]
    lines = [f"Device: {m['gpu']}, torch {m['torch']}, transformers {m['transformers']}, TRL {m['trl']}; measured bf16 matmul "
             f"{m['bf16_matmul_tflops']:.0f} TFLOP/s. Model {c['model']} ({c['params']['total'] / 1e6:.0f}M parameters, random weights), "
             f"full fine-tuning, bf16 mixed precision, HH-RLHF harmless pairs, max_length {MAX_LENGTH}, batch {c['batch']} pairs, "
             f"{c['steps']} steps ({c['warmup']} not timed), {len(c['runs']['trl'])} rounds A B A B.", "",
             "| trainer | settings | pairs/s | data tokens/s | peak GPU memory GiB | model FLOP/s / bf16 matmul | first loss | first logps/chosen |",
             "|---|---|---|---|---|---|---|---|"]
    for trainer in ("preftune", "trl"):
        med, run0 = c["median"][trainer], c["runs"][trainer][0]
        settings = ", ".join(f"{k}={v}" for k, v in c[f"{trainer}_best_options"].items()) or "defaults"
        lines.append(f"| {trainer} | {settings} | {med['pairs_per_s']:.2f} | {med['tokens_per_s']:.0f} | {med['peak_gpu_gib']:.2f} | {med['mfu']:.1%} | "
                     f"{run0['first_loss']:.4f} | {run0['first_logps_chosen']:.2f} |")
    lines.append(f"| **ratio** preftune/TRL | | | **{c['ratio_tokens_per_s']:.2f}×** | **{c['ratio_peak_memory']:.2f}×** | | | |")
    lines += ["", "Configurations tried (one run each):", ""]
    for trainer in ("trl", "preftune"):
        for v in c[f"{trainer}_variants"]:
            what = f"failed: {v['failed']}" if "failed" in v else f"{v['tokens_per_s']:.0f} tokens/s, peak {v['peak_gpu_gib']:.2f} GiB, MFU {v['mfu']:.1%}"
            lines.append(f"- {trainer} {json.dumps(v['options']) if v['options'] else 'defaults'}: {what}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--tokenizer", default=str(Path.home() / ".cache/preftune/models/smollm2-135m-instruct"))
    ap.add_argument("--data", default=str(HERE.parents[1] / "shared/data/hh-rlhf-harmless/train.jsonl"))
    ap.add_argument("--models", default="smollm2-135m,llama-1b")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--trl-variants", choices=["all", "no-gc"], default="all")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return
    import torch
    import transformers
    import trl

    if not torch.cuda.is_available():
        sys.exit("compare_trl_gpu.py needs a CUDA GPU; bench/compare_trl.py is the CPU benchmark")
    peak = bf16_matmul_flops()
    machine = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
               "bf16_matmul_tflops": peak / 1e12}
    print(f"{machine['gpu']}: bf16 matmul {peak / 1e12:.0f} TFLOP/s", flush=True)
    last = None
    with tempfile.TemporaryDirectory(prefix="preftune-gpu-bench-") as d:
        for name in args.models.split(","):
            result = {"machine": machine, "comparison": compare(name, args, Path(d), peak)}
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / f"compare_trl_gpu_{name}.json").write_text(json.dumps(result, indent=1))
            (Path(args.out) / f"compare_trl_gpu_{name}.md").write_text(markdown(result))
            print(markdown(result), flush=True)
            last = result["comparison"]
    print(f"ratio tokens/s preftune/TRL: {last['ratio_tokens_per_s']:.2f}; peak memory preftune/TRL: {last['ratio_peak_memory']:.2f}")


if __name__ == "__main__":
    main()
