"""Peak memory of a realistic LoRA run on the CPU: the embedded SmolLM2-135M-Instruct, LoRA r=16 on all linear layers,
8 pairs a step, the default max_length 1024, on the HH-RLHF harmless train file (long dialogues give rows of up to
~1,500 tokens), for the first --steps steps with seed 0; once per variant (activation checkpointing off, with glibc's
mmap threshold fixed at 128 KiB, selective, whole layers; attention per pair segment with and without selective checkpointing), each in its own process (its
peak RSS is its own), one after the other.

    python bench/peak_memory_hh.py                 # every variant below, 6 steps each
    python bench/peak_memory_hh.py --steps 3 --variants off,selective

Writes bench/results/peak_memory_hh.json and .md: peak RSS, median pairs/s over the steps after the first, and the
most data tokens in one step."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "hh-rlhf-harmless" / "train.jsonl"
VARIANTS = {"off": ["train.gradient_checkpointing=false"],
            "mmap128": ["train.gradient_checkpointing=false", "train.host_mmap_threshold_kib=128"],  # large tensors mmapped, returned when freed
            "selective": ["train.gradient_checkpointing=selective"],
            "whole_layers": ["train.gradient_checkpointing=true"],
            "segments": ["experimental.attention=segments", "train.gradient_checkpointing=false"],  # attention per pair segment
            "segments_selective": ["experimental.attention=segments", "train.gradient_checkpointing=selective"]}
CHILD = ("import resource, runpy, sys\n"
         "rss, sys.argv = sys.argv[1], ['preftune', *sys.argv[2:]]\n"
         "try:\n    runpy.run_module('preftune', run_name='__main__')\n"
         "finally:\n    open(rss, 'w').write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n")


def run(name: str, steps: int, work: Path, data: Path) -> dict[str, Any]:
    out, rss = work / name, work / f"{name}.rss"
    args = ["train", "model.name_or_path=smollm2-135m-instruct", "model.lora.enabled=true", "model.lora.r=16", "model.lora.alpha=32",
            "model.lora.target_modules=all-linear", f"data.train={data}", "data.eval_fraction=0.0", f"data.cache_dir={work / 'tok'}",
            "data.on_error=skip", "train.batch_size=8", f"train.max_steps={steps}", "train.seed=0", *VARIANTS[name],
            "train.log_every=1", "report=false", f"output_dir={out}"]
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", CHILD, str(rss), *args], check=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps_rows = [m for m in rows if "pairs_per_second" in m]
    return {"variant": name, "overrides": VARIANTS[name], "wall_seconds": time.perf_counter() - t0,
            "peak_rss_mib": int(rss.read_text()) / 1024, "steps": len(steps_rows),
            "median_pairs_per_s_after_first": statistics.median(m["pairs_per_second"] for m in steps_rows[1:]) if len(steps_rows) > 1 else None,
            "max_tokens_in_a_step": max(m.get("num_tokens", 0) for m in steps_rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--data", default=str(DATA))
    args = ap.parse_args()
    result: dict[str, Any] = {"command": "python bench/peak_memory_hh.py " + " ".join(sys.argv[1:]), "runs": []}
    with tempfile.TemporaryDirectory(prefix="preftune-peak-") as d:
        for name in args.variants.split(","):
            result["runs"].append(run(name, args.steps, Path(d), Path(args.data)))
            print(result["runs"][-1], flush=True)
    base = result["runs"][0]
    lines = [f"`{result['command']}`", "", "| variant | peak RSS MiB | vs first | median pairs/s (steps 2+) | vs first | most data tokens in a step |",
             "|---|---|---|---|---|---|"]
    for r in result["runs"]:
        speed = r["median_pairs_per_s_after_first"]
        lines.append(f"| {r['variant']} (`{' '.join(r['overrides'])}`) | {r['peak_rss_mib']:.0f} | {r['peak_rss_mib'] / base['peak_rss_mib']:.2f}× | "
                     f"{speed:.3f} | {speed / base['median_pairs_per_s_after_first']:.2f}× | {r['max_tokens_in_a_step']:.0f} |")
    (HERE / "results" / "peak_memory_hh.json").write_text(json.dumps(result, indent=1) + "\n")
    (HERE / "results" / "peak_memory_hh.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
