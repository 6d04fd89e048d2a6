"""Where `preftune iterate`'s batched sampling spends its time on the CPU, with the example's settings
(examples/iterate_arithmetic.yaml: embedded SmolLM2-135M-Instruct, K samples per prompt, generation.batch_size prompts a
batch, max_new_tokens, temperature): tokens/s, the share of decode row-steps spent on rows that had already stopped
(a batch decodes until its longest answer ends), and a torch.profiler split of one sampling pass:

- linear: the decoder's matrix multiplies; lm_head: operators on vocabulary-sized tensors (the head, softmax, sampling)
- attention: scaled-dot-product attention over the KV cache; cache: concatenations and copies growing the cache
- elementwise and other ops: the rest (norms, activations, rotary, ...); host: wall time no operator covers
  (Python in generate's loop, logits processors' bookkeeping)

Then the same sampling at other batch sizes, each with preftune's decode loop that drops finished rows
(`generation.drop_finished: true`) and with transformers' `generate`, to show the trade between matmul efficiency and
idle rows. Note: with dropping, `idle_row_share` counts the row-steps a padded batch would have spent, not ones computed.

    python bench/profile_generation.py                   # 64 questions, batch sizes 4, 16, 64
    python bench/profile_generation.py --prompts 32 --batch-sizes 16

Writes bench/results/profile_generation.json and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "iterate_arithmetic.yaml"
PARTS = ("linear", "lm_head", "attention", "cache", "elementwise", "host")
MATMUL = {"aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm"}


def classify(event: Any, vocab: int) -> str:
    """The part an operator's own time belongs to (see the module docstring)."""
    shapes, name = str(getattr(event, "input_shapes", "")), event.key
    if str(vocab) in shapes:
        return "lm_head"
    if "scaled_dot_product" in name or "_sdpa" in name or "flash_attention" in name:
        return "attention"
    if name in MATMUL:
        return "linear"
    if name in ("aten::cat", "aten::index_select", "aten::index_copy_"):
        return "cache"
    return "elementwise"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--batch-sizes", default="4,16,64", help="prompts per generation batch to compare (comma-separated)")
    ap.add_argument("--out", default=str(HERE / "results" / "profile_generation.json"))
    args = ap.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile

    from preftune.config import load_config
    from preftune.data.synthetic import arithmetic_questions
    from preftune.iterate.answers import Answerer

    cfg = load_config(str(EXAMPLE))
    gen = cfg.generation.model_copy(update={"do_sample": True, "num_samples": cfg.iterate.samples_per_prompt})
    answerer = Answerer.load(cfg, cfg.model.name_or_path)
    vocab = answerer.model.get_output_embeddings().weight.shape[0]
    prompts = [[{"role": "user", "content": q}] for q in arithmetic_questions(args.prompts, 123)]
    answerer.answer(prompts[:gen.batch_size], gen, "warm-up", False)
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as tp:
        _, _, usage = answerer.answer(prompts, gen, "profiled", False)
    wall = time.perf_counter() - start
    parts = dict.fromkeys(PARTS, 0.0)
    for e in tp.key_averages(group_by_input_shape=True):  # aggregated by operator and shapes: fast to read back
        if not e.key.startswith("ProfilerStep"):
            parts[classify(e, vocab)] += e.self_cpu_time_total / 1e6
    parts["host"] = max(0.0, wall - sum(parts.values()))
    result: dict[str, Any] = {"example": str(EXAMPLE.relative_to(HERE.parent)), "prompts": args.prompts, "samples_per_prompt": gen.num_samples,
                              "max_new_tokens": gen.max_new_tokens, "temperature": gen.temperature, "torch_threads": torch.get_num_threads(),
                              "profiled": {"batch_size": gen.batch_size, "wall_seconds": wall, "usage_under_profiler": usage,
                                           "seconds": parts, "share": {k: v / wall for k, v in parts.items()}},
                              "batch_sizes": []}
    for b in [int(x) for x in args.batch_sizes.split(",")]:
        for drop in (True, False):
            _, _, u = answerer.answer(prompts, gen.model_copy(update={"batch_size": b, "drop_finished": drop}), f"batch {b}", False)
            result["batch_sizes"].append({"batch_size": b, "rows_per_batch": b * gen.num_samples, "drop_finished": drop, **u})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"sampling {args.prompts} prompts × {gen.num_samples}, ≤{gen.max_new_tokens} new tokens, batch {gen.batch_size} prompts: {wall:.1f} s profiled")
    print("  " + ", ".join(f"{k} {v:.0%}" for k, v in result["profiled"]["share"].items()))
    for r in result["batch_sizes"]:
        print(f"  batch {r['batch_size']:>3} prompts ({r['rows_per_batch']} rows), {'drop_finished' if r['drop_finished'] else 'transformers generate'}: "
              f"{r['tokens_per_s']:.0f} tokens/s, "
              f"{r['idle_row_share']:.0%} of row-steps idle, {r['seconds']:.1f} s")


if __name__ == "__main__":
    main()
