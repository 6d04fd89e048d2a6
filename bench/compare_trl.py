"""preftune against TRL 1.16's DPOTrainer, side by side, on the embedded SmolLM2-135M-Instruct and HH-RLHF pairs.

Each run is its own subprocess (so its peak RSS is its own); runs alternate A B A B so drift hits both. TRL is first
tried in each of its configurations (gradient checkpointing on/off × precomputed reference on/off) and the fastest
is the one compared. Both train on the same pairs (the first steps × batch of HH train, as explicit-prompt standard
records), the same batch, max_length 512, the same number of steps; the first `--warmup` steps are not timed.

    python bench/compare_trl.py --quick          # LoRA r=8 on q,v; under 10 minutes on a 2-core CPU
    python bench/compare_trl.py                  # LoRA and full fine-tuning, 9 steps (8 timed), 3 rounds; also tries preftune with
                                                 # torch.compile, gradient checkpointing, and foreach AdamW

Writes bench/results/compare_trl.json and compare_trl.md; the last line printed is
`ratio pairs/s preftune/TRL: X.XX; peak memory preftune/TRL: Y.YY` (LoRA).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data" / "hh-rlhf-harmless" / "train.jsonl"
MODEL = "smollm2-135m-instruct"
MAX_LENGTH = 512
PRE = {"reference.strategy": "precomputed", "reference.precompute": "upfront"}  # TRL's precompute_ref_log_probs: a pass before step 1
PREFTUNE_VARIANTS = [{}, PRE]  # defaults: packed layout, chunked LM head, live reference
# tried too without --quick, to show whether the options help here (the default stays off where they do not)
PREFTUNE_OPTIONAL = [{**PRE, "experimental.compile": "true", "experimental.static_shapes": "true"}, {**PRE, "train.gradient_checkpointing": "true"},
                     {**PRE, "train.gradient_checkpointing": "selective"}, {**PRE, "train.optimizer_impl": "foreach"},
                     {**PRE, "experimental.attention": "segments"}]


# ---------------------------------------------------------------- shared set-up

def write_pairs(n: int, path: Path, data: Path = DATA, tokenizer: str | None = None) -> dict[str, float]:
    """The first `n` pairs of `data` that both trainers keep whole (prompt + the longer response within max_length, so
    neither truncates nor drops anything and both train on the same tokens), written as standard explicit-prompt
    records; returns their token counts (with `tokenizer`, default the embedded SmolLM2's), the counts of both trainers."""
    from preftune.config import DataConfig
    from preftune.data.pipeline import load_examples
    from preftune.data.tokenize import PairTokenizer
    from preftune.models.loading import load_tokenizer, resolve_model_path

    tok = PairTokenizer(load_tokenizer(tokenizer or resolve_model_path(MODEL)), DataConfig(max_length=None, max_prompt_length=None).tokenize_settings())
    kept, pairs = [], []
    for e in load_examples(str(data), DataConfig(on_error="skip").load_settings()).examples:
        t = tok(e)
        if t is not None and len(t.prompt) + max(len(t.chosen), len(t.rejected)) <= MAX_LENGTH:
            kept.append(e)
            pairs.append(t)
        if len(kept) == n:
            break
    if len(kept) < n:
        raise SystemExit(f"{data}: only {len(kept)} pairs fit max_length {MAX_LENGTH} whole; ask for fewer steps or a smaller batch")
    path.write_text("".join(json.dumps({"prompt": e.prompt, "chosen": e.chosen, "rejected": e.rejected}) + "\n" for e in kept))
    return {"pairs": len(pairs), "prompt": sum(len(p.prompt) for p in pairs), "chosen": sum(len(p.chosen) for p in pairs),
            "rejected": sum(len(p.rejected) for p in pairs)}


def tokens_per_pair(tokens: dict[str, float]) -> dict[str, float]:
    """Mean prompt / chosen / rejected tokens of a pair, from `write_pairs`'s totals."""
    return {k: tokens[k] / tokens["pairs"] for k in ("prompt", "chosen", "rejected")}


def matmul_flops(seconds: float = 3.0, n: int = 2048) -> float:
    """Measured float32 matmul FLOP/s of this machine with torch's default threads (the best of several timings)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def model_params() -> dict[str, int]:
    """Parameters of the body (everything but the embedding / tied LM head) and of the LM head."""
    from transformers import AutoConfig

    from preftune.models.loading import resolve_model_path

    c = AutoConfig.from_pretrained(resolve_model_path(MODEL))
    head = c.vocab_size * c.hidden_size
    d, f, L = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    kv = c.num_key_value_heads * (d // c.num_attention_heads)
    body = L * (2 * d * d + 2 * d * kv + 3 * d * f)
    return {"body": body, "head": head}


def live_reference(trainer: str, options: dict[str, Any]) -> bool:
    """Whether the run computes the reference's forward pass at every step (not precomputed before training)."""
    if trainer == "trl":
        return not options.get("precompute_ref_log_probs")
    # preftune's lazy table computes a pair's reference in the step that first uses it: live, in a run that sees each pair once
    return options.get("reference.strategy") != "precomputed" or options.get("reference.precompute", "lazy") == "lazy"


def useful_flops(tokens: dict[str, float], params: dict[str, int], mode: str, live_ref: bool) -> float:
    """Model FLOPs one pair's step needs: the policy's forward and backward over the pair's tokens with the prompt once
    (6·N per token for full fine-tuning; 4·N for LoRA, whose frozen weights need no weight gradients), the reference's
    forward (2·N per token) when it runs during the step, and the LM head over response tokens only. Attention's own
    FLOPs are left out."""
    k = (6 if mode == "full" else 4) + (2 if live_ref else 0)
    all_tokens = tokens["prompt"] + tokens["chosen"] + tokens["rejected"]
    response = tokens["chosen"] + tokens["rejected"]
    return k * params["body"] * all_tokens + k * params["head"] * response


# ---------------------------------------------------------------- workers (one run each, in a subprocess)

def worker_preftune(spec: dict[str, Any]) -> dict[str, Any]:
    from preftune.config import load_config
    from preftune.training.run import train

    over = [f"model.name_or_path={MODEL}", f"data.train={spec['data']}", "data.eval_fraction=0", "train.shuffle=false",
            f"train.batch_size={spec['batch']}", f"train.max_steps={spec['steps']}", "train.learning_rate=5e-6", "train.warmup_ratio=0",
            f"data.max_length={MAX_LENGTH}", "data.max_prompt_length=null", "report=false", f"output_dir={spec['out']}",
            "train.log_every=1", "loss.name=dpo", "loss.beta=0.1"]
    if spec["mode"] == "lora":
        over += ["model.lora.enabled=true", "model.lora.r=8", "model.lora.alpha=16", "model.lora.dropout=0", "model.lora.target_modules=[q_proj,v_proj]"]
    for k, v in spec.get("options", {}).items():
        over.append(f"{k}={v}")
    t0 = time.perf_counter()
    train(load_config(None, over), show_progress=False)
    total = time.perf_counter() - t0
    rows = [json.loads(line) for line in (Path(spec["out"]) / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    rows = [r for r in rows if "loss" in r]
    step_seconds = [r["num_pairs"] / r["pairs_per_second"] for r in rows]
    return {"step_seconds": step_seconds, "first_loss": rows[0]["loss"], "first_logps_chosen": rows[0]["logps/chosen"], "wall_seconds": total}


def worker_trl(spec: dict[str, Any]) -> dict[str, Any]:
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from preftune.models.loading import resolve_model_path

    path = resolve_model_path(MODEL)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    opts = spec.get("options", {})
    args = DPOConfig(output_dir=spec["out"], per_device_train_batch_size=spec["batch"], max_steps=spec["steps"], learning_rate=5e-6,
                     lr_scheduler_type="cosine", warmup_steps=0, max_grad_norm=1.0, logging_steps=1, report_to="none", beta=0.1,
                     use_cpu=True, save_strategy="no", train_sampling_strategy="sequential", dataloader_num_workers=0, bf16=False, fp16=False,
                     max_length=MAX_LENGTH, gradient_checkpointing=bool(opts.get("gradient_checkpointing")),
                     precompute_ref_log_probs=bool(opts.get("precompute_ref_log_probs")), seed=0)
    peft_config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]) if spec["mode"] == "lora" else None
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            self.t = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            times.append(time.perf_counter() - self.t)

    rows = [json.loads(line) for line in Path(spec["data"]).read_text().splitlines()]
    t0 = time.perf_counter()
    trainer = DPOTrainer(model=model, args=args, processing_class=tok, train_dataset=datasets.Dataset.from_list(rows),
                         peft_config=peft_config, callbacks=[Clock()])
    trainer.train()
    total = time.perf_counter() - t0
    logs = [h for h in trainer.state.log_history if "loss" in h]
    return {"step_seconds": times, "first_loss": logs[0]["loss"], "first_logps_chosen": logs[0].get("logps/chosen"), "wall_seconds": total}


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    fn = worker_preftune if spec["trainer"] == "preftune" else worker_trl
    out = fn(spec)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


# ---------------------------------------------------------------- orchestration

def launch(spec: dict[str, Any], log: Path, script: str = __file__, tree: str | None = None) -> dict[str, Any]:
    """Run one worker (`script --worker SPEC`) in its own process, importing preftune from `tree` when given; its log
    goes to `log`, its JSON result comes back."""
    caches = Path(spec["out"] + "-caches")  # each run its own: no run reuses tokenized data or reference log-probs of another
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "PREFTUNE_CACHE": str(caches / "preftune"),
           "PREFTUNE_DATA_CACHE": str(caches / "preftune-data"), "HF_DATASETS_CACHE": str(caches / "datasets")}
    if tree:
        env["PYTHONPATH"] = str(Path(tree).resolve())
    proc = subprocess.run([sys.executable, script, "--worker", json.dumps(spec)], capture_output=True, text=True, env=env)
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{spec['trainer']} run failed (log {log}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**spec, **result}


def summarize(run: dict[str, Any], warmup: int, batch: int, per_pair: dict[str, float], params: dict[str, int], machine: float) -> dict[str, Any]:
    timed = run["step_seconds"][warmup:]
    pairs_s = batch * len(timed) / sum(timed)
    live = live_reference(run["trainer"], run.get("options", {}))
    flops_per_pair = useful_flops(per_pair, params, run["mode"], live)
    return {"trainer": run["trainer"], "options": run.get("options", {}), "live_reference": live, "useful_flops_per_pair": flops_per_pair,
            "pairs_per_s": pairs_s, "tokens_per_s": pairs_s * sum(per_pair.values()),
            "peak_rss_mib": run["peak_rss_mib"], "first_loss": run["first_loss"], "first_logps_chosen": run["first_logps_chosen"],
            "model_flops_per_s": pairs_s * flops_per_pair, "mfu": pairs_s * flops_per_pair / machine, "wall_seconds": run["wall_seconds"]}


def compare(mode: str, batch: int, steps: int, warmup: int, rounds: int, trl_variants: list[dict[str, bool]], work: Path,
            machine: float, params: dict[str, int], preftune_variants: list[dict[str, Any]] = PREFTUNE_VARIANTS,
            chosen: tuple[dict[str, Any], dict[str, Any]] | None = None) -> dict[str, Any]:
    """One mode's comparison: each trainer's configurations tried once, then the fastest of each in `rounds` alternating
    rounds; `chosen` = (preftune options, TRL options) skips the trying and compares those."""
    data = work / f"pairs-{mode}.jsonl"
    tokens = write_pairs(batch * steps, data)
    per_pair = tokens_per_pair(tokens)
    base = {"mode": mode, "batch": batch, "steps": steps, "data": str(data)}
    n = 0

    def go(trainer: str, options: dict[str, Any]) -> dict[str, Any]:
        nonlocal n
        n += 1
        spec = {**base, "trainer": trainer, "options": options, "out": str(work / f"{mode}-{n}-{trainer}")}
        print(f"[{mode}] run {n}: {trainer} {options or ''}", flush=True)
        r = summarize(launch(spec, work / f"{mode}-{n}-{trainer}.log"), warmup, batch, per_pair, params, machine)
        print(f"    {r['pairs_per_s']:.3f} pairs/s, peak RSS {r['peak_rss_mib']:.0f} MiB, first loss {r['first_loss']:.4f}", flush=True)
        return r

    if chosen is None:
        tried = [go("trl", v) for v in trl_variants]
        best = max(tried, key=lambda r: r["pairs_per_s"])
        ours = [go("preftune", v) for v in preftune_variants]
        our_best = max(ours, key=lambda r: r["pairs_per_s"])
    else:
        tried, ours = [], []
        our_best, best = {"options": chosen[0]}, {"options": chosen[1]}
    runs: dict[str, list[dict[str, Any]]] = {"preftune": [], "trl": []}
    for _ in range(rounds):
        runs["preftune"].append(go("preftune", our_best["options"]))
        runs["trl"].append(go("trl", best["options"]))
    med = medians(runs)
    return {"spread": spread(runs), "mode": mode, "batch": batch, "steps": steps, "warmup_steps": warmup, "pairs": tokens["pairs"], "tokens_per_pair": per_pair,
            "trl_variants": tried, "trl_best_options": best["options"],
            "preftune_variants": ours, "preftune_best_options": our_best["options"], "runs": runs, "median": med,
            "ratio_pairs_per_s": med["preftune"]["pairs_per_s"] / med["trl"]["pairs_per_s"],
            "ratio_peak_rss": med["preftune"]["peak_rss_mib"] / med["trl"]["peak_rss_mib"],
            "first_loss": {"preftune": runs["preftune"][0]["first_loss"], "trl": runs["trl"][0]["first_loss"]},
            "first_logps_chosen": {"preftune": runs["preftune"][0]["first_logps_chosen"], "trl": runs["trl"][0]["first_logps_chosen"]}}


def medians(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    return {k: {m: statistics.median(r[m] for r in v) for m in ("pairs_per_s", "tokens_per_s", "peak_rss_mib", "mfu", "model_flops_per_s")}
            for k, v in runs.items()}


def spread(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Min, median and max pairs/s of each trainer over the rounds, and the per-round ratio preftune/TRL (round i's
    preftune run against round i's TRL run, which ran right after it) with its min and max."""
    out: dict[str, Any] = {k: {"min": min(r["pairs_per_s"] for r in v), "median": statistics.median(r["pairs_per_s"] for r in v),
                               "max": max(r["pairs_per_s"] for r in v)} for k, v in runs.items()}
    ratios = [a["pairs_per_s"] / b["pairs_per_s"] for a, b in zip(runs["preftune"], runs["trl"], strict=True)]
    out["ratio_by_round"] = ratios
    out["ratio_min"], out["ratio_max"] = min(ratios), max(ratios)
    return out


def rescore(result: dict[str, Any]) -> dict[str, Any]:
    """Recompute the FLOP accounting of a stored result from its measured pairs/s (no run is repeated)."""
    machine, params = result["machine"]["matmul_gflops"] * 1e9, result["model_params"]
    for c in result["comparisons"]:
        for r in [*c["trl_variants"], *c["preftune_variants"], *c["runs"]["preftune"], *c["runs"]["trl"]]:
            r["live_reference"] = live_reference(r["trainer"], r["options"])
            r["useful_flops_per_pair"] = useful_flops(c["tokens_per_pair"], params, c["mode"], r["live_reference"])
            r["model_flops_per_s"] = r["pairs_per_s"] * r["useful_flops_per_pair"]
            r["mfu"] = r["model_flops_per_s"] / machine
        c["median"] = medians(c["runs"])
        c["spread"] = spread(c["runs"])
    return result


def write_results(result: dict[str, Any], out: Path, name: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    (out / f"{name}.md").write_text(markdown(result))


def markdown(result: dict[str, Any]) -> str:
    lines = [f"Machine: {result['machine']['cpu']}, {result['machine']['threads']} threads, torch {result['machine']['torch']}, "
             f"TRL {result['machine']['trl']}; measured float32 matmul {result['machine']['matmul_gflops']:.1f} GFLOP/s. "
             f"Model {MODEL}, HH-RLHF harmless pairs, max_length {MAX_LENGTH}, {result['args']}.", "",
             "| mode | trainer | settings | pairs/s | data tokens/s | peak RSS MiB | model FLOP/s / matmul | first loss | first logps/chosen |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in result["comparisons"]:
        for trainer in ("preftune", "trl"):
            m = c["median"][trainer]
            run0 = c["runs"][trainer][0]
            chosen = c[f"{trainer}_best_options"]
            settings = ", ".join(f"{k}={v}" for k, v in chosen.items()) or "defaults"
            lines.append(f"| {c['mode']} | {trainer} | {settings} | {m['pairs_per_s']:.3f} | {m['tokens_per_s']:.0f} | {m['peak_rss_mib']:.0f} | "
                         f"{m['mfu']:.1%} | {run0['first_loss']:.4f} | {run0['first_logps_chosen']:.2f} |")
        lines.append(f"| {c['mode']} | **ratio** preftune/TRL | | **{c['ratio_pairs_per_s']:.2f}×** | | **{c['ratio_peak_rss']:.2f}×** | | | |")
    lines += ["", "Spread over the rounds (pairs/s; each round runs preftune then TRL):", "",
              "| mode | preftune min / median / max | TRL min / median / max | ratio per round (min – max) |", "|---|---|---|---|"]
    for c in result["comparisons"]:
        sp = c.get("spread") or spread(c["runs"])
        fmt = lambda d: f"{d['min']:.3f} / {d['median']:.3f} / {d['max']:.3f}"  # noqa: E731
        lines.append(f"| {c['mode']} | {fmt(sp['preftune'])} | {fmt(sp['trl'])} | {', '.join(f'{r:.2f}' for r in sp['ratio_by_round'])} "
                     f"({sp['ratio_min']:.2f} – {sp['ratio_max']:.2f}) |")
    if "options_from" in result:
        o = result["options_from"]
        lines += ["", f"Settings compared: the fastest of each trainer in {o['file']} (measured at {o['commit']}, {o['date']}); not tried again.", ""]
    else:
        lines += ["", "Configurations tried before the A B A B rounds (one run each; the fastest of each trainer is compared):", ""]
    for c in result["comparisons"]:
        for trainer in ("trl", "preftune"):
            for v in c[f"{trainer}_variants"]:
                lines.append(f"- {c['mode']} {trainer} {json.dumps(v['options']) if v['options'] else 'defaults'}: "
                             f"{v['pairs_per_s']:.3f} pairs/s, peak RSS {v['peak_rss_mib']:.0f} MiB, whole run {v['wall_seconds']:.0f} s")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="LoRA only, 3 steps of 4 pairs (1 warm-up), 2 rounds: under 10 minutes "
                    "(the full mode: 9 steps, 8 of them timed, 3 rounds)")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--modes", help="comma-separated: lora,full")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--options-from", metavar="JSON", help="compare the fastest settings a stored full comparison found (each mode's "
                    "preftune_best_options / trl_best_options) without trying every configuration again: about a third of the time")
    ap.add_argument("--rescore", metavar="JSON", help="recompute the FLOP accounting of a stored result and rewrite its .json/.md")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return
    if args.rescore:
        path = Path(args.rescore)
        result = rescore(json.loads(path.read_text()))
        write_results(result, path.parent, path.stem)
        print(markdown(result))
        return
    if not DATA.exists():
        sys.exit(f"{DATA} is missing: the benchmark needs ../shared/data beside the checkout")
    quick = args.quick
    batch, steps, rounds = args.batch or 4, args.steps or (3 if quick else 9), args.rounds or (2 if quick else 3)  # full: 8 timed steps
    modes = (args.modes or ("lora" if quick else "lora,full")).split(",")
    variants = [{"gradient_checkpointing": g, "precompute_ref_log_probs": p} for g in (False, True) for p in (False, True)]
    if quick:
        variants = [v for v in variants if not (v["gradient_checkpointing"] and v["precompute_ref_log_probs"])]
    import torch
    import trl

    machine = matmul_flops()
    params = model_params()
    from protocol import provenance

    command = "python bench/compare_trl.py " + " ".join(sys.argv[1:])
    result: dict[str, Any] = {"protocol": provenance(command.strip(), rounds=rounds, timed_steps=steps - 1, matmul_gflops=machine / 1e9),
                              "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                                          "trl": trl.__version__, "matmul_gflops": machine / 1e9},
                              "args": f"batch {batch} pairs, {steps} steps ({1} warm-up, not timed), {rounds} rounds A B A B",
                              "model_params": params, "comparisons": []}
    t0 = time.time()
    chosen: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    if args.options_from:
        stored = json.loads(Path(args.options_from).read_text())
        chosen = {c["mode"]: (c["preftune_best_options"], c["trl_best_options"]) for c in stored["comparisons"]}
        result["options_from"] = {"file": Path(args.options_from).name, "commit": stored["protocol"]["commit"], "date": stored["protocol"]["date"]}
    with tempfile.TemporaryDirectory(prefix="preftune-bench-") as d:
        for mode in modes:
            ours = PREFTUNE_VARIANTS if quick else PREFTUNE_VARIANTS + PREFTUNE_OPTIONAL
            result["comparisons"].append(compare(mode, batch, steps, 1, rounds, variants, Path(d), machine, params, ours, chosen.get(mode)))
    result["seconds"] = time.time() - t0
    write_results(result, Path(args.out), "compare_trl_quick" if quick else "compare_trl")
    print(markdown(result))
    lora = next((c for c in result["comparisons"] if c["mode"] == "lora"), result["comparisons"][0])
    print(f"ratio pairs/s preftune/TRL: {lora['ratio_pairs_per_s']:.2f}; peak memory preftune/TRL: {lora['ratio_peak_rss']:.2f}")


if __name__ == "__main__":
    main()
