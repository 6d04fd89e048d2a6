"""What a LoRA training step keeps for its backward pass on the CPU, by tensor shape: the embedded SmolLM2-135M-Instruct
with LoRA r=16 on all linear layers (the realistic HH run of bench/peak_memory_hh.py), one forward pass over
--rows rows of --tokens random tokens, every tensor autograd saves counted once (by storage), the model's own
weights left out (they are in memory anyway). Also the peak RSS the forward and backward add, per token.

    python bench/saved_activations.py                 # 2 rows of 700 tokens
    python bench/saved_activations.py --rows 4 --tokens 350
    python bench/saved_activations.py --mmap-threshold-kib 128 --out bench/results/saved_activations_mmap128.json

Writes bench/results/saved_activations.json. Without --mmap-threshold-kib glibc's default (dynamic) threshold is kept;
preftune's training runs fix it at train.host_mmap_threshold_kib (128 KiB by default)."""

from __future__ import annotations

import argparse
import collections
import json
import resource
import sys
from pathlib import Path

import torch

from preftune.config import ModelConfig
from preftune.models.loading import load_model
from preftune.models.logprobs import token_logps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=700)
    ap.add_argument("--mmap-threshold-kib", type=int, default=None)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "saved_activations.json"))
    args = ap.parse_args()
    from preftune.training.host_memory import fix_mmap_threshold

    fix_mmap_threshold(args.mmap_threshold_kib)
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(load_model(ModelConfig(name_or_path="smollm2-135m-instruct")), LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    base = model.get_base_model()
    hidden_size, inter = base.config.hidden_size, base.config.intermediate_size
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    ids = torch.randint(0, base.config.vocab_size, (args.rows, args.tokens))
    seen: set[int] = set()
    by_width: collections.Counter[str] = collections.Counter()

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in seen and ptr not in weights:
            seen.add(ptr)
            width = t.shape[-1] if t.dim() else 1
            name = {inter: f"{inter} wide (MLP: gate, up, activation, product)", hidden_size: f"{hidden_size} wide (hidden states, norms, residuals)",
                    base.config.hidden_size // base.config.num_attention_heads: "head dim (attention q, k, v, rotary, output)"}.get(width, f"other (last dim {width})")
            by_width[name] += t.untyped_storage().nbytes()
        return t

    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        h = base.model(input_ids=ids).last_hidden_state
        lp, _, _ = token_logps(h.reshape(-1, h.shape[-1]), ids.reshape(-1), base.lm_head, 1024, False)
    after_forward = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    lp.sum().backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tokens = args.rows * args.tokens
    total = sum(by_width.values())
    result = {"command": "python bench/saved_activations.py " + " ".join(sys.argv[1:]), "rows": args.rows, "tokens_per_row": args.tokens,
              "mmap_threshold_kib": args.mmap_threshold_kib,
              "layers": base.config.num_hidden_layers, "saved_mib": total / 2**20, "saved_kib_per_token": total / 1024 / tokens,
              "saved_by_width_mib": {k: v / 2**20 for k, v in by_width.most_common()},
              "saved_share_by_width": {k: v / total for k, v in by_width.most_common()},
              "rss_added_by_forward_kib_per_token": (after_forward - start) / tokens, "rss_added_at_peak_kib_per_token": (peak - start) / tokens}
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
