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
    "likely_mislabeled": "the fold models, trained without this pair, prefer its rejected response with the confidence they give the labels as given",
}
WORST = 20  # pairs shown side by side, most suspect first


def _detail(r: dict[str, Any]) -> str:
    keys = ("suspect", "reference_margin", "duplicate_of", "similarity", "leaked_from", "leak_similarity", "responses_similarity", "empty", "prompt_in", "truncated", "tokens", "chars")
    return "; ".join(f"{k}: {r[k]}" for k in keys if k in r)


def _histogram(values: list[float], bins: int = 20, width: int = 400, height: int = 90) -> str:
    """An inline SVG histogram of values in [0, 1]."""
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int(v * bins))] += 1
    top = max(counts) or 1
    w = width / bins
    bars = "".join(f"<rect x='{i * w:.1f}' y='{height - c / top * height:.1f}' width='{w - 1:.1f}' height='{c / top * height:.1f}' fill='#4a7'>"
                   f"<title>{i / bins:.2f}–{(i + 1) / bins:.2f}: {c}</title></rect>" for i, c in enumerate(counts))
    return f"<svg width='{width}' height='{height + 16}'>{bars}<text x='0' y='{height + 14}' font-size='11'>0</text>" \
           f"<text x='{width - 8}' y='{height + 14}' font-size='11'>1</text></svg>"


def _suspects(report: dict[str, Any], split: str, noise: dict[str, Any]) -> str:
    rows = sorted((r for r in report["records"] if r["split"] == split and r.get("suspect") is not None), key=lambda r: -r["suspect"])
    out = [f"<h3>Label noise: suspect scores ({noise['folds']} folds of {noise['steps_per_fold']} steps)</h3>",
           _histogram([r["suspect"] for r in rows]),
           f"<p>likely_mislabeled at suspect ≥ {_e(noise['threshold'])}" + ("" if noise["learned"] else " (the folds learned no preference: none flagged)") + "</p>",
           "<table><tr><th>index</th><th>suspect</th><th>prompt</th><th>chosen (as labelled)</th><th>rejected (as labelled)</th></tr>"]
    texts = report.get("texts", {}).get(split, {})
    for r in rows[:WORST]:
        t = texts.get(r["index"], {})
        out.append(f"<tr><td>{r['index']}</td><td>{r['suspect']:.3f}</td><td>{_e(t.get('prompt', ''))}</td><td>{_e(t.get('chosen', ''))}</td>"
                   f"<td>{_e(t.get('rejected', ''))}</td></tr>")
    return "\n".join(out) + "</table>"


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
        if "label_noise" in s:
            parts.append(_suspects(report, split, s["label_noise"]))
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
