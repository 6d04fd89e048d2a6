"""Where a preftune training step's time goes on the CPU, in steady state, with compare_trl.py's settings (embedded
SmolLM2-135M-Instruct, HH-RLHF pairs kept whole within max_length 512, batch 4, DPO, precomputed reference computed
before step 1): torch.profiler over optimizer steps after warm-up, each operator's own time put in one part:

- linear: the decoder's matrix multiplies (forward and backward), LoRA's included
- lm_head: every operator on the vocabulary-sized logits (the head's matmuls, log-softmax, gather), forward and backward
- attention: scaled-dot-product attention, forward and backward; `attention_wasted` is the share of it spent on
  (query, key) blocks the packed mask discards (dense kernels compute every block of a row)
- norms: RMSNorm (forward under its module, backward by its autograd nodes)
- optimizer: everything under the optimizer step
- elementwise and other ops: everything else that is an operator (activations, residual adds, rotary, copies, ...)
- host: the step's wall time that no operator covers (Python, the autograd engine's own work, data collation)

    python bench/profile_cpu_step.py                      # LoRA r=8 on q,v and full fine-tuning
    python bench/profile_cpu_step.py --modes lora --steps 4

Writes bench/results/profile_cpu_step.json and prints a table per mode.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from compare_trl import MAX_LENGTH, MODEL, write_pairs  # noqa: E402

PARTS = ("linear", "lm_head", "attention", "norms", "elementwise", "optimizer", "host")
MATMUL = {"aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm", "aten::addmv", "aten::mv"}
ATTENTION = re.compile(r"scaled_dot_product|flash_attention|efficient_attention|_sdpa|flex_attention")
NORM_NODES = re.compile(r"(Pow|Rsqrt|Mean|RMSNorm)Backward")  # RMSNormBackward: train.fused_norm's node


def classify(event: Any, vocab: int) -> str:
    """The part an operator's own time belongs to (see the module docstring)."""
    chain, e = [], event
    while e is not None:
        chain.append(e.name)
        e = e.cpu_parent
    text = " | ".join(chain)
    if "Optimizer.step" in text:
        return "optimizer"
    shapes = str(getattr(event, "input_shapes", ""))
    if str(vocab) in shapes:
        return "lm_head"
    if ATTENTION.search(text):
        return "attention"
    if "preftune::norm" in text or NORM_NODES.search(text):
        return "norms"
    if event.name in MATMUL or re.search(r"(Mm|Addmm|Bmm)Backward", text):
        return "linear"
    return "elementwise"


def wasted_attention_share(batches: list[Any]) -> float:
    """Of the (query, key) scores a dense kernel computes for these batches' rows, the share the mask discards."""
    allowed = total = 0
    for b in batches:
        m = b.attention_mask
        if m is None or m.dim() != 4:
            continue
        ok = m if m.dtype == __import__("torch").bool else m == 0
        allowed += int(ok.sum())
        total += ok.numel()
    return 1 - allowed / total if total else 0.0


def profile_mode(mode: str, data: Path, work: Path, warmup: int, steps: int, batch: int) -> dict[str, Any]:
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function, schedule

    from preftune.config import load_config
    from preftune.training import setup as setup_module
    from preftune.training.callbacks import Callbacks
    from preftune.training.loop import fit

    over = [f"model.name_or_path={MODEL}", f"data.train={data}", "data.eval_fraction=0", "train.shuffle=false", f"train.batch_size={batch}",
            f"train.max_steps={warmup + steps}", "train.learning_rate=5e-6", "train.warmup_ratio=0", f"data.max_length={MAX_LENGTH}",
            "data.max_prompt_length=null", "report=false", f"output_dir={work / mode}", "loss.name=dpo", "reference.strategy=precomputed",
            "reference.precompute=upfront", f"reference.cache_dir={work / 'ref'}", f"data.cache_dir={work / 'tok'}"]
    if mode == "lora":
        over += ["model.lora.enabled=true", "model.lora.r=8", "model.lora.alpha=16", "model.lora.dropout=0", "model.lora.target_modules=[q_proj,v_proj]"]
    run = setup_module.setup_run(load_config(None, over))
    model = run.accelerator.unwrap_model(run.policy).model
    vocab = model.get_output_embeddings().weight.shape[0]
    for module in model.modules():  # a label around each RMSNorm's forward, so its operators can be told apart
        if type(module).__name__.endswith("RMSNorm"):
            def enter(m: Any, args: Any) -> None:
                m._pt_rf = record_function("preftune::norm")
                m._pt_rf.__enter__()

            def leave(m: Any, args: Any, out: Any) -> None:
                m._pt_rf.__exit__(None, None, None)

            module.register_forward_pre_hook(enter)
            module.register_forward_hook(leave)
    seen: list[Any] = []
    source_batch = run.stream.source.batch

    def keep(indices: list[int]) -> Any:
        b = source_batch(indices)
        seen.append(b)
        return b

    run.stream.source.batch = keep  # type: ignore[method-assign]  # records the profiled batches for the wasted-attention share
    window: dict[str, float] = {}
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, schedule=schedule(wait=warmup - 1, warmup=1, active=steps, repeat=1)) as tp:
        def on_step(step: int, metrics: dict) -> None:
            if step == warmup:
                window["start"] = time.perf_counter()
                seen.clear()
            if step == warmup + steps:
                window["end"] = time.perf_counter()
            tp.step()

        fit(run, Callbacks([on_step]), show_progress=False)
    wall_ms = 1e3 * (window["end"] - window["start"]) / steps
    parts = dict.fromkeys(PARTS, 0.0)
    for e in tp.events():
        if e.device_type.name != "CPU":
            continue
        ms = e.self_cpu_time_total / 1e3 / steps
        if not e.name.startswith(("ProfilerStep", "preftune::", "Optimizer.", "autograd::engine")):  # labels: their own time is host time
            parts[classify(e, vocab)] += ms
    ops = sum(v for k, v in parts.items() if k != "host")
    parts["host"] = max(0.0, wall_ms - ops)
    share = wasted_attention_share(seen[:steps * run.cfg.train.grad_accum])
    return {"mode": mode, "batch": batch, "steps_profiled": steps, "warmup_steps": warmup, "wall_ms_per_step": wall_ms,
            "ms_per_step": parts, "share": {k: v / wall_ms for k, v in parts.items()}, "attention_wasted_share_of_attention": share,
            "attention_wasted_ms_per_step": parts["attention"] * share, "layout": run.cfg.train.resolved_layout(),
            "top_ops": [{"name": e.key[:80], "ms_per_step": e.self_cpu_time_total / 1e3 / steps}
                        for e in sorted(tp.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:12]],
            "torch_threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default="lora,full")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--out", default=str(HERE / "results" / "profile_cpu_step.json"))
    args = ap.parse_args()
    import torch

    results = []
    with tempfile.TemporaryDirectory(prefix="preftune-profile-") as d:
        work = Path(d)
        data = work / "pairs.jsonl"
        write_pairs(args.batch * (args.warmup + args.steps), data)
        for mode in args.modes.split(","):
            r = profile_mode(mode, data, work, args.warmup, args.steps, args.batch)
            results.append(r)
            print(f"\n{mode}: {r['wall_ms_per_step']:.0f} ms per step (batch {args.batch}, {r['layout']} layout, {args.steps} steps after "
                  f"{args.warmup} warm-up)")
            for k in PARTS:
                print(f"  {k:12s} {r['ms_per_step'][k]:8.1f} ms  {r['share'][k]:6.1%}")
            print(f"  attention the packed mask discards: {r['attention_wasted_share_of_attention']:.1%} of attention "
                  f"({r['attention_wasted_ms_per_step']:.1f} ms per step)")
    out = {"command": "python bench/profile_cpu_step.py " + " ".join(sys.argv[1:]), "torch": torch.__version__, "model": MODEL,
           "max_length": MAX_LENGTH, "results": results}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
