"""Runs side by side: curves of every run overlaid, the configuration keys that differ, held-out metrics with standard
errors, the paired difference of held-out accuracy (paired bootstrap) where runs were evaluated on the same pairs, the
diagnostics that fired, and the tuning advice they imply. `compare(run_dirs)` returns it as data; `write_compare`
writes one self-contained page (no scripts or styles fetched)."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import PreftuneError
from ..stats import mean_stderr
from .collect import RunView, collect
from .html import _e, run_beta

CURVES = ("loss", "rewards/margins", "rewards/accuracies", "logratios/chosen", "logratios/rejected", "drift/abs_logratio", "kl")
"""Metrics drawn, each with its training steps (solid) and held-out evaluations (dashed) for every run."""
HELD_OUT = ("eval/rewards/accuracies", "eval/rewards/margins", "eval/loss", "eval/logratios/chosen", "eval/logratios/rejected",
            "eval/drift/abs_logratio", "eval/kl")
NOT_SETTINGS = ("output_dir", "resume_from", "report", "report_to")  # where a run went, not how it trained
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
RESAMPLES = 2000


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"learning_rate": 1e-4}} -> {"train.learning_rate": 1e-4}."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out |= flatten(value, name + ".")
        else:
            out[name] = value
    return out


def differing_keys(configs: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """The configuration keys whose values are not the same in every run, with each run's value (None where unset)."""
    flat = [flatten(c) for c in configs]
    keys = sorted({k for f in flat for k in f if k.split(".")[0] not in NOT_SETTINGS})
    return {k: [f.get(k) for f in flat] for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1}


def pair_key(record: dict[str, Any]) -> str:
    """What identifies a held-out pair across runs: its text (as stored, clipped) and its source."""
    return json.dumps([record.get("source"), record.get("prompt"), record.get("chosen"), record.get("rejected")])


def correct(margin: float) -> float:
    """Whether the implicit reward prefers the chosen response: 1, 0 (rejected preferred) or 0.5 (a tie)."""
    return 1.0 if margin > 0 else 0.5 if margin == 0 else 0.0


def paired_bootstrap(a: Sequence[float], b: Sequence[float], resamples: int = RESAMPLES, seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """The mean of b − a over the same items, and its `level` percentile interval from `resamples` bootstrap resamples
    of the items (paired: an item's two values stay together)."""
    if len(a) != len(b) or not a:
        raise ValueError("paired_bootstrap needs two equally long, non-empty sequences")
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    n = len(diffs)
    rng = random.Random(seed)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    tail = (1 - level) / 2
    return {"difference": sum(diffs) / n, "low": means[int(tail * (resamples - 1))], "high": means[int(math.ceil((1 - tail) * (resamples - 1)))],
            "pairs": float(n), "level": level}


def advice(view: RunView) -> list[str]:
    """The tuning advice the run's own numbers support, each stated with the numbers behind it."""
    out = []
    evals = view.eval_rows
    beta = run_beta(view.config)
    lr = (view.config.get("train") or {}).get("learning_rate")
    drift = [e["eval/drift/abs_logratio"] for e in evals if isinstance(e.get("eval/drift/abs_logratio"), (int, float))]
    if len(drift) >= 2 and drift[-1] > drift[0] and ("drift" in view.diagnostics or drift[-1] > 2 * max(drift[0], 1.0)):
        out.append(f"drift rising: held-out mean |log-ratio| {drift[0]:.2f} → {drift[-1]:.2f} nats; raise β (now {beta}) or lower the "
                   f"learning rate (now {lr}).")
    margins = [e["eval/rewards/margins"] for e in evals if isinstance(e.get("eval/rewards/margins"), (int, float))]
    if "flat_margins" in view.diagnostics and margins:
        shown = ", ".join(f"{m:+.3f}" for m in margins[-3:])
        out.append(f"margins flat: held-out rewards/margins {shown}; lower β (now {beta}) or raise the learning rate (now {lr}).")
    if "chosen_likelihood_falling" in view.diagnostics:
        train = [r["logratios/chosen"] for r in view.train_rows if isinstance(r.get("logratios/chosen"), (int, float))]
        last = f" (last {train[-1]:+.1f} nats)" if train else ""
        out.append(f"the chosen likelihood fell below the reference's while the margin grew{last}; try loss.name: dpop or rpo.")
    if "length_bias" in view.diagnostics:
        out.append(f"margins follow the length difference ({view.diagnostics['length_bias'].get('message', '')}); try "
                   "loss.length_normalize: true or simpo.")
    return out


def _series(view: RunView, metric: str) -> dict[str, list[list[float]]]:
    train = [[float(r["step"]), float(r[metric])] for r in view.train_rows if isinstance(r.get(metric), (int, float))]
    held = [[float(r["step"]), float(r[f"eval/{metric}"])] for r in view.eval_rows if isinstance(r.get(f"eval/{metric}"), (int, float))]
    return {"train": train, "eval": held}


def _held_out(view: RunView) -> dict[str, Any]:
    """The last evaluation's metrics, and the accuracy with its standard error over the held-out pairs."""
    last = view.eval_rows[-1] if view.eval_rows else {}
    out: dict[str, Any] = {k: last[k] for k in HELD_OUT if isinstance(last.get(k), (int, float))}
    if view.eval_pairs:
        mean, se = mean_stderr([correct(float(p["margin"])) for p in view.eval_pairs])
        out |= {"accuracy": mean, "accuracy_stderr": se, "pairs": len(view.eval_pairs)}
    return out


def compare(run_dirs: Sequence[str | Path], names: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs side by side, as data: per run its held-out numbers (with standard errors), diagnostics, advice and curves;
    the configuration keys that differ; and for each run after the first, the paired difference of held-out accuracy
    against the first where both were evaluated on the same pairs."""
    if len(run_dirs) < 2:
        raise PreftuneError("compare: give at least two run folders (preftune compare RUN_A RUN_B ...).")
    views = [collect(Path(d)) for d in run_dirs]
    labels = list(names) if names else _labels([Path(d) for d in run_dirs])
    runs = [{"name": label, "path": str(v.run_dir), "held_out": _held_out(v),
             "diagnostics": {k: {"first_step": e.get("first_step"), "message": e.get("message")} for k, e in v.diagnostics.items()},
             "advice": advice(v), "curves": {m: _series(v, m) for m in CURVES}, "steps": (v.summary or {}).get("steps")}
            for label, v in zip(labels, views, strict=True)]
    paired = []
    base = {pair_key(p): correct(float(p["margin"])) for p in views[0].eval_pairs}
    for label, v in zip(labels[1:], views[1:], strict=True):
        other = {pair_key(p): correct(float(p["margin"])) for p in v.eval_pairs}
        shared = [k for k in base if k in other]
        entry: dict[str, Any] = {"run": label, "against": labels[0], "shared_pairs": len(shared)}
        if shared:
            entry |= paired_bootstrap([base[k] for k in shared], [other[k] for k in shared])
        paired.append(entry)
    return {"runs": runs, "differing": differing_keys([v.config for v in views]), "paired": paired, "labels": labels}


def _labels(paths: list[Path]) -> list[str]:
    names = [p.resolve().name for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


def _fmt(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else _e(x)


def _chart(metric: str, runs: list[dict[str, Any]]) -> str:
    """An inline SVG of `metric` for every run: training steps solid, held-out evaluations dashed with dots."""
    points = [pt for r in runs for part in ("train", "eval") for pt in r["curves"][metric][part]]
    if not points:
        return ""
    w, h, pad = 560, 220, 44
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1e-9)
    sx = lambda x: pad + (x - x0) / (x1 - x0) * (w - 2 * pad)  # noqa: E731
    sy = lambda y: h - pad + (y - y0) / (y1 - y0) * (2 * pad - h)  # noqa: E731
    parts = [f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" class="axis"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" class="axis"/>',
             f'<text x="{pad - 4}" y="{sy(y1) + 4:.1f}" class="tick" text-anchor="end">{y1:.3g}</text>',
             f'<text x="{pad - 4}" y="{sy(y0) + 4:.1f}" class="tick" text-anchor="end">{y0:.3g}</text>',
             f'<text x="{pad}" y="{h - pad + 16}" class="tick">{x0:g}</text>',
             f'<text x="{w - pad}" y="{h - pad + 16}" class="tick" text-anchor="end">step {x1:g}</text>']
    for i, r in enumerate(runs):
        color = COLORS[i % len(COLORS)]
        for part, dash in (("train", ""), ("eval", ' stroke-dasharray="5 3"')):
            pts = r["curves"][metric][part]
            if not pts:
                continue
            d = "M" + "L".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
            parts.append(f'<path class="series" data-run="{_e(r["name"])}" data-part="{part}" d="{d}" stroke="{color}"{dash} fill="none"/>')
            if part == "eval":
                parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}"/>' for x, y in pts]
    return (f'<figure id="chart-{_e(metric.replace("/", "-"))}"><figcaption>{_e(metric)}</figcaption>'
            f'<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{_e(metric)}">{"".join(parts)}</svg></figure>')


STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5}.num{text-align:right;font-variant-numeric:tabular-nums}.charts{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;border:1px solid #eee;padding:6px}figcaption{font-weight:600}.axis{stroke:#999}.tick{font-size:10px;fill:#555}
.series{stroke-width:1.8}.swatch{display:inline-block;width:12px;height:12px;margin-right:6px;vertical-align:middle}
.advice li{margin:4px 0}.none{color:#666}"""


def render(data: dict[str, Any]) -> str:
    """The comparison page."""
    runs = data["runs"]
    legend = "".join(f'<span><span class="swatch" style="background:{COLORS[i % len(COLORS)]}"></span>{_e(r["name"])}</span>&nbsp;&nbsp; '
                     for i, r in enumerate(runs))
    keys = sorted({k for r in runs for k in r["held_out"]})
    held = ["<table id=\"held-out\"><tr><th>run</th>" + "".join(f"<th>{_e(k)}</th>" for k in keys) + "</tr>"]
    for r in runs:
        cells = []
        for k in keys:
            v = r["held_out"].get(k)
            if k == "accuracy" and v is not None:
                cells.append(f'<td class="num">{v:.3f} ± {r["held_out"]["accuracy_stderr"]:.3f}</td>')
            else:
                cells.append(f'<td class="num">{_fmt(v) if v is not None else "–"}</td>')
        held.append(f"<tr><td>{_e(r['name'])}</td>{''.join(cells)}</tr>")
    held.append("</table>")
    diff = data["differing"]
    diff_html = ('<table id="differing"><tr><th>key</th>' + "".join(f"<th>{_e(r['name'])}</th>" for r in runs) + "</tr>"
                 + "".join(f"<tr><td>{_e(k)}</td>" + "".join(f"<td>{_e(json.dumps(v))}</td>" for v in vals) + "</tr>" for k, vals in diff.items())
                 + "</table>") if diff else '<p class="none">The runs have the same settings.</p>'
    paired = []
    for p in data["paired"]:
        if p["shared_pairs"]:
            paired.append(f'<li class="paired" data-run="{_e(p["run"])}">{_e(p["run"])} − {_e(p["against"])}: held-out accuracy '
                          f'{p["difference"]:+.3f}, {p["level"]:.0%} interval [{p["low"]:+.3f}, {p["high"]:+.3f}] over {p["shared_pairs"]} '
                          "shared pairs (paired bootstrap)</li>")
        else:
            paired.append(f'<li>{_e(p["run"])} and {_e(p["against"])} share no held-out pairs: no paired difference.</li>')
    findings = []
    for r in runs:
        fired = ", ".join(f"{k} (step {e['first_step']})" for k, e in r["diagnostics"].items()) or "none"
        tips = "".join(f"<li>{_e(a)}</li>" for a in r["advice"])
        findings.append(f"<h3>{_e(r['name'])}</h3><p>Diagnostics fired: {_e(fired)}</p>" + (f'<ul class="advice">{tips}</ul>' if tips else ""))
    charts = "".join(_chart(m, runs) for m in CURVES)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>preftune: {len(runs)} runs compared</title>'
            f"<style>{STYLE}</style></head><body><h1>{len(runs)} runs compared</h1><p>{legend}</p>"
            f"<h2>Held-out metrics (last evaluation; accuracy ± standard error)</h2>{''.join(held)}"
            f"<h2>Paired differences</h2><ul>{''.join(paired)}</ul>"
            f"<h2>Settings that differ</h2>{diff_html}"
            f"<h2>Curves (training solid, held-out dashed)</h2><div class=\"charts\">{charts}</div>"
            f"<h2>Diagnostics and advice</h2>{''.join(findings)}</body></html>")


def write_compare(run_dirs: Sequence[str | Path], output: str | Path, names: Sequence[str] | None = None) -> tuple[Path, dict[str, Any]]:
    """Write the comparison page to `output`; returns its path and the data it shows."""
    data = compare(run_dirs, names)
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(data), encoding="utf-8")
    return path, data
