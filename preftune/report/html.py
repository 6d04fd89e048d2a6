"""The self-contained report page: static sections rendered here, charts and explorer drawn by inline scripts."""

from __future__ import annotations

import html
import json
from importlib.resources import files
from typing import Any

import yaml

from ..losses import NAMES, LOSSES, REGISTRY, default_beta, is_unpaired, loss_params, uses_reference
from .collect import RunView
from .panels import DEFAULT_COLOR, KIND_COLORS, OTHER_KIND_COLOR, SERIES_COLORS

HEADLINES = {  # by RunView.kind: held-out metrics for the cards, then the train metrics shown when nothing was held out
    "pairs": (("eval/rewards/accuracies", "eval/rewards/margins", "eval/loss", "eval/rewards/chosen", "eval/rewards/rejected", "eval/logps/chosen"),
              ("loss", "rewards/accuracies", "rewards/margins")),
    "sft": (("eval/loss", "eval/mean_token_accuracy", "eval/perplexity"), ("loss", "mean_token_accuracy", "perplexity")),
    "kto": (("eval/rewards/margins", "eval/loss", "eval/kl", "eval/rewards/chosen", "eval/rewards/rejected", "eval/logps/chosen"),
            ("loss", "kl", "rewards/margins")),
}
SLIDERS = (("pc", "log πθ(y_w)  policy, chosen", -300, 0, 0.1), ("pr", "log πθ(y_l)  policy, rejected", -300, 0, 0.1),
           ("rc", "log πref(y_w)  reference, chosen", -300, 0, 0.1), ("rr", "log πref(y_l)  reference, rejected", -300, 0, 0.1),
           ("beta", "β", 0.01, 5, 0.01), ("lc", "chosen length (tokens)", 1, 400, 1), ("lr", "rejected length (tokens)", 1, 400, 1),
           ("z", "z₀  KTO's KL reference point (nats)", 0, 20, 0.01))
N_PAIRS = 5


def _asset(name: str) -> str:
    return files("preftune.report").joinpath("assets", name).read_text(encoding="utf-8")


def explorer_specs() -> list[dict[str, Any]]:
    """Every loss as the explorer needs it: name, description, default parameters, reference use, default β, and
    whether it is unpaired (KTO: the chosen response as a desirable example, the rejected one as undesirable)."""
    return [{"name": name, "description": REGISTRY[name].description if name in REGISTRY else LOSSES[name], "params": loss_params(name, {}),
             "uses_reference": uses_reference(name), "default_beta": default_beta(name), "unpaired": is_unpaired(name)} for name in NAMES]


def run_beta(config: dict[str, Any]) -> float:
    """The run's β: as set, else its loss's default (0.1; SimPO 2.0)."""
    loss = config.get("loss", {})
    if loss.get("beta") is not None:
        return float(loss["beta"])
    name = loss.get("name", "dpo")
    return default_beta(name) if name in NAMES else 0.1


def explorer_start(view: RunView) -> dict[str, float]:
    """Initial slider values: the run's last held-out means where known, else a typical untrained pair."""
    beta = run_beta(view.config)
    ev = view.eval_rows[-1] if view.eval_rows else {}
    pc, pr = ev.get("eval/logps/chosen", -40.0), ev.get("eval/logps/rejected", -50.0)
    rc = pc - ev.get("eval/rewards/chosen", 0.0) / beta
    rr = pr - ev.get("eval/rewards/rejected", 0.0) / beta
    tokens = view.data.get("tokens", {})
    lc = tokens.get("chosen", {}).get("mean", 40.0)
    lr = tokens.get("rejected", {}).get("mean", 50.0)
    clip = lambda x: round(min(0.0, max(-300.0, float(x))), 1)  # noqa: E731
    return {"pc": clip(pc), "pr": clip(pr), "rc": clip(rc), "rr": clip(rr), "beta": beta, "lc": round(min(400, max(1, lc))), "lr": round(min(400, max(1, lr))),
            "z": round(min(20.0, max(0.0, float(ev.get("eval/kl", 0.0)))), 2)}


def _e(x: Any) -> str:
    return html.escape(str(x))


def _num(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return _e(x)


def _headline(view: RunView) -> str:
    first = view.eval_rows[0] if view.eval_rows else {}
    last = view.eval_rows[-1] if view.eval_rows else {}
    cards = []
    held_out, train_keys = HEADLINES[view.kind]
    for key in held_out:
        if key in last:
            delta = f"from {_num(first[key])} at step {first['step']}" if key in first and first is not last else ""
            cards.append(f'<div class="card"><div class="k">{_e(key)}</div><div class="v">{_num(last[key])}</div><div class="d">{delta}</div></div>')
    if not cards and view.train_rows:
        t = view.train_rows[-1]
        cards = [f'<div class="card"><div class="k">{_e(k)}</div><div class="v">{_num(t[k])}</div><div class="d">last train step</div></div>'
                 for k in train_keys if k in t]
    return f'<div class="cards">{"".join(cards)}</div>'


def _findings(view: RunView, markers: dict[str, list[int]]) -> str:
    skipped = view.summary.get("diagnostics_not_applicable") or {}
    not_watched = "".join(f'<div class="note" id="not-applicable-{_e(kind)}"><b>{_e(kind)}</b> not watched: {_e(why)}.</div>'
                          for kind, why in skipped.items())
    if not markers:
        watched = [k for k in ("chosen_likelihood_falling", "flat_margins", "length_bias", "drift") if k not in skipped]
        return f'<div class="ok">No diagnostic fired ({", ".join(watched)} watched).</div>{not_watched}'
    parts = [not_watched] if not_watched else []
    for kind, steps in markers.items():
        entry = view.diagnostics.get(kind, {})
        msg = entry.get("message", "")
        tip = entry.get("suggestion", "")
        parts.append(f'<div class="finding" id="finding-{_e(kind)}"><b>{_e(kind)}</b> — first at step {steps[0]}, fired at {len(steps)} step(s). '
                     f'{_e(msg)}{"<br>Try: " + _e(tip) if tip else ""}</div>')
    return "".join(parts)


def _pairs_table(rows: list[dict[str, Any]], title: str) -> str:
    if not rows:
        return ""
    body = []
    for r in rows:
        text = "".join(f'<details><summary>{label}: {_e(r[key][:90])}{"…" if len(r[key]) > 90 else ""}</summary><pre>{_e(r[key])}</pre></details>'
                       for label, key in (("prompt", "prompt"), ("chosen", "chosen"), ("rejected", "rejected")))
        body.append(f'<tr><td class="num">{_num(r["margin"])}</td><td class="num">{_num(r["chosen_reward"])}</td><td class="num">{_num(r["rejected_reward"])}</td>'
                    f'<td class="num">{int(r["length_diff"]):+d}</td><td class="text">{text}<div class="note">{_e(r.get("source") or "")}</div></td></tr>')
    return (f'<h3>{_e(title)}</h3><table class="pairs"><thead><tr><th class="num">margin</th><th class="num">chosen reward</th>'
            f'<th class="num">rejected reward</th><th class="num">Δ tokens</th><th>pair</th></tr></thead><tbody>{"".join(body)}</tbody></table>')


def _pairs(view: RunView) -> str:
    pairs = sorted(view.eval_pairs, key=lambda r: r["margin"])
    if not pairs:
        return '<p class="note">No held-out pairs were evaluated in this run (set data.eval or data.eval_fraction).</p>'
    step = pairs[0].get("step", "?")
    n = min(N_PAIRS, len(pairs) // 2 or 1)  # the two tables never show the same pair
    return (f'<p class="sub">{len(pairs)} held-out pairs, margins at step {step}. Smallest margins are where the model still disagrees with the labels.</p>'
            + _pairs_table(list(reversed(pairs[-n:])), "Largest margins") + _pairs_table(pairs[:n] if len(pairs) > 1 else [], "Smallest margins"))


def _samples(view: RunView) -> str:
    """SFT: each held-out prompt with its held-out completion and the model's greedy answers before and after training."""
    if not view.samples:
        return '<p class="note">No samples in this run (they need held-out data, an output folder, one process and sft.samples &gt; 0).</p>'
    steps = sorted({int(r["step"]) for r in view.samples})
    first, last = steps[0], steps[-1]
    by_prompt: dict[str, dict[int, dict[str, Any]]] = {}
    for r in view.samples:
        by_prompt.setdefault(r["prompt"], {})[int(r["step"])] = r
    cols = [(first, f"before (step {first})")] + ([(last, f"after (step {last})")] if last != first else [])
    head = "".join(f"<th>{_e(label)}</th>" for _, label in cols)
    rows = []
    for prompt, at in by_prompt.items():
        target = next(iter(at.values())).get("target", "")
        cells = "".join(f'<td class="text"><pre>{_e(at[step]["answer"]) if step in at else ""}</pre>'
                        f'{"" if step not in at or at[step].get("finished", True) else "<div class=note>(cut at max_new_tokens)</div>"}</td>' for step, _ in cols)
        rows.append(f'<tr><td class="text"><pre>{_e(prompt)}</pre></td><td class="text"><pre>{_e(target)}</pre></td>{cells}</tr>')
    return (f'<p class="sub">Greedy answers (generation.max_new_tokens) to {len(by_prompt)} held-out prompt(s), before and after training; '
            f'the held-out completion is what the data says.</p><table class="pairs samples"><thead><tr><th>prompt</th><th>held-out completion</th>'
            f'{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')


def _data(view: RunView) -> str:
    d = view.data
    if not d:
        return '<p class="note">No data summary in this run folder.</p>'
    unit = "pairs" if view.kind == "pairs" else "examples"
    rows = [(f"train {unit}", d.get("train_pairs")), (f"held-out {unit}", d.get("eval_pairs")), ("format", d.get("format"))]
    if view.kind == "pairs":
        rows.append(("chosen longer than rejected", f"{d.get('chosen_longer_share', 0):.0%}"))
    rows += [(f"skipped: {k}", v) for k, v in (d.get("errors") or {}).items()]
    rows += [(f"removed: {k}", v) for k, v in (d.get("removed") or {}).items()]
    rows += [(f"tokenization: {k}", v) for k, v in (d.get("truncation") or {}).items()]
    counts = "".join(f"<tr><td>{_e(k)}</td><td class='num'>{_num(v)}</td></tr>" for k, v in rows)
    tok = d.get("tokens", {})
    lengths = "".join(f"<tr><td>{_e(part)}</td>" + "".join(f"<td class='num'>{s.get(k, 0):.1f}</td>" for k in ("mean", "median", "p95", "max")) + "</tr>"
                      for part, s in tok.items() if s)
    return (f'<div class="two"><div><h3>Counts</h3><table><tbody>{counts}</tbody></table></div>'
            f'<div><h3>Token lengths (train)</h3><table><thead><tr><th></th><th class="num">mean</th><th class="num">median</th>'
            f'<th class="num">p95</th><th class="num">max</th></tr></thead><tbody>{lengths}</tbody></table></div></div>')


def _explorer(start: dict[str, float]) -> str:
    controls = "".join(f'<label>{_e(label)}<input type="range" data-field="{key}" id="in-{key}" min="{lo}" max="{hi}" step="{step}" value="{start[key]}">'
                       f'<output id="val-{key}">{start[key]}</output></label>' for key, label, lo, hi, step in SLIDERS)
    controls += '<label>length-normalize<input type="checkbox" data-field="length_normalize" id="in-length_normalize"><output id="val-length_normalize">off</output></label>'
    derived = "".join(f'<span>{_e(label)} <b id="{i}"></b></span>' for i, label in (
        ("x-chosen-logratio", "chosen log-ratio"), ("x-rejected-logratio", "rejected log-ratio"), ("x-margin", "margin h"),
        ("x-beta-margin", "β·h"), ("x-sigma", "σ(β·h)"), ("x-weight", "gradient weight β·σ(−β·h)"), ("x-dpo-loss", "DPO loss")))
    return (f'<div id="explorer"><p class="sub">Move the log-probabilities and β: every loss in the registry updates live, computed by the same '
            f'formulas as <code>preftune.losses.compute_loss</code> for one pair. Sliders start at this run\'s last held-out means.</p>'
            f'<div class="controls">{controls}</div>'
            f'<div class="bars" title="log-ratios: chosen (green), rejected (red)"><div class="axis0"></div><div class="bar" id="bar-chosen"></div>'
            f'<div class="bar" id="bar-rejected"></div></div><p class="note">Bars: log-ratios log πθ − log πref of the chosen (green) and '
            f'rejected (red) response; zero at the centre line.</p><div class="derived">{derived}</div>'
            '<table id="loss-table"><thead><tr><th>loss</th><th class="num">loss</th><th class="num">chosen reward</th><th class="num">rejected reward</th>'
            '<th class="num">∂L/∂log πθ(y_w)</th><th class="num">∂L/∂log πθ(y_l)</th></tr></thead><tbody></tbody></table>'
            '<p class="note">‡ reference-free (the reference sliders do not apply). Rewards are β·log-ratios (SimPO, ORPO: β·average log-prob). '
            'KTO scores the chosen response as a desirable and the rejected one as an undesirable example against z₀ (the mean of the two losses; '
            'length normalization does not apply to it). '
            'A negative ∂L/∂log πθ(y_w) means training raises the chosen response\'s likelihood. Variant parameters are the registry defaults. '
            'The highlighted row is this run\'s loss.</p></div>')


def _findings_section(view: RunView, markers: dict[str, list[int]]) -> str:
    if view.kind == "sft":
        return ""  # the detectors watch DPO's failure modes, which SFT does not have
    return f"<h2>Diagnostics</h2>{_findings(view, markers)}"


def _middle(view: RunView, start: dict[str, float]) -> str:
    """The sections between the curves and the data: SFT's samples; KTO's explorer; a pair loss's held-out pairs and explorer."""
    if view.kind == "sft":
        return f"<h2>Samples before and after</h2>{_samples(view)}"
    explorer = f"<h2>Loss explorer</h2>{_explorer(start)}"
    if view.kind == "kto":
        return ('<p class="note">KTO scores single completions; <code>preftune eval RUN --data PAIRS</code> scores held-out pairs by its implicit '
                f'rewards.</p>{explorer}')
    return f"<h2>Held-out pairs</h2>{_pairs(view)}{explorer}"


def render(view: RunView, charts: list[dict[str, Any]], markers: dict[str, list[int]], png_names: list[str]) -> str:
    """The whole page as one string."""
    cfg = view.config
    loss = cfg.get("loss", {})
    model = cfg.get("model", {})
    title = f"preftune report — {view.run_dir.resolve().name}"
    steps = view.train_rows[-1]["step"] if view.train_rows else 0
    status = (f"finished: {view.summary.get('steps')} steps in {view.summary.get('seconds', 0):.0f} s" if view.finished
              else f"in progress or interrupted: {steps} steps logged")
    lora = model.get("lora", {})
    objective = (f"<b>SFT</b> (token-mean NLL on {'completion tokens' if (cfg.get('sft') or {}).get('completion_only_loss', True) else 'every token'})"
                 if view.kind == "sft" else f"loss <b>{_e(loss.get('name'))}</b> (β = {run_beta(cfg):g})")
    sub = (f"model <code>{_e(model.get('name_or_path'))}</code> · {objective} · "
           f"{'LoRA r=' + _e(lora.get('r')) if lora.get('enabled') else 'full fine-tuning'} · {status}")
    payload = {"charts": charts, "markers": markers,
               "colors": {"series": SERIES_COLORS, "default": DEFAULT_COLOR, "kinds": KIND_COLORS, "other_kind": OTHER_KIND_COLOR},
               "explorer": {"losses": explorer_specs(), "current": loss.get("name"), "start": explorer_start(view)}}
    data_json = json.dumps(payload).replace("</", "<\\/")
    kinds = "".join(f'<span><i style="background:{KIND_COLORS.get(k, OTHER_KIND_COLOR)}"></i>{_e(k)}</span>' for k in markers)
    pngs = ", ".join(f'<code>plots/{_e(n)}</code>' for n in png_names)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{_asset("report.css")}</style></head>
<body><main>
<h1>{_e(title)}</h1><p class="sub">{sub}</p>
{_headline(view)}
{_findings_section(view, markers)}
<h2>Training curves</h2>
<p class="sub">Solid: training steps; dashed with dots: held-out evaluations. {('Marks at the top: where a diagnostic fired. <span class="marker-legend">' + kinds + '</span>') if kinds else ''}</p>
<div id="charts"></div>
<p class="note">PNG copies: {pngs or 'none'}.</p>
{_middle(view, payload["explorer"]["start"])}
<h2>Data</h2>{_data(view)}
<h2>Settings</h2><pre class="yaml">{_e(yaml.safe_dump(cfg, sort_keys=False))}</pre>
</main>
<script type="application/json" id="run-data">{data_json}</script>
<script>{_asset("losses.js")}</script>
<script>{_asset("report.js")}</script>
</body></html>
"""
