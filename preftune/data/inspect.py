"""`preftune data inspect`: what a data set holds, what is wrong with it, and how its lengths are distributed."""

from __future__ import annotations

import statistics
from dataclasses import replace
from typing import Any

from .cache import tokenize_examples
from .pipeline import LoadedData, load_examples
from .prepare import DataSettings
from .tokenize import PairTokenizer
from .records import PreferencePair, as_text
from ..stats import length_stats

PERCENTILES = (90, 99)
SHOWN = 20  # bad records listed in the text report


def length_preference(chosen: list[int], rejected: list[int]) -> dict[str, float]:
    """How often and by how much the chosen response is longer: DPO's length-bias risk."""
    diffs = [c - r for c, r in zip(chosen, rejected)]
    if not diffs:
        return {}
    return {"chosen_longer": round(sum(d > 0 for d in diffs) / len(diffs), 4), "rejected_longer": round(sum(d < 0 for d in diffs) / len(diffs), 4),
            "same_length": round(sum(d == 0 for d in diffs) / len(diffs), 4), "mean_difference": round(statistics.fmean(diffs), 2),
            "median_difference": statistics.median(diffs)}


def inspect_data(settings: DataSettings, tokenizer: Any | None = None) -> dict[str, Any]:
    """The inspection report of `settings.train` as one dict (JSON-ready): bad records are counted by kind and listed
    (whatever `data.on_error` says: inspection reports problems rather than stopping at them), and the statistics cover
    the good ones; token statistics need a tokenizer, else characters are used."""
    sources = [str(s) for s in settings.train] if isinstance(settings.train, (list, tuple)) else [str(settings.train)]
    loaded: LoadedData = load_examples(settings.train, replace(settings.load, on_error="skip"), require_records=False)
    pairs = [e for e in loaded.examples if isinstance(e, PreferencePair)]
    report: dict[str, Any] = {"sources": sources, "format": loaded.format, "records_read": loaded.n_read, "examples": len(loaded.examples),
                              "errors_by_kind": loaded.errors, "removed_by_filter": loaded.removed,
                              "bad_records": [str(p) for p in loaded.problems]}
    if tokenizer is None:
        unit = "characters"
        p = [len(as_text(e.prompt)) for e in pairs]
        c = [len(as_text(e.chosen)) for e in pairs]
        r = [len(as_text(e.rejected)) for e in pairs]
        report["truncation"] = {}
    else:
        unit = "tokens"
        untruncated = replace(settings.tokenize, max_length=None, max_prompt_length=None)
        tokenized, _, _ = tokenize_examples(pairs, tokenizer, untruncated, settings.num_proc)
        p = [len(t.prompt) for t in tokenized]
        c = [len(t.chosen) for t in tokenized]
        r = [len(t.rejected) for t in tokenized]
        truncator = PairTokenizer(tokenizer, settings.tokenize)  # the same rule training applies, on the ids just made
        for t in tokenized:
            truncator.truncate(t.prompt, t.chosen, t.rejected)
        counts = truncator.counts
        report["truncation"] = {"max_length": settings.tokenize.max_length, "max_prompt_length": settings.tokenize.max_prompt_length,
                                "prompts_truncated": counts["prompt truncated"], "responses_truncated": counts["response truncated"],
                                "pairs_dropped": sum(n for k, n in counts.items() if k.startswith("dropped"))}
    report["length_unit"] = unit
    report["lengths"] = {"prompt": length_stats(p, PERCENTILES), "chosen": length_stats(c, PERCENTILES), "rejected": length_stats(r, PERCENTILES)}
    report["length_bias"] = length_preference(c, r)
    return report


def render_report(report: dict[str, Any]) -> str:
    """The report as text for a person."""
    lines = [f"sources: {', '.join(report['sources'])}", f"format: {report['format']}",
             f"records read: {report['records_read']}   examples kept: {report['examples']}"]
    if report["errors_by_kind"]:
        bad = report["bad_records"]
        lines.append(f"bad records: {len(bad)} (" + ", ".join(f"{k}: {v}" for k, v in report["errors_by_kind"].items()) + ")")
        lines += [f"  {e}" for e in bad[:SHOWN]] + ([f"  ... and {len(bad) - SHOWN} more (--json lists them all)"] if len(bad) > SHOWN else [])
    if report["removed_by_filter"]:
        lines.append("removed by filters: " + ", ".join(f"{k}: {v}" for k, v in report["removed_by_filter"].items()))
    lines.append(f"lengths ({report['length_unit']}):")
    for name, d in report["lengths"].items():
        if d:
            lines.append(f"  {name:9s} " + "  ".join(f"{k} {v}" for k, v in d.items()))
    t = report.get("truncation") or {}
    if t:
        lines.append(f"truncation at max_length={t['max_length']}, max_prompt_length={t['max_prompt_length']}: "
                     f"{t['prompts_truncated']} prompt(s) and {t['responses_truncated']} pair(s) of responses truncated, {t['pairs_dropped']} pair(s) dropped")
    b = report["length_bias"]
    if b:
        lines.append(f"length bias: chosen longer in {b['chosen_longer']:.1%} of pairs, rejected longer in {b['rejected_longer']:.1%}; "
                     f"mean chosen − rejected = {b['mean_difference']} {report['length_unit']}")
        if b["chosen_longer"] > 0.6:
            lines.append("  warning: chosen is usually the longer answer; DPO may learn 'longer wins'. Consider loss.length_normalize or simpo.")
    return "\n".join(lines)
