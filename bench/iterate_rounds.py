"""On-policy rounds on the embedded model, measured: `preftune iterate examples/iterate_arithmetic.yaml` (RPO pairs of
correct against incorrect samples) and, with the same prompts, samples and settings, rejection-sampling SFT rounds
(`iterate.round_type=rejection_sft`), each timed whole as a user runs it.

    python bench/iterate_rounds.py                        # both, 3 rounds each (about 40 minutes on a 2-core CPU)
    python bench/iterate_rounds.py --variants rpo         # the example alone
    python bench/iterate_rounds.py --variants rpo --set iterate.rounds=1   # extra overrides for every variant
    python bench/iterate_rounds.py --collect rpo=/tmp/preftune-iterate-XXXX/rpo --started UNIX_TIME   # record a run already made

Writes bench/results/iterate_arithmetic.json (every round's summary, wall time and peak RSS per variant) and .md."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EXAMPLE = ROOT / "examples" / "iterate_arithmetic.yaml"
VARIANTS = {"rpo": [], "rejection_sft": ["iterate.round_type=rejection_sft"]}


CHILD = ("import resource, runpy, sys\n"
         "rss, sys.argv = sys.argv[1], ['preftune', *sys.argv[2:]]\n"
         "try:\n    runpy.run_module('preftune', run_name='__main__')\n"
         "finally:\n    open(rss, 'w').write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n")


def run_variant(name: str, extra: list[str], work: Path) -> dict[str, Any]:
    """One `preftune iterate` in its own process: wall time, its own peak RSS, and every round's summary."""
    out, rss = work / name, work / f"{name}.rss"
    # its own reference cache: a rerun must not reuse the log-probs an earlier run cached for the same round-1 pairs
    args = ["iterate", str(EXAMPLE), f"output_dir={out}", f"reference.cache_dir={work / (name + '-reference')}", *VARIANTS[name], *extra]
    print("$ preftune", " ".join(args), flush=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", CHILD, str(rss), *args], check=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    return collect(name, out, extra, wall, rss)


def collect(name: str, out: Path, extra: list[str], wall: float, rss: Path) -> dict[str, Any]:
    """A finished variant's record: its rounds (iterate.jsonl), wall time and the peak RSS its process wrote."""
    rounds = [json.loads(line) for line in (out / "iterate.jsonl").read_text().splitlines()]
    return {"variant": name, "overrides": VARIANTS[name] + extra, "wall_seconds": wall,
            "peak_rss_mib": int(rss.read_text()) / 1024 if rss.exists() else None, "rounds": rounds}


def _f(x: Any, d: int = 3) -> str:
    return f"{x:.{d}f}" if isinstance(x, (int, float)) and math.isfinite(x) else "–"


def markdown(result: dict[str, Any]) -> str:
    lines = [f"`{result['command']}` on {result['machine']}", ""]
    for v in result["variants"]:
        r0 = v["rounds"][0]
        lines += [f"### {v['variant']} ({_f(v['wall_seconds'] / 60, 1)} min wall"
                  + (f", peak RSS {v['peak_rss_mib'] / 1024:.1f} GiB" if v["peak_rss_mib"] else "") + ")", "",
                  "| round | held-out exact match ± SE | vs start | examples | prompts without | resampled / settled | samples correct | "
                  "KL to start (nats) | greedy tokens | sampling tok/s | s sample / train / eval |", "|" + "---|" * 11]
        for r in v["rounds"]:
            s, kl, sec = r.get("sampling", {}), r.get("kl_to_start", {}), r.get("seconds", {})
            lines.append(f"| {r['round']} | {_f(r['greedy_judge_mean'])} ± {_f(r.get('greedy_judge_stderr'))} | "
                         f"{r['greedy_judge_mean'] - r0['greedy_judge_mean']:+.3f} | {s.get('examples', '–')} | {s.get('prompts_without_examples', '–')} | "
                         + (f"{s['resampled_prompts']} / {s['settled_by_resampling']}" if s else "–") + f" | {_f(s.get('sample_correct_share'))} | "
                         + (f"{_f(kl.get('estimate'), 2)} ± {_f(kl.get('stderr'), 2)}" if kl else "–")
                         + f" | {_f(r.get('length_tokens', {}).get('mean'), 1)} | {_f(s.get('generation', {}).get('tokens_per_s'), 0)} | "
                         + (" / ".join(_f(sec.get(k), 0) for k in ("sampling", "training", "evaluation")) if sec else "–") + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="rpo,rejection_sft")
    ap.add_argument("--set", action="append", default=[], help="an override for every variant, e.g. iterate.rounds=1")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--collect", metavar="NAME=DIR", help="record a variant already run into DIR (by this script, in a process started "
                    "at --started) instead of running it; its wall time is from that start to the last write of DIR/iterate.jsonl")
    ap.add_argument("--started", type=float, help="with --collect: the Unix time the variant's process started")
    args = ap.parse_args()
    import platform

    import torch

    result: dict[str, Any] = {"command": "python bench/iterate_rounds.py " + " ".join(sys.argv[1:]),
                              "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
                              "example": EXAMPLE.read_text(), "variants": []}
    if args.collect:
        name, folder = args.collect.split("=", 1)
        out_dir = Path(folder)
        wall = (out_dir / "iterate.jsonl").stat().st_mtime - args.started
        result["command"] = " ".join(["preftune iterate examples/iterate_arithmetic.yaml", *VARIANTS[name], *args.set]) + f" (recorded by {result['command']})"
        result["variants"].append(collect(name, out_dir, args.set, wall, out_dir.parent / f"{name}.rss") | {
            "wall_seconds_from": "process start to the last write of iterate.jsonl (recorded with --collect)"})
    else:
        with tempfile.TemporaryDirectory(prefix="preftune-iterate-") as d:
            for name in args.variants.split(","):
                result["variants"].append(run_variant(name, args.set, Path(d)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "iterate_arithmetic.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "iterate_arithmetic.md").write_text(markdown(result) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
