"""Layouts side by side on the embedded SmolLM2-135M with LoRA r=8 on q,v: log-prob agreement with the padded
layout, and forward+backward pairs/s on HH pairs, the packed layout with rows of several sizes (`train.pack_tokens`:
longer rows mean less padding but more attention computed and masked, since SDPA's dense mask cannot skip the blocks
between segments) and, with `--attention sdpa,segments`, each attention kernel for the layouts with segments
(`experimental.attention: segments` computes no block between two pairs). Alternates configurations (A B C A B C) so drift
hits all.

    python bench/layouts.py [--pairs 32] [--batch 8] [--rounds 3] [--row-tokens 512,1024,2048] [--attention sdpa,segments]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--row-tokens", default="512,1024,2048", help="packed row sizes to try")
    ap.add_argument("--attention", default="sdpa", help="attention kernels to try on the prefix_shared / packed layouts: sdpa,segments")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "layouts.json"))
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/hh-rlhf-harmless/train.jsonl"))
    args = ap.parse_args()

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from preftune.config import DataConfig
    from preftune.data.batch import LAYOUTS, collate
    from preftune.data.pipeline import load_examples
    from preftune.data.tokenize import PairTokenizer
    from preftune.models.attention import IMPLEMENTATIONS, register_attention
    from preftune.models.fused_mlp import fuse_mlps
    from preftune.models.fused_norm import fuse_norms
    from preftune.models.loading import load_tokenizer, resolve_model_path
    from preftune.models.logprobs import sequence_logps

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from compare_trl import matmul_flops
    from protocol import provenance, spread

    gflops = matmul_flops() / 1e9

    torch.manual_seed(0)
    path = resolve_model_path("smollm2-135m-instruct")
    tok = load_tokenizer(path)
    register_attention()
    kernels = args.attention.split(",")
    models = {}
    for kernel in dict.fromkeys(["sdpa", *kernels]):
        torch.manual_seed(0)
        m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=IMPLEMENTATIONS[kernel])
        models[kernel] = get_peft_model(m, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
        fuse_mlps(models[kernel])  # as training on CPU does (train.fused_mlp, train.fused_norm: auto)
        fuse_norms(models[kernel])
    model = models["sdpa"]
    pt = PairTokenizer(tok, DataConfig(max_length=512).tokenize_settings())
    pairs = [p for p in (pt(e) for e in load_examples(args.data, DataConfig(on_error="skip").load_settings()).examples[: args.pairs]) if p]
    pad = tok.pad_token_id
    result: dict = {"device": "cpu", "threads": torch.get_num_threads(), "pairs": len(pairs), "batch": args.batch}
    with torch.no_grad():
        ref = sequence_logps(model, collate("padded", pairs[: args.batch], range(args.batch), pad)).logps
        for layout in LAYOUTS[1:]:
            for kernel in kernels:
                got = sequence_logps(models[kernel], collate(layout, pairs[: args.batch], range(args.batch), pad, row_tokens=512)).logps
                result[f"max_rel_diff/{layout}" + ("" if kernel == "sdpa" else f"+{kernel}")] = ((got - ref).abs() / ref.abs()).max().item()
    configs = [("padded", 0, "sdpa")] + [(layout, n, k) for k in kernels
                                          for layout, n in [("prefix_shared", 0)] + [("packed", int(n)) for n in args.row_tokens.split(",")]]
    name = lambda layout, n, k: (f"packed@{n}" if n else layout) + ("" if k == "sdpa" else f"+{k}")  # noqa: E731
    times: dict[str, list[float]] = {name(*c): [] for c in configs}
    computed: dict[str, int] = {}
    for _ in range(args.rounds):
        for layout, n, kernel in configs:
            t = time.perf_counter()
            computed[name(layout, n, kernel)] = 0
            for k in range(0, len(pairs), args.batch):
                chunk = pairs[k:k + args.batch]
                batch = collate(layout, chunk, range(len(chunk)), pad, row_tokens=n)  # n is 0 for the layouts that ignore it
                computed[name(layout, n, kernel)] += batch.input_ids.numel()
                sequence_logps(models[kernel], batch).logps.sum().backward()
            times[name(layout, n, kernel)].append(time.perf_counter() - t)
    for key in times:
        result[f"pairs_per_s/{key}"] = statistics.median(len(pairs) / t for t in times[key])
        result[f"rounds/{key}"] = spread([len(pairs) / t for t in times[key]])
        result[f"positions_computed/{key}"] = computed[key]  # rows × length, padding included
    for key in list(times)[1:]:
        result[f"speedup/{key}"] = result[f"pairs_per_s/{key}"] / result["pairs_per_s/padded"]
    result["command"] = "python bench/layouts.py " + " ".join(sys.argv[1:])
    result = {"protocol": provenance(result["command"].strip(), rounds=args.rounds, timed_steps=-(-len(pairs) // args.batch),
                                     matmul_gflops=gflops), **result}
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
