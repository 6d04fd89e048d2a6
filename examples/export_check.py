"""Export a run (default: the quickstart's) to GGUF at f32, f16 and q8_0, load each back with transformers, and print
how far its log-probs are from the run's own model on a few arithmetic answers.

    python examples/export_check.py [RUN_DIR] [--out bench/results/export_check.json]   # after the quickstart
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from preftune.export import export
from preftune.export.run import merged_model

TEXTS = [f"<|im_start|>user\nWhat is {a} + {b}?<|im_end|>\n<|im_start|>assistant\n{a} + {b} = {a + b}<|im_end|>" for a, b in
         [(37, 45), (12, 9), (250, 133), (8, 77)]]


def logps(model: torch.nn.Module, tokenizer) -> torch.Tensor:  # noqa: ANN001
    out = []
    for text in TEXTS:
        ids = torch.tensor([tokenizer(text).input_ids])
        with torch.no_grad():
            lp = model(input_ids=ids).logits.double().log_softmax(-1)
        out.append(lp[0, :-1].gather(-1, ids[0, 1:, None]).squeeze(-1))
    return torch.cat(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="?", default="runs/quickstart")
    ap.add_argument("--out", help="also write the numbers as JSON here, with how they were measured")
    args = ap.parse_args()
    run = args.run
    source, tokenizer = merged_model(run)
    want = logps(source, tokenizer)
    print(f"{run}: {want.numel()} tokens, summed log-prob {want.sum().item():.4f}")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for dtype in ("f32", "f16", "q8_0"):
            t0 = time.time()
            path = export(run, "gguf", Path(folder) / f"m-{dtype}.gguf", dtype)
            size = path.stat().st_size / 2**20
            got = logps(AutoModelForCausalLM.from_pretrained(folder, gguf_file=path.name, dtype=torch.float32), tokenizer)
            rel = ((got.sum() - want.sum()).abs() / want.sum().abs()).item()
            worst = (got - want).abs().max().item()
            print(f"{dtype:5s} {size:7.1f} MiB  relative error of summed log-probs {rel:.2e}  largest token error "
                  f"{worst:.2e}  ({time.time() - t0:.0f} s)")
            rows.append({"dtype": dtype, "mib": size, "sum_relative_error": rel, "largest_token_error": worst, "seconds": time.time() - t0})
    if args.out:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
        from protocol import provenance

        result = {"protocol": provenance("python examples/export_check.py " + " ".join(sys.argv[1:]), rounds=None, timed_steps=None,
                                         matmul_gflops=None), "run": run, "tokens": want.numel(), "summed_logp": want.sum().item(), "dtypes": rows}
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
