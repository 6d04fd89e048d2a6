"""Layouts side by side on the embedded SmolLM2-135M with LoRA r=8 on q,v: log-prob agreement with the padded
layout, and forward+backward pairs/s on HH pairs. Alternates layouts (A B C A B C) so drift hits all.

    python bench/layouts.py [--pairs 32] [--batch 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/hh-rlhf-harmless/train.jsonl"))
    args = ap.parse_args()

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from preftune.data.batch import LAYOUTS, collate
    from preftune.data.pipeline import LoadSettings, load_examples
    from preftune.data.tokenize import PairTokenizer, TokenizeSettings
    from preftune.models.loading import load_tokenizer, resolve_model_path
    from preftune.models.logprobs import sequence_logps

    torch.manual_seed(0)
    path = resolve_model_path("smollm2-135m-instruct")
    tok = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    model = get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    pt = PairTokenizer(tok, TokenizeSettings(max_length=512))
    pairs = [p for p in (pt(e) for e in load_examples(args.data, LoadSettings(on_error="skip")).examples[: args.pairs]) if p]
    pad = tok.pad_token_id
    result: dict = {"device": "cpu", "threads": torch.get_num_threads(), "pairs": len(pairs), "batch": args.batch}
    with torch.no_grad():
        ref = sequence_logps(model, collate("padded", pairs[: args.batch], range(args.batch), pad)).logps
        for layout in LAYOUTS[1:]:
            got = sequence_logps(model, collate(layout, pairs[: args.batch], range(args.batch), pad)).logps
            result[f"max_rel_diff/{layout}"] = ((got - ref).abs() / ref.abs()).max().item()
    times: dict[str, list[float]] = {lay: [] for lay in LAYOUTS}
    for _ in range(args.rounds):
        for layout in LAYOUTS:
            t = time.perf_counter()
            for k in range(0, len(pairs), args.batch):
                chunk = pairs[k:k + args.batch]
                sequence_logps(model, collate(layout, chunk, range(len(chunk)), pad)).logps.sum().backward()
            times[layout].append(time.perf_counter() - t)
    for layout in LAYOUTS:
        result[f"pairs_per_s/{layout}"] = len(pairs) / min(times[layout])
    for layout in LAYOUTS[1:]:
        result[f"speedup/{layout}"] = result[f"pairs_per_s/{layout}"] / result["pairs_per_s/padded"]
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "layouts.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
