"""Where a preftune training step's time goes on a GPU: cProfile (Python side) and torch.profiler (kernels) over a short
full fine-tuning run in bf16 mixed precision. Prints the top functions and operators and the share of wall time the GPU
was busy.

    python bench/profile_gpu_step.py --model DIR --data pairs.jsonl [--steps 10] [--batch 16] [--options k=v ...]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out", default="/tmp/preftune-profile")
    ap.add_argument("--options", nargs="*", default=[])
    args = ap.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile

    from preftune.config import load_config
    from preftune.train.run import train

    over = [f"model.name_or_path={args.model}", f"data.train={args.data}", "data.eval_fraction=0", "train.shuffle=false",
            f"train.batch_size={args.batch}", f"train.max_steps={args.steps}", "train.warmup_ratio=0", "data.max_length=512",
            "data.max_prompt_length=null", "report=false", f"output_dir={args.out}", "train.mixed_precision=bf16", "loss.name=dpo",
            f"reference.cache_dir={args.out}/ref", f"data.cache_dir={args.out}/tok", *args.options]
    cfg = load_config(None, over)
    train(cfg, show_progress=False)  # warm: caches, kernels, allocator
    cfg = load_config(None, over + [f"output_dir={args.out}-2"])
    prof = cProfile.Profile()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as tp:
        t0 = time.perf_counter()
        prof.enable()
        train(cfg, show_progress=False)
        prof.disable()
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(25)
    print(s.getvalue())
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(40)
    print(s.getvalue())
    events = tp.key_averages()
    print(events.table(sort_by="self_cuda_time_total", row_limit=20))
    gpu_us = sum(e.self_device_time_total for e in events)
    print(f"wall {wall:.2f} s for the whole run (set-up included); GPU kernel time {gpu_us / 1e6:.2f} s")


if __name__ == "__main__":
    main()
