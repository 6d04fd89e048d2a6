"""Which curves the report draws, and their points: a pure function of the metrics rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


SERIES_COLORS = {"rewards/chosen": "#1a7f37", "logps/chosen": "#1a7f37", "rewards/rejected": "#cf222e", "logps/rejected": "#cf222e"}
DEFAULT_COLOR = "#0969da"
KIND_COLORS = {"chosen_likelihood_falling": "#bf8700", "flat_margins": "#8250df", "length_bias": "#d1242f", "drift": "#57606a"}
OTHER_KIND_COLOR = "#57606a"


@dataclass(frozen=True)
class Panel:
    """One chart: an id, a title, a y-axis label and the metric names it draws (train and `eval/` each)."""

    id: str
    title: str
    ylabel: str
    metrics: tuple[str, ...]


LR = Panel("lr", "Learning rate", "learning rate", ("learning_rate",))
GRAD_NORM = Panel("grad_norm", "Gradient norm (before clipping)", "norm", ("grad_norm",))
PANELS = (
    Panel("loss", "Loss", "loss", ("loss",)),
    Panel("rewards", "Implicit rewards β·log(πθ/πref)", "reward", ("rewards/chosen", "rewards/rejected")),
    Panel("margins", "Reward margin (chosen − rejected)", "margin", ("rewards/margins",)),
    Panel("accuracy", "Reward accuracy (ties count ½)", "accuracy", ("rewards/accuracies",)),
    Panel("logps", "Log-probabilities of the responses", "log p (nats)", ("logps/chosen", "logps/rejected")),
    Panel("drift", "Drift: mean |log πθ − log πref| (KL proxy)", "nats", ("drift/abs_logratio",)),
    LR, GRAD_NORM,
)
SFT_PANELS = (
    Panel("loss", "Loss: token-mean negative log-likelihood of the completions", "nats per token", ("loss",)),
    Panel("accuracy", "Token accuracy (the label is the most likely token)", "accuracy", ("mean_token_accuracy",)),
    Panel("perplexity", "Perplexity exp(loss)", "perplexity", ("perplexity",)),
    LR, GRAD_NORM,
)
KTO_PANELS = (
    Panel("loss", "Loss", "loss", ("loss",)),
    Panel("rewards", "Implicit rewards β·log(πθ/πref): desirable (chosen), undesirable (rejected)", "reward", ("rewards/chosen", "rewards/rejected")),
    Panel("margins", "Reward margin (desirable − undesirable mean)", "margin", ("rewards/margins",)),
    Panel("kl", "KL reference point z₀ (mismatched pairs' mean log-ratio, ≥ 0)", "nats", ("kl",)),
    Panel("logps", "Log-probabilities of the completions", "log p (nats)", ("logps/chosen", "logps/rejected")),
    LR, GRAD_NORM,
)


PANELS_OF = {"pairs": PANELS, "sft": SFT_PANELS, "kto": KTO_PANELS}  # by RunView.kind


def series(train_rows: list[dict[str, Any]], eval_rows: list[dict[str, Any]], panel: Panel) -> list[dict[str, Any]]:
    """The panel's lines: for each metric, its train points and its held-out (`eval/`) points, where logged."""
    out = []
    for name in panel.metrics:
        for split, rows, key in (("train", train_rows, name), ("eval", eval_rows, f"eval/{name}")):
            points = [[int(r["step"]), float(r[key])] for r in rows if isinstance(r.get(key), (int, float))]
            if points:
                out.append({"label": f"{split} {name}", "metric": name, "split": split, "points": points})
    return out


def diagnostic_steps(train_rows: list[dict[str, Any]], eval_rows: list[dict[str, Any]], diagnostics: dict[str, dict[str, Any]]) -> dict[str, list[int]]:
    """Per detector kind, the steps at which it fired (from diagnostics.json, else from the logged flags)."""
    steps: dict[str, set[int]] = {}
    for kind, entry in diagnostics.items():
        steps.setdefault(kind, set()).update(int(s) for s in entry.get("steps", []))
    for row in [*train_rows, *eval_rows]:
        for key, value in row.items():
            if key.startswith("diagnostics/") and value:
                steps.setdefault(key.split("/", 1)[1], set()).add(int(row["step"]))
    return {k: sorted(v) for k, v in sorted(steps.items())}


def chart_data(train_rows: list[dict[str, Any]], eval_rows: list[dict[str, Any]], panels: tuple[Panel, ...] = PANELS) -> list[dict[str, Any]]:
    """Every panel with at least one line, as JSON-ready dicts for the page and the PNGs."""
    charts = []
    for panel in panels:
        lines = series(train_rows, eval_rows, panel)
        if lines:
            charts.append({"id": panel.id, "title": panel.title, "ylabel": panel.ylabel, "series": lines})
    return charts
