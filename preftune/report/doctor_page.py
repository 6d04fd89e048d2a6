"""The data doctor's page: one self-contained HTML file (no scripts, no external styles) with the summary of each
split and, for each flag, the pairs that carry it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data.doctor import EXCLUDED
from ..run_files import write_text_atomic
from .compare import STYLE
from .html import _e

SHOWN = 50  # pairs listed per flag
WHAT = {
    "exact_duplicate": "the same prompt and responses as an earlier pair (whitespace and case aside)",
    "near_duplicate": "nearly the same text as an earlier pair (word-shingle Jaccard similarity at or above the threshold)",
    "leaked": "an eval pair nearly the same as a train pair: its held-out score measures memory, not generalization",
    "identical_responses": "chosen and rejected are the same text: the pair teaches nothing",
    "near_identical_responses": "chosen and rejected nearly the same text: a label that rests on a few words (as minimal-edit pairs are built; elsewhere, check them)",
    "empty_response": "an empty chosen or rejected response",
    "truncated": "a response cut at data.max_length: the loss sees part of it",
    "prompt_in_response": "the prompt repeated inside a response",
}


def _detail(r: dict[str, Any]) -> str:
    keys = ("duplicate_of", "similarity", "leaked_from", "leak_similarity", "responses_similarity", "empty", "prompt_in", "truncated", "tokens", "chars")
    return "; ".join(f"{k}: {r[k]}" for k in keys if k in r)


def render_doctor(report: dict[str, Any]) -> str:
    """The page of a doctor report (`data.doctor.diagnose`)."""
    summary = report["summary"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>preftune data doctor</title><style>{STYLE}</style></head><body>",
             "<h1>Data doctor</h1>",
             "<p>" + " · ".join(f"{_e(split)}: {_e(', '.join(srcs))}" for split, srcs in summary.get("sources", {}).items()) + "</p>"]
    for split in ("train", "eval"):
        s = summary.get(split)
        if s is None:
            continue
        c = s["chosen_longer"]
        parts.append(f"<h2>{_e(split)}: {s['pairs']} pairs, {s['excluded']} marked to exclude</h2><table><tr><th>flag</th><th>pairs</th>"
                     "<th>share</th><th>excluded by data.filters.exclude_from</th><th>what it means</th></tr>")
        for flag, n in s["flags"].items():
            parts.append(f"<tr><td><a href='#{_e(split)}-{_e(flag)}'>{_e(flag)}</a></td><td>{n}</td><td>{n / max(1, s['pairs']):.1%}</td>"
                         f"<td>{'yes' if flag in EXCLUDED else 'no'}</td><td>{_e(WHAT.get(flag, ''))}</td></tr>")
        parts.append("</table>")
        parts.append(f"<p>Chosen longer in {c['share']:.1%} of pairs (95% interval {c['low']:.1%} – {c['high']:.1%}); correlation of "
                     f"preference with length ({_e(s['length_unit'])}): {_e(s['length_preference_correlation'])}.</p>")
        if "truncated_share" in s:
            t = s["truncated_share"]
            parts.append(f"<p>Cut at max_length {summary['settings']['max_length']}: chosen {t['chosen']:.1%}, rejected {t['rejected']:.1%}.</p>")
        for flag in s["flags"]:
            rows = [r for r in report["records"] if r["split"] == split and flag in r["flags"]]
            parts.append(f"<h3 id='{_e(split)}-{_e(flag)}'>{_e(flag)} ({len(rows)})</h3><table><tr><th>index</th><th>id</th><th>source</th><th>details</th></tr>")
            parts += [f"<tr><td>{r['index']}</td><td>{_e(r.get('id') or '')}</td><td>{_e(r.get('source') or '')}</td><td>{_e(_detail(r))}</td></tr>"
                      for r in rows[:SHOWN]]
            parts.append("</table>" + (f"<p>… and {len(rows) - SHOWN} more in doctor.jsonl</p>" if len(rows) > SHOWN else ""))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_doctor_page(report: dict[str, Any], path: Path) -> Path:
    write_text_atomic(path, render_doctor(report))
    return path
