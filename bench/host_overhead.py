"""Per-step framework overhead of preftune against TRL 1.16's DPOTrainer, side by side on this CPU.

A model with SmolLM2-135M's depth (30 layers) but so narrow (hidden 32, vocabulary 4,096 from a byte-level BPE
trained here on HH text) that its arithmetic is a small part of a step: what is left is what each trainer does around
the model (Python, operator dispatch, autograd, the optimizer over SmolLM2's 273 tensors, collation, logging). On a GPU
this is the host time that bounds small-model training (SmolLM2-135M on an H100: bench/results/compare_trl_gpu_*),
less the CUDA launch cost, so the ratio here says which trainer has less to launch and run per step; it is not a GPU
measurement. Full fine-tuning, float32, HH-RLHF harmless pairs, max_length 512, the same pairs, batch and steps;
TRL with its fastest configuration of gradient checkpointing on/off × precomputed reference on/off, preftune with a
live and a precomputed reference; then A B A B rounds, each run its own process.

    python bench/host_overhead.py [--batch 16] [--steps 12] [--rounds 2]

Writes bench/results/host_overhead.{json,md}; the last line is `ratio step time TRL/preftune: X.XX`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from compare_trl import DATA, PREFTUNE_VARIANTS, launch, tokens_per_pair, write_pairs  # noqa: E402

SCRIPT = str(HERE / "compare_trl.py")  # its workers run both trainers; the model folder comes in the spec
NARROW = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=30, num_attention_heads=4, num_key_value_heads=2)


def build(out: Path, data: Path = DATA, vocab: int = 4096) -> int:
    """A byte-level BPE tokenizer trained on HH chosen texts and a random narrow 30-layer Llama, saved in `out`; returns
    the parameter count."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    texts = [json.loads(line)["chosen"] for line in data.read_text().splitlines()[:3000]]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.save_pretrained(out)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), max_position_embeddings=2048, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **NARROW)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out, safe_serialization=True)
    return sum(p.numel() for p in model.parameters())


def step_ms(run: dict[str, Any], warmup: int) -> float:
    return 1e3 * statistics.median(run["step_seconds"][warmup:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    import torch
    import trl

    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="preftune-overhead-") as d:
        work = Path(d)
        model = work / "narrow"
        params = build(model)
        data = work / "pairs.jsonl"
        per_pair = tokens_per_pair(write_pairs(args.batch * args.steps, data, DATA, str(model)))
        base = {"mode": "full", "batch": args.batch, "steps": args.steps, "data": str(data), "model": str(model)}
        n = 0

        def go(trainer: str, options: dict[str, Any]) -> dict[str, Any]:
            nonlocal n
            n += 1
            spec = {**base, "trainer": trainer, "options": options, "out": str(work / f"{n}-{trainer}")}
            r = launch(spec, work / f"{n}.log", SCRIPT)
            r["step_ms"] = step_ms(r, args.warmup)
            print(f"{trainer} {options or 'defaults'}: {r['step_ms']:.1f} ms/step (median), first loss {r['first_loss']:.4f}", flush=True)
            return r

        trl_tried = [go("trl", {"gradient_checkpointing": g, "precompute_ref_log_probs": p}) for g in (False, True) for p in (False, True)]
        ours_tried = [go("preftune", v) for v in PREFTUNE_VARIANTS]
        trl_best = min(trl_tried, key=lambda r: r["step_ms"])["options"]
        our_best = min(ours_tried, key=lambda r: r["step_ms"])["options"]
        runs: dict[str, list[float]] = {"preftune": [], "trl": []}
        first: dict[str, float] = {}
        for _ in range(args.rounds):
            for trainer, options in (("preftune", our_best), ("trl", trl_best)):
                r = go(trainer, options)
                runs[trainer].append(r["step_ms"])
                first[trainer] = r["first_loss"]
    med = {k: statistics.median(v) for k, v in runs.items()}
    result = {"machine": {"threads": torch.get_num_threads(), "torch": torch.__version__, "trl": trl.__version__},
              "model": {"params": params, **NARROW, "vocab": 4096}, "tokens_per_pair": per_pair, "batch": args.batch, "steps": args.steps,
              "warmup": args.warmup, "trl_variants": [{"options": r["options"], "step_ms": r["step_ms"]} for r in trl_tried],
              "preftune_variants": [{"options": r["options"], "step_ms": r["step_ms"]} for r in ours_tried],
              "trl_best_options": trl_best, "preftune_best_options": our_best, "rounds_step_ms": runs, "median_step_ms": med,
              "first_loss": first, "ratio_step_time_trl_over_preftune": med["trl"] / med["preftune"], "seconds": time.time() - t0}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "host_overhead.json").write_text(json.dumps(result, indent=1) + "\n")
    md = markdown(result)
    (out / "host_overhead.md").write_text(md)
    print(md)
    print(f"ratio step time TRL/preftune: {result['ratio_step_time_trl_over_preftune']:.2f}")


def markdown(r: dict[str, Any]) -> str:
    tp = r["tokens_per_pair"]
    lines = [f"CPU, {r['machine']['threads']} threads, torch {r['machine']['torch']}, TRL {r['machine']['trl']}. Narrow 30-layer Llama "
             f"({r['model']['params'] / 1e6:.2f}M parameters, hidden {r['model']['hidden_size']}, vocabulary {r['model']['vocab']}), full "
             f"fine-tuning, float32, HH-RLHF harmless pairs (prompt {tp['prompt']:.0f}, chosen {tp['chosen']:.0f}, rejected "
             f"{tp['rejected']:.0f} tokens a pair), batch {r['batch']} pairs, {r['steps']} steps ({r['warmup']} not timed), medians of "
             f"{len(r['rounds_step_ms']['trl'])} rounds A B A B.", "",
             "| trainer | settings | step time ms (median) | first loss |", "|---|---|---|---|"]
    for t in ("preftune", "trl"):
        settings = ", ".join(f"{k}={v}" for k, v in r[f"{t}_best_options"].items()) or "defaults"
        lines.append(f"| {t} | {settings} | {r['median_step_ms'][t]:.1f} | {r['first_loss'][t]:.4f} |")
    lines += [f"| **ratio** TRL/preftune | | **{r['ratio_step_time_trl_over_preftune']:.2f}×** | |", "", "Configurations tried (one run each):", ""]
    for t in ("trl", "preftune"):
        lines += [f"- {t} {json.dumps(v['options']) if v['options'] else 'defaults'}: {v['step_ms']:.1f} ms/step" for v in r[f"{t}_variants"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
