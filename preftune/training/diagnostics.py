"""Detectors of DPO's known failure modes, run on the metrics as training goes.

Each detector is a pure function of the metric history; `Diagnostics` runs them, warns once per kind,
and records where each fired (for the metrics file and the report).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..config import DiagnosticsConfig
from ..stats import correlation

logger = logging.getLogger("preftune.diagnostics")


@dataclass(frozen=True)
class Finding:
    """A detector that fired: which, at what step, what it saw and what to try."""

    kind: str
    step: int
    message: str
    suggestion: str

    def __str__(self) -> str:
        return f"step {self.step}: {self.message} Try: {self.suggestion}"


def chosen_likelihood_falling(history: Sequence[dict[str, float]], threshold: float) -> str | None:
    """The chosen response's mean log-ratio (log πθ − log πref, `logratios/chosen`) is below −threshold while the margin
    is above its first value (steps without a margin, such as a KTO batch with one label only, are passed over)."""
    first = next((h for h in history if "rewards/margins" in h), None)
    last = history[-1] if history else {}
    if first is None or first is last or "logratios/chosen" not in last or "rewards/margins" not in last:
        return None
    chosen_ratio = last["logratios/chosen"]
    if chosen_ratio < -threshold and last["rewards/margins"] > first["rewards/margins"]:
        return (f"the chosen response's log-likelihood is {chosen_ratio:.1f} nats below the reference while the margin grows "
                f"({first['rewards/margins']:+.3f} → {last['rewards/margins']:+.3f}): DPO is winning pairs by pushing both responses down.")
    return None


def flat_margins(evals: Sequence[dict[str, float]], n: int, min_delta: float) -> str | None:
    """Held-out margins have not risen by `min_delta` over the last `n` evaluations."""
    margins = [e["eval/rewards/margins"] for e in evals if "eval/rewards/margins" in e]
    if len(margins) < n:
        return None
    window = margins[-n:]
    if max(window[1:]) - window[0] < min_delta:
        return f"held-out rewards/margins has not risen over {n} evaluations ({', '.join(f'{m:+.3f}' for m in window)})."
    return None


def length_bias(margins: Sequence[float], length_diffs: Sequence[float], threshold: float) -> str | None:
    """Per-pair reward margins follow the length difference (chosen − rejected tokens)."""
    r = correlation(margins, length_diffs)
    if abs(r) > threshold:
        longer = sum(d > 0 for d in length_diffs) / len(length_diffs)
        return (f"per-pair reward margins correlate with the length difference (r = {r:+.2f}; chosen is longer in {longer:.0%} of pairs): "
                "the model may be learning length, not preference.")
    return None


def drift(history: Sequence[dict[str, float]], threshold: float) -> str | None:
    """The mean log-ratio of chosen or rejected responses (`logratios/*`) beyond ±`threshold` nats: the policy has moved
    far from the reference."""
    ratios = [abs(history[-1][k]) for k in ("logratios/chosen", "logratios/rejected") if history and k in history[-1]]
    if not ratios:
        return None
    worst = max(ratios)
    if worst > threshold:
        return f"the policy has drifted {worst:.0f} nats (mean |log-ratio|) from the reference."
    return None


SUGGESTIONS = {
    "chosen_likelihood_falling": "loss.name: dpop (DPO-Positive) or rpo (adds the chosen NLL).",
    "flat_margins": "filter low-confidence pairs (data.filters.min_confidence), raise the learning rate, or lower β.",
    "length_bias": "loss.length_normalize: true, or loss.name: simpo.",
    "drift": "lower the learning rate or raise β.",
}


NEEDS_REFERENCE = ("chosen_likelihood_falling", "drift")  # detectors of log-ratios against the reference


def not_applicable(uses_reference: bool, loss_name: str) -> dict[str, str]:
    """The detectors that do not apply to a run, each with why (for the report): a loss with no reference has no
    log-ratios, so the detectors of the chosen likelihood against the reference and of drift cannot run."""
    if uses_reference:
        return {}
    why = f"{loss_name} has no reference model, so there are no log-ratios (log πθ − log πref) to watch"
    return {kind: why for kind in NEEDS_REFERENCE}


@dataclass
class Diagnostics:
    """Runs the detectors on train and eval metrics; warns once per kind and keeps every finding. `skipped` names the
    detectors that do not apply to this run, with why."""

    config: DiagnosticsConfig
    skipped: dict[str, str] = field(default_factory=dict)
    train_history: list[dict[str, float]] = field(default_factory=list)
    eval_history: list[dict[str, float]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    warned: set[str] = field(default_factory=set)

    def _fire(self, kind: str, step: int, message: str | None) -> dict[str, float]:
        if message is None:
            return {}
        finding = Finding(kind, step, message, SUGGESTIONS[kind])
        self.findings.append(finding)
        if kind not in self.warned:
            self.warned.add(kind)
            logger.warning("diagnostic %s: %s", kind, finding)
        return {f"diagnostics/{kind}": 1.0}

    def observe_train(self, step: int, metrics: dict[str, float]) -> dict[str, float]:
        """Metrics `diagnostics/<kind>` = 1 for each detector that fires on this step."""
        if not self.config.enabled:
            return {}
        self.train_history.append(metrics)
        out: dict[str, float] = {}
        if "chosen_likelihood_falling" not in self.skipped:
            out |= self._fire("chosen_likelihood_falling", step, chosen_likelihood_falling(self.train_history, self.config.chosen_drop_nats))
        if "drift" not in self.skipped:
            out |= self._fire("drift", step, drift(self.train_history, self.config.drift_logratio_nats))
        return out

    def summary(self) -> dict[str, dict]:
        """Per kind: the first finding's step, message and suggestion, and every step where it fired (for the report)."""
        out: dict[str, dict] = {}
        for f in self.findings:
            entry = out.setdefault(f.kind, {"first_step": f.step, "message": f.message, "suggestion": f.suggestion, "steps": []})
            if f.step not in entry["steps"]:
                entry["steps"].append(f.step)
        return out

    def observe_eval(self, step: int, metrics: dict[str, float], margins: Sequence[float] = (), length_diffs: Sequence[float] = ()) -> dict[str, float]:
        if not self.config.enabled:
            return {}
        self.eval_history.append(metrics)
        out = self._fire("flat_margins", step, flat_margins(self.eval_history, self.config.flat_margin_evals, self.config.flat_margin_min_delta))
        if margins:
            out |= self._fire("length_bias", step, length_bias(margins, length_diffs, self.config.length_correlation))
        return out
