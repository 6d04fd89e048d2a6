"""Where a preftune training step's time goes, in steady state: torch.profiler over optimizer steps after warm-up only
(loading, reference precompute, fingerprinting and saving are outside the window). Full fine-tuning, bf16 mixed
precision on a GPU (float32 on CPU, where it runs too, for a check of the script). Prints per step: wall time, the
time the GPU ran kernels and how much of the wall that is, host-device synchronizations and copies; then the top
operators by device time and by host time. Writes the same as JSON with --json.

    python bench/profile_gpu_step.py --model DIR --data pairs.jsonl [--warmup 4] [--steps 6] [--batch 16] [--options k=v ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

SYNC_EVENTS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
COPY_EVENTS = {"Memcpy DtoH (Device -> Pageable)": "dtoh_pageable", "Memcpy DtoH (Device -> Pinned)": "dtoh_pinned",
               "Memcpy HtoD (Pageable -> Device)": "htod_pageable", "Memcpy HtoD (Pinned -> Device)": "htod_pinned"}


def summarize(events: Any, steps: int, wall_per_step: float, gpu: bool) -> dict[str, Any]:
    """Per-step totals from `key_averages()` of the profiled window."""
    device_us = sum(e.self_device_time_total for e in events) if gpu else 0.0
    counts = {e.key: e.count for e in events}
    out: dict[str, Any] = {"steps": steps, "wall_ms_per_step": 1e3 * wall_per_step,
                           "device_kernel_ms_per_step": device_us / 1e3 / steps,
                           "device_busy_share": (device_us / 1e6 / steps) / wall_per_step if gpu else None,
                           "syncs_per_step": sum(counts.get(k, 0) for k in SYNC_EVENTS) / steps,
                           "copies_per_step": {v: counts.get(k, 0) / steps for k, v in COPY_EVENTS.items()},
                           "kernel_launches_per_step": counts.get("cudaLaunchKernel", 0) / steps}
    top = sorted(events, key=lambda e: e.self_device_time_total, reverse=True)[:15] if gpu else []
    out["top_device_ops"] = [{"name": e.key[:90], "ms_per_step": e.self_device_time_total / 1e3 / steps, "calls_per_step": e.count / steps} for e in top]
    top_host = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
    out["top_host_ops"] = [{"name": e.key[:90], "ms_per_step": e.self_cpu_time_total / 1e3 / steps, "calls_per_step": e.count / steps} for e in top_host]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--warmup", type=int, default=4, help="steps run before the profiled window")
    ap.add_argument("--steps", type=int, default=6, help="steps profiled")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out", default="/tmp/preftune-profile")
    ap.add_argument("--json", help="write the summary here")
    ap.add_argument("--options", nargs="*", default=[])
    args = ap.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile, schedule

    from preftune.config import load_config
    from preftune.training.run import train

    gpu = torch.cuda.is_available()
    over = [f"model.name_or_path={args.model}", f"data.train={args.data}", "data.eval_fraction=0", "train.shuffle=false",
            f"train.batch_size={args.batch}", f"train.max_steps={args.warmup + args.steps}", "train.warmup_ratio=0",
            "data.max_length=512", "data.max_prompt_length=null", "report=false", f"output_dir={args.out}", "loss.name=dpo",
            *(["train.mixed_precision=bf16"] if gpu else []), "reference.strategy=precomputed", "data.on_error=skip",
            f"reference.cache_dir={args.out}/ref", f"data.cache_dir={args.out}/tok", *args.options]
    window: dict[str, float] = {}
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    with profile(activities=activities, schedule=schedule(wait=args.warmup - 1, warmup=1, active=args.steps, repeat=1)) as tp:
        def on_step(step: int, metrics: dict) -> None:
            if "loss" not in metrics:  # an evaluation
                return
            if gpu:
                torch.cuda.synchronize()
            if step == args.warmup:
                window["start"] = time.perf_counter()
            if step == args.warmup + args.steps:
                window["end"] = time.perf_counter()
            tp.step()

        train(load_config(None, over), show_progress=False, callbacks=[on_step])
    wall = (window["end"] - window["start"]) / args.steps
    result = summarize(tp.key_averages(), args.steps, wall, gpu)
    result |= {"device": torch.cuda.get_device_name() if gpu else "cpu", "torch": torch.__version__, "batch": args.batch, "options": args.options}
    print(f"{result['device']}: {args.steps} steps after {args.warmup} warm-up steps, batch {args.batch}, options {args.options}")
    print(f"wall {result['wall_ms_per_step']:.1f} ms/step; device kernels {result['device_kernel_ms_per_step']:.1f} ms/step"
          + (f" ({100 * result['device_busy_share']:.0f}% of the wall)" if gpu else ""))
    print(f"per step: {result['syncs_per_step']:.1f} synchronizations, {result['kernel_launches_per_step']:.0f} kernel launches, copies {result['copies_per_step']}")
    for title, key in (("device time", "top_device_ops"), ("host time", "top_host_ops")):
        if result[key]:
            print(f"\ntop operators by {title} (ms per step, calls per step):")
            for r in result[key]:
                print(f"  {r['ms_per_step']:9.2f}  {r['calls_per_step']:7.1f}  {r['name']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
