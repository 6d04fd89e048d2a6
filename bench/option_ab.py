"""One preftune setting (or one source tree against another) off and on, side by side: compare_trl's runs (embedded
SmolLM2-135M-Instruct, HH-RLHF harmless pairs, batch 4, max_length 512, precomputed reference), each in its own
process, alternating off / on for several rounds. Reports each side's pairs/s and peak RSS (median, min, max) and the
on/off ratio of every round.

    python bench/option_ab.py --option train.fused_mlp --off false --on true            # LoRA r=8 q,v and full, 3 rounds
    python bench/option_ab.py --option train.fused_mlp --off false --on true --modes lora --rounds 5
    python bench/option_ab.py --off-tree /tmp/old --on-tree . --name layout_sdpa          # two checkouts of preftune

Writes bench/results/option_ab_<option or name>.json and .md."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from compare_trl import PRE, launch, model_params, matmul_flops, summarize, tokens_per_pair, write_pairs  # noqa: E402
from protocol import provenance, spread  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--option", help="a config field, set to --off on one side and --on on the other")
    ap.add_argument("--off")
    ap.add_argument("--on")
    ap.add_argument("--off-tree", help="a preftune checkout the off side runs (default: this one)")
    ap.add_argument("--on-tree", help="a preftune checkout the on side runs (default: this one)")
    ap.add_argument("--name", help="result name (default: the option)")
    ap.add_argument("--modes", default="lora,full")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    if not (args.option and args.off is not None and args.on is not None) and not (args.off_tree or args.on_tree):
        ap.error("give --option with --off and --on, or --off-tree / --on-tree")
    label = {"off": args.off if args.option else f"tree {args.off_tree or '.'}", "on": args.on if args.option else f"tree {args.on_tree or '.'}"}
    machine = matmul_flops()
    params = model_params()
    command = "python bench/option_ab.py " + " ".join(sys.argv[1:])
    result: dict[str, Any] = {"protocol": provenance(command, rounds=args.rounds, timed_steps=args.steps - args.warmup, matmul_gflops=machine / 1e9),
                              "command": command, "option": args.option, "sides": label, "matmul_gflops": machine / 1e9, "modes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for mode in args.modes.split(","):
            data = work / f"pairs-{mode}.jsonl"
            per_pair = tokens_per_pair(write_pairs(args.batch * args.steps, data))
            runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
            for r in range(args.rounds):
                for side in ("off", "on"):
                    options = {**PRE, **({args.option: getattr(args, side)} if args.option else {})}
                    spec = {"mode": mode, "batch": args.batch, "steps": args.steps, "data": str(data), "trainer": "preftune",
                            "options": options, "out": str(work / f"{mode}-{r}-{side}")}
                    tree = getattr(args, f"{side}_tree")
                    script = str(Path(tree).resolve() / "bench" / "compare_trl.py") if tree else str(HERE / "compare_trl.py")
                    run = summarize(launch(spec, work / f"{mode}-{r}-{side}.log", script, tree), args.warmup, args.batch, per_pair, params, machine)
                    runs[side].append(run)
                    print(f"[{mode}] round {r + 1} {label[side]}: {run['pairs_per_s']:.3f} pairs/s, "
                          f"peak RSS {run['peak_rss_mib']:.0f} MiB, first loss {run['first_loss']:.6f}", flush=True)
            ratios = [b["pairs_per_s"] / a["pairs_per_s"] for a, b in zip(runs["off"], runs["on"], strict=True)]
            result["modes"][mode] = {
                side: {"pairs_per_s": spread([x["pairs_per_s"] for x in v]), "peak_rss_mib": spread([x["peak_rss_mib"] for x in v]),
                       "first_loss": v[0]["first_loss"], "first_logps_chosen": v[0]["first_logps_chosen"]} for side, v in runs.items()}
            result["modes"][mode]["speed_ratio_by_round"] = ratios
            result["modes"][mode]["rss_ratio"] = (statistics.median(x["peak_rss_mib"] for x in runs["on"])
                                                  / statistics.median(x["peak_rss_mib"] for x in runs["off"]))
    name = "option_ab_" + (args.name or args.option).replace(".", "_")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    proto = result["protocol"]
    lines = [f"`{result['command']}` at {proto['commit']} on {proto['date']}; {proto['machine']['cpu']}, {proto['machine']['cores']} cores, "
             f"torch {proto['machine']['torch']}; float32 matmul {result['matmul_gflops']:.1f} GFLOP/s; {args.rounds} rounds, {args.steps} steps "
             f"({args.warmup} not timed) of {args.batch} pairs.", "",
             f"| mode | {args.option or 'tree'} | pairs/s min / median / max | peak RSS MiB min / median / max | first loss |", "|---|---|---|---|---|"]
    for mode, m in result["modes"].items():
        for side in ("off", "on"):
            p, s = m[side]["pairs_per_s"], m[side]["peak_rss_mib"]
            lines.append(f"| {mode} | {label[side]} | {p['min']:.3f} / {p['median']:.3f} / {p['max']:.3f} | "
                         f"{s['min']:.0f} / {s['median']:.0f} / {s['max']:.0f} | {m[side]['first_loss']:.6f} |")
        lines.append(f"| {mode} | on/off | speed per round {', '.join(f'{x:.3f}' for x in m['speed_ratio_by_round'])} | "
                     f"median peak RSS {m['rss_ratio']:.3f}× | |")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
