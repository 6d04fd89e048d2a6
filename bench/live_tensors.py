"""What is alive at the peak of one training step: the embedded SmolLM2-135M-Instruct (LoRA r=8 on q,v, or full
fine-tuning), compare_trl's first batch (4 HH-RLHF harmless pairs, packed rows of up to 512 tokens), summed response
log-probs and a DPO-shaped loss, forward and backward. Every tensor an op creates is counted (by storage) until freed;
the model's weights are left out. Bytes, not time: safe to run beside other work.

    python bench/live_tensors.py --mode lora
    python bench/live_tensors.py --mode full --out bench/results/live_tensors_full.json

Writes bench/results/live_tensors_<mode>.json: the peak of live tensor bytes and what is alive then, by op and width."""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import weakref
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


class LiveTensors(TorchDispatchMode):
    """Tracks the storages ops create (except `skip`) and remembers what is alive when their total peaks."""

    def __init__(self, skip: set[int]):
        super().__init__()
        self.skip, self.live, self.total, self.peak, self.at_peak = skip, {}, 0, 0, {}

    def _gone(self, key: int) -> None:
        entry = self.live.pop(key, None)
        if entry:
            self.total -= entry[0]

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self.live and key not in self.skip:
                    self.live[key] = (storage.nbytes(), func.overloadpacket.__name__, t.shape[-1] if t.dim() else 1)
                    self.total += storage.nbytes()
                    weakref.finalize(storage, self._gone, key)
                    if self.total > self.peak:
                        self.peak, self.at_peak = self.total, dict(self.live)
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["lora", "full"], default="lora")
    ap.add_argument("--out")
    args = ap.parse_args()
    from compare_trl import MAX_LENGTH, MODEL, write_pairs

    from preftune.config import DataConfig, load_config
    from preftune.data.batch import collate
    from preftune.data.pipeline import load_examples
    from preftune.data.tokenize import PairTokenizer
    from preftune.models.loading import load_model, load_tokenizer, resolve_model_path
    from preftune.models.logprobs import sequence_logps

    over = [f"model.name_or_path={MODEL}"]
    if args.mode == "lora":
        over += ["model.lora.enabled=true", "model.lora.r=8", "model.lora.alpha=16", "model.lora.dropout=0", "model.lora.target_modules=[q_proj,v_proj]"]
    cfg = load_config(None, over)
    model = load_model(cfg.model)
    model.train()
    if getattr(cfg.train, "fused_mlp", False):  # as training on CPU does ("auto" is on there; a checkout before train.fused_mlp has none)
        from preftune.models.fused_mlp import fuse_mlps

        fuse_mlps(model)
    if getattr(cfg.train, "fused_norm", False):  # likewise for train.fused_norm
        from preftune.models.fused_norm import fuse_norms

        fuse_norms(model)
    tokenizer = load_tokenizer(resolve_model_path(MODEL))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pairs.jsonl"
        write_pairs(4, data)
        examples = load_examples(str(data), DataConfig().load_settings()).examples
    tok = PairTokenizer(tokenizer, DataConfig(max_length=MAX_LENGTH, max_prompt_length=None).tokenize_settings())
    pairs = [tok(e) for e in examples]
    batch = collate("packed", pairs, range(len(pairs)), tokenizer.pad_token_id, row_tokens=cfg.train.pack_tokens)
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    with LiveTensors(weights) as mode:
        logps = sequence_logps(model, batch, cfg.train.logits_chunk).logps
        b = len(pairs)
        (-torch.nn.functional.logsigmoid(0.1 * (logps[:b] - logps[b:]))).mean().backward()
    by_kind: collections.Counter[str] = collections.Counter()
    count: collections.Counter[str] = collections.Counter()
    for nbytes, op, width in mode.at_peak.values():
        by_kind[f"{op}, last dim {width}"] += nbytes
        count[f"{op}, last dim {width}"] += 1
    positions, tokens = batch.input_ids.numel(), int(batch.token_count())
    result = {"command": "python bench/live_tensors.py " + " ".join(sys.argv[1:]), "mode": args.mode, "rows": list(batch.input_ids.shape),
              "positions": positions, "tokens": tokens, "response_tokens": int(batch.labels.numel()),
              "peak_live_mib": mode.peak / 2**20, "peak_live_kib_per_position": mode.peak / 1024 / positions,
              "alive_at_peak_mib": {k: {"mib": v / 2**20, "tensors": count[k]} for k, v in by_kind.most_common() if v >= 2**19}}
    out = Path(args.out or HERE / "results" / f"live_tensors_{args.mode}.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
