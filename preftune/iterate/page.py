"""OUTPUT/report.html of `preftune iterate`: one page with every round's held-out score and its standard error, the
pairs or examples trained on, the sampling counts, the KL estimate, response lengths and where the time went."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..run_files import write_text_atomic

PAGE = "report.html"


def _e(x: Any) -> str:
    return html.escape(str(x))


def _f(x: Any, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else "–"


def change(prev: dict[str, Any], cur: dict[str, Any]) -> tuple[float, float]:
    """This round's mean minus the previous round's, and the standard error of that difference (the two taken as
    independent, which overstates it when the same prompts are scored)."""
    d = cur["greedy_judge_mean"] - prev["greedy_judge_mean"]
    return d, math.hypot(cur.get("greedy_judge_stderr", math.nan), prev.get("greedy_judge_stderr", math.nan))


def _chart(rounds: list[dict[str, Any]]) -> str:
    """An SVG of each round's mean with a ±1.96 standard-error bar."""
    w, h, pad = 520, 220, 40
    lows = [r["greedy_judge_mean"] - 1.96 * r.get("greedy_judge_stderr", 0.0) for r in rounds]
    highs = [r["greedy_judge_mean"] + 1.96 * r.get("greedy_judge_stderr", 0.0) for r in rounds]
    finite = [v for v in lows + highs if math.isfinite(v)] or [0.0, 1.0]
    lo, hi = min(finite), max(finite)
    hi = hi if hi > lo else lo + 1.0
    x = lambda i: pad + (w - 2 * pad) * (i / max(1, len(rounds) - 1))  # noqa: E731
    y = lambda v: h - pad - (h - 2 * pad) * ((v - lo) / (hi - lo))  # noqa: E731
    parts = [f'<svg width="{w}" height="{h}" role="img" aria-label="held-out score by round">',
             f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#888"/>',
             f'<text x="4" y="{y(hi) + 4:.1f}" font-size="11">{hi:.3f}</text><text x="4" y="{y(lo) + 4:.1f}" font-size="11">{lo:.3f}</text>']
    points = []
    for i, r in enumerate(rounds):
        m = r["greedy_judge_mean"]
        if not math.isfinite(m):
            continue
        points.append(f"{x(i):.1f},{y(m):.1f}")
        if math.isfinite(lows[i]) and math.isfinite(highs[i]):
            parts.append(f'<line x1="{x(i):.1f}" y1="{y(lows[i]):.1f}" x2="{x(i):.1f}" y2="{y(highs[i]):.1f}" stroke="#1f77b4"/>')
        parts.append(f'<circle cx="{x(i):.1f}" cy="{y(m):.1f}" r="4" fill="#1f77b4"/>'
                     f'<text x="{x(i) - 4:.1f}" y="{h - pad + 16}" font-size="11">{r["round"]}</text>')
    parts.insert(3, f'<polyline points="{" ".join(points)}" fill="none" stroke="#1f77b4"/>')
    return "".join(parts) + "</svg>"


def _row(prev: dict[str, Any] | None, r: dict[str, Any]) -> str:
    s, kl, gen = r.get("sampling", {}), r.get("kl_to_start", {}), r.get("generation", {})
    d = change(prev, r) if prev is not None else None
    strategies = ", ".join(f"{k} {v}" for k, v in s.get("pairs_by_strategy", {}).items())
    cells = [r["round"], f'{_f(r["greedy_judge_mean"])} ± {_f(r.get("greedy_judge_stderr"))}',
             f"{d[0]:+.3f} ± {_f(d[1])}" if d is not None else "–",
             s.get("examples", "–") if s else "–", _e(strategies) or "–", s.get("prompts_without_examples", "–") if s else "–",
             f'{s.get("resampled_prompts", "–")} / {s.get("settled_by_resampling", "–")}' if s else "–",
             _f(s.get("sample_correct_share")) if s else "–",
             f'{_f(kl.get("estimate"), 2)} ± {_f(kl.get("stderr"), 2)}' if kl else "–",
             _f(r.get("length_tokens", {}).get("mean"), 1), _f(r.get("length_tokens", {}).get("truncated_fraction"), 2),
             _f(s.get("generation", {}).get("tokens_per_s"), 0) if s else "–", _f(gen.get("tokens_per_s"), 0),
             " / ".join(_f(r.get("seconds", {}).get(k), 0) for k in ("sampling", "training", "evaluation")) if r.get("seconds") else "–"]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


HEADER = ("round", "held-out mean ± SE", "change ± SE", "examples", "pairs by strategy", "prompts without", "resampled / settled",
          "samples correct", "KL to start (nats) ± SE", "greedy tokens", "greedy cut", "sampling tok/s", "greedy tok/s", "seconds: sample / train / eval")


def render(rounds: list[dict[str, Any]], cfg: RunConfig) -> str:
    it = cfg.iterate
    setup = (f"model {cfg.model.name_or_path}; {it.round_type} rounds"
             + (f", loss {cfg.loss.name}" if it.round_type == "preference" else "")
             + f"; {it.prompts_per_round} prompts a round, K = {it.samples_per_prompt} up to {it.sample_cap()} samples; "
             f"pairs: {', '.join(it.pair_strategies)} (≤ {it.max_pairs_per_prompt} a prompt); judge {it.judge.name}"
             + (f", evaluated by {it.eval_judge.name}" if it.eval_judge else "")
             + f"; {rounds[0].get('prompts', '?')} held-out prompts, greedy")
    body = "".join(_row(rounds[i - 1] if i else None, r) for i, r in enumerate(rounds))
    return ("<!doctype html><html><head><meta charset='utf-8'><title>preftune iterate</title><style>"
            "body{font-family:system-ui,sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;font-size:13px}"
            "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}</style></head><body>"
            f"<h1>On-policy rounds</h1><p>{_e(setup)}</p>{_chart(rounds)}"
            "<p>Bars: ±1.96 standard errors of the held-out mean. A change is within noise when its size is below about twice its SE.</p>"
            "<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in HEADER) + f"</tr>{body}</table></body></html>\n")


def write_page(out: Path, rounds: list[dict[str, Any]], cfg: RunConfig) -> Path:
    path = out / PAGE
    write_text_atomic(path, render(rounds, cfg))
    return path
