"""The documentation's measured tables, written from the stored results in bench/results/.

A page marks each generated table with `<!-- table: NAME -->` ... `<!-- end table -->`; `python bench/tables.py`
rewrites every marked block from its result file, and `python bench/tables.py --check` exits 1, naming the block,
when a committed page differs from what the results give (the test suite runs the check). Every table says where
its numbers come from: the command, the commit measured, the date, the machine and the rounds, as the result file
records them (bench/protocol.py)."""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from protocol import MIN_ROUNDS, MIN_TIMED_STEPS, quotable  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PAGES = [ROOT / "docs" / "benchmarks.md", ROOT / "docs" / "iterate.md", ROOT / "docs" / "data.md"]
BLOCK = re.compile(r"(<!-- table: (?P<name>[a-z0-9_]+) -->\n)(?P<body>.*?)(<!-- end table -->)", re.S)


def load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / name).read_text(encoding="utf-8"))


def provenance(result: dict[str, Any], file: str) -> str:
    """One line: how the numbers of `file` were measured."""
    p = result.get("protocol", {})
    m = p.get("machine") or {}
    if "description" in m:
        where = m["description"]
    else:
        bits = [m.get("cpu"), f"{m['cores']} cores" if m.get("cores") else (f"{m['threads']} threads" if m.get("threads") else None),
                f"torch {m['torch']}" if m.get("torch") else None,
                f"float32 matmul {m['matmul_gflops']:.1f} GFLOP/s" if m.get("matmul_gflops") else None]
        where = ", ".join(b for b in bits if b)
    rounds = f"; {p['rounds']} round(s) of {p['timed_steps']} timed step(s)" if p.get("rounds") and p.get("timed_steps") else ""
    note = f" ({p['backfilled']})" if p.get("backfilled") else ""
    where = f"; {where}" if where else ""
    command = re.sub(r" --out \S+", "", (p.get("command") or result.get("command") or "").strip())  # where it was written, not how measured
    return (f"Measured by `{command}` at commit {p.get('commit')} on {p.get('date')}{where}{rounds}. "
            f"Stored in `bench/results/{file}`{note}.")


def fmt(x: float, digits: int = 3) -> str:
    return f"{x:,.{digits}f}"


def spread_text(values: list[float], digits: int = 3) -> str:
    return f"{fmt(statistics.median(values), digits)} ({fmt(min(values), digits)} – {fmt(max(values), digits)})"


def table_first_run() -> str:
    r = load("quickstart.json")
    b, a = r["before"], r["after"]
    rows = ["| wall time | peak RSS | steps | held-out accuracy before → after | margin | loss | held-out logps/chosen | diagnostics |",
            "|---|---|---|---|---|---|---|---|",
            f"| {r['wall_seconds'] / 60:.1f} min | {r['peak_rss_mib'] / 1024:.1f} GiB | {r['steps']} | "
            f"{b['eval/rewards/accuracies']:.3f} → {a['eval/rewards/accuracies']:.3f} | {b['eval/rewards/margins']:.3f} → {a['eval/rewards/margins']:.3f} | "
            f"{b['eval/loss']:.3f} → {a['eval/loss']:.3f} | {b['eval/logps/chosen']:.1f} → {a['eval/logps/chosen']:.1f} | "
            f"{', '.join(f'`{k}` from step {v}' for k, v in r['findings'].items()) or 'none'} |"]
    return "\n".join(rows) + "\n\n" + provenance(r, "quickstart.json")


def table_compare_trl() -> str:
    r = load("compare_trl.json")
    if not quotable(r["protocol"]):
        raise ValueError(f"compare_trl.json has {r['protocol'].get('rounds')} rounds of {r['protocol'].get('timed_steps')} timed steps: "
                         f"a smoke test, not a result to publish (at least {MIN_ROUNDS} rounds of {MIN_TIMED_STEPS})")
    rows = ["| mode | preftune pairs/s, median (min – max) | TRL pairs/s | ratio per round | peak RSS MiB preftune / TRL | model FLOP/s ÷ matmul, preftune / TRL |",
            "|---|---|---|---|---|---|"]
    for c in r["comparisons"]:
        pre, trl = c["runs"]["preftune"], c["runs"]["trl"]
        ratios = [p["pairs_per_s"] / t["pairs_per_s"] for p, t in zip(pre, trl, strict=True)]
        rss_p = statistics.median(x["peak_rss_mib"] for x in pre)
        rss_t = statistics.median(x["peak_rss_mib"] for x in trl)
        rows.append(f"| {c['mode']} | {spread_text([x['pairs_per_s'] for x in pre])} | {spread_text([x['pairs_per_s'] for x in trl])} | "
                    f"{', '.join(f'{x:.2f}×' for x in ratios)} (median {statistics.median(ratios):.2f}×) | "
                    f"{rss_p:,.0f} / {rss_t:,.0f} = {rss_p / rss_t:.2f}× | "
                    f"{statistics.median(x['mfu'] for x in pre):.1%} / {statistics.median(x['mfu'] for x in trl):.1%} |")
    best = "; ".join(f"{c['mode']}: preftune {_options(c['preftune_best_options'])}, TRL {_options(c['trl_best_options'])}" for c in r["comparisons"])
    found = (f"found by {r['options_from']['file']} (measured at {r['options_from']['commit']}, {r['options_from']['date']}) and compared here"
             if "options_from" in r else "found before the rounds and then compared")
    return "\n".join(rows) + f"\n\nFastest settings, {found}: {best}.\n\n" + provenance(r, "compare_trl.json")


def _options(options: dict[str, Any]) -> str:
    return ", ".join(f"`{k}={v}`" for k, v in options.items()) or "defaults"


OPTION_FILES = {  # option -> (result file, its default, what it is for)
    "train.fused_mlp": ("option_ab_train_fused_mlp.json", "auto (on for CPU training)", "memory"),
    "train.fused_norm": ("option_ab_train_fused_norm.json", "false", "memory"),
    "train.optimizer_impl": ("option_ab_train_optimizer_impl.json", "auto (fused)", "speed"),
    "train.gradient_checkpointing (selective)": ("option_ab_train_gradient_checkpointing_selective.json", "false", "memory"),
    "train.gradient_checkpointing (true)": ("option_ab_train_gradient_checkpointing_true.json", "false", "memory"),
    "train.host_mmap_threshold_kib": ("option_ab_train_host_mmap_threshold_kib.json", "null", "memory"),
    "train.logits_chunk": ("option_ab_train_logits_chunk.json", "1024", "memory"),
}


def table_options() -> str:
    rows = ["| option | default | for | mode | off → on | pairs/s off, median (min – max) | pairs/s on | speed on/off per round | peak RSS on/off (medians) | measured |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    sources = []
    for option, (file, default, purpose) in OPTION_FILES.items():
        if not (RESULTS / file).exists():
            rows.append(f"| `{option}` | {default} | {purpose} | – | – | not measured | | | | |")
            continue
        r = load(file)
        p = r["protocol"]
        if not quotable(p):
            raise ValueError(f"{file}: {p.get('rounds')} rounds of {p.get('timed_steps')} timed steps is below the protocol's floor")
        for mode, m in r["modes"].items():
            rows.append(f"| `{option}` | {default} | {purpose} | {mode} | {r['sides']['off']} → {r['sides']['on']} | "
                        f"{spread_text(m['off']['pairs_per_s']['values'])} | {spread_text(m['on']['pairs_per_s']['values'])} | "
                        f"{', '.join(f'{x:.2f}×' for x in m['speed_ratio_by_round'])} | {m['rss_ratio']:.2f}× | {p['commit']}, {p['date']} |")
        sources.append(f"`{option}`: {provenance(r, file)}")
    return "\n".join(rows) + "\n\n" + "\n\n".join(sources)


def table_experimental() -> str:
    file = "compare_trl.json"
    r = load(file)
    if "options_from" in r:  # the configurations were tried in the stored comparison the settings came from
        file = r["options_from"]["file"]
        r = load(file)
    rows = ["| setting (one run each) | LoRA pairs/s | LoRA peak RSS MiB | full pairs/s | full peak RSS MiB |", "|---|---|---|---|---|"]
    by_mode = {c["mode"]: {json.dumps(v["options"], sort_keys=True): v for v in c["preftune_variants"]} for c in r["comparisons"]}
    keys = list(by_mode["lora"])
    for key in keys:
        options = json.loads(key)
        name = _options(options).replace("model.attention", "experimental.attention").replace("train.compile", "experimental.compile") \
            .replace("train.static_shapes", "experimental.static_shapes")
        cells = []
        for mode in ("lora", "full"):
            v = by_mode.get(mode, {}).get(key)
            cells += [fmt(v["pairs_per_s"]), f"{v['peak_rss_mib']:,.0f}"] if v else ["–", "–"]
        rows.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(rows) + "\n\n" + provenance(r, file)


def table_layouts() -> str:
    r = load("layouts.json")
    rows = ["| layout | pairs/s | positions computed | speed-up over padded |", "|---|---|---|---|"]
    for key in [k for k in r if k.startswith("pairs_per_s/")]:
        name = key.split("/", 1)[1]
        rows.append(f"| {name.replace('@', ', rows of ')}{' tokens' if '@' in name else ''} | {r[key]:.2f} | {r['positions_computed/' + name]:,} | "
                    f"{r.get('speedup/' + name, 1.0):.2f}× |")
    return "\n".join(rows) + f"\n\n{r['pairs']} HH pairs in batches of {r['batch']}, forward and backward. " + provenance(r, "layouts.json")


def table_peak_memory() -> str:
    r = load("peak_memory_hh.json")
    base = r["runs"][0]
    rows = ["| setting | peak RSS MiB | median pairs/s |", "|---|---|---|"]
    for run in r["runs"]:
        label = f"{run['variant']} ({' '.join(f'`{o}`' for o in run['overrides']) or 'defaults'})"
        ratio = "" if run is base else f" ({run['peak_rss_mib'] / base['peak_rss_mib']:.2f}×)"
        speed = "" if run is base else f" ({run['median_pairs_per_s_after_first'] / base['median_pairs_per_s_after_first']:.2f}×)"
        rows.append(f"| {label} | {run['peak_rss_mib']:,.0f}{ratio} | {run['median_pairs_per_s_after_first']:.3f}{speed} |")
    return "\n".join(rows) + "\n\n" + provenance(r, "peak_memory_hh.json")


def table_profile() -> str:
    r = load("profile_cpu_step.json")
    results = r["results"]
    rows = ["| part of a step | " + " | ".join(f"{x['mode']} ({x['wall_ms_per_step'] / 1000:.1f} s a profiled step)" for x in results) + " |",
            "|---|" + "---|" * len(results)]
    for part in results[0]["share"]:
        rows.append(f"| {part} | " + " | ".join(f"{x['share'][part]:.1%}" for x in results) + " |")
    rows.append("| attention on blocks the packed mask discards | " + " | ".join(
        f"{x['attention_wasted_share_of_attention']:.1%} of attention = {x['attention_wasted_share_of_attention'] * x['share']['attention']:.1%} of the step"
        for x in results) + " |")
    return "\n".join(rows) + "\n\n" + provenance(r, "profile_cpu_step.json")


def table_gpu() -> str:
    rows = ["| model, batch (pairs) | timed steps × rounds | preftune tokens/s | TRL tokens/s (its settings) | ratio | peak memory preftune / TRL GiB |",
            "|---|---|---|---|---|---|"]
    notes = []
    for file in sorted(RESULTS.glob("compare_trl_gpu_*.json")):
        r = load(file.name)
        c = r["comparison"]
        pre, trl = c["median"]["preftune"], c["median"]["trl"]
        rows.append(f"| {c['model']}, {c['batch']} | {c['steps'] - c['warmup']} × {len(c['runs']['preftune'])} | {pre['tokens_per_s']:,.0f} | "
                    f"{trl['tokens_per_s']:,.0f} ({_options(c['trl_best_options'])}) | {pre['tokens_per_s'] / trl['tokens_per_s']:.2f}× | "
                    f"{pre['peak_gpu_gib']:.2f} / {trl['peak_gpu_gib']:.2f} |")
        notes.append(provenance(r, file.name))
    return "\n".join(rows) + "\n\n" + "\n\n".join(notes)


def table_export() -> str:
    r = load("export_check.json")
    rows = ["| dtype | file | relative error of summed log-probs | largest error of one token (nats) |", "|---|---|---|---|"]
    rows += [f"| {d['dtype']} | {d['mib']:.1f} MiB | {d['sum_relative_error']:.1e} | {d['largest_token_error']:.2g} |" for d in r["dtypes"]]
    return "\n".join(rows) + f"\n\n{r['tokens']} tokens. " + provenance(r, "export_check.json")


def table_iterate() -> str:
    r = load("iterate_arithmetic.json")
    out = []
    for v in r["variants"]:
        rows = [f"**{v['variant']}**: {v['wall_seconds'] / 60:.1f} min wall, peak RSS {v['peak_rss_mib'] / 1024:.1f} GiB", "",
                "| round | held-out exact match ± SE | examples trained on |", "|---|---|---|"]
        for rd in v["rounds"]:
            n = rd.get("sampling", {}).get("pairs", rd.get("sampling", {}).get("examples"))
            kind = "pairs" if "pairs" in rd.get("sampling", {}) else "examples"
            rows.append(f"| {rd['round']}{' (start)' if rd['round'] == 0 else ''} | {rd['greedy_judge_mean']:.3f} ± {rd['greedy_judge_stderr']:.3f} | "
                        f"{'–' if n is None else f'{n} {kind}'} |")
        out.append("\n".join(rows))
    return "\n\n".join(out) + "\n\n" + provenance(r, "iterate_arithmetic.json")


def table_doctor() -> str:
    rows = ["| data | pairs (flipped) | folds × steps | AUROC of suspect | precision in the top share | flagged: precision / recall | minutes |",
            "|---|---|---|---|---|---|---|"]
    sources = []
    for file in sorted(p.name for p in RESULTS.glob("doctor_label_noise_*.json")):
        r = load(file)
        rows.append(f"| {r['data']} | {r['pairs']} ({r['flipped']}) | {r['folds']} × {r['steps_per_fold']} | {r['auroc']:.3f} | "
                    f"{r['precision_at_flip_share']:.3f} | {r['flagged_precision']:.2f} / {r['flagged_recall']:.2f} ({r['flagged']} flagged) | "
                    f"{r['seconds'] / 60:.1f} |")
        sources.append(provenance(r, file))
    return "\n".join(rows) + "\n\n" + "\n\n".join(sources)


TABLES: dict[str, Callable[[], str]] = {"doctor": table_doctor, "first_run": table_first_run, "compare_trl": table_compare_trl, "options": table_options,
                                        "experimental": table_experimental, "layouts": table_layouts, "peak_memory": table_peak_memory,
                                        "profile": table_profile, "gpu": table_gpu, "export": table_export, "iterate": table_iterate}


def render(page: str) -> str:
    """The page with every marked block rewritten from its result file."""
    def block(m: re.Match[str]) -> str:
        name = m["name"]
        if name not in TABLES:
            raise KeyError(f"unknown table '{name}' (known: {', '.join(TABLES)})")
        return f"{m.group(1)}{TABLES[name]()}\n{m.group(4)}"

    return BLOCK.sub(block, page)


def stale_blocks(path: Path) -> list[str]:
    """Names of the marked blocks of `path` whose text differs from what the results give."""
    page = path.read_text(encoding="utf-8")
    want = {m["name"]: m["body"] for m in BLOCK.finditer(render(page))}
    return [m["name"] for m in BLOCK.finditer(page) if m["body"] != want[m["name"]]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 if a page's tables differ from the results; write nothing")
    args = ap.parse_args()
    bad = []
    for path in PAGES:
        if args.check:
            bad += [f"{path.relative_to(ROOT)}: table '{n}'" for n in stale_blocks(path)]
        else:
            path.write_text(render(path.read_text(encoding="utf-8")), encoding="utf-8")
    if bad:
        print("tables that differ from bench/results (run python bench/tables.py):\n  " + "\n  ".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
