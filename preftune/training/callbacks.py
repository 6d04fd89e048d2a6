"""What a training run tells its caller as it goes: callbacks after each step, evaluation, checkpoint and at the end,
and the result it returns."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Metrics = dict[str, float]


@dataclass
class TrainResult:
    """What `train` returns: the logged history (one dict per logged step and per evaluation, as in metrics.jsonl), the
    held-out metrics before and after, the diagnostics that fired, the trained model and where things were written."""

    output_dir: Path | None
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    before: Metrics = field(default_factory=dict)
    after: Metrics = field(default_factory=dict)
    last: Metrics = field(default_factory=dict)
    stop_reason: str | None = None  # None (ran its steps), "early_stopping", "callback", "max_time" or "interrupted"
    seconds: float = 0.0
    findings: list[Any] = field(default_factory=list)
    skipped_steps: int = 0
    model: Any = None
    tokenizer: Any = None
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def interrupted(self) -> bool:
        return self.stop_reason == "interrupted"

    @property
    def stopped_early(self) -> bool:
        return self.stop_reason in ("early_stopping", "callback")


class Callback:
    """Hooks a training run calls on the main process. Override the ones you need; `on_step` or `on_evaluate` returning
    True asks the run to stop after this step (it then evaluates and saves as at a normal end)."""

    def on_step(self, step: int, metrics: Metrics) -> bool | None:
        """After each optimizer step, with the step's metrics (loss, rewards/*, logps/*, ...)."""
        return None

    def on_evaluate(self, step: int, metrics: Metrics) -> bool | None:
        """After each held-out evaluation (step 0 is before training), with the `eval/` metrics."""
        return None

    def on_save(self, checkpoint: Path) -> None:
        """After a checkpoint folder is written."""

    def on_end(self, result: TrainResult) -> None:
        """After the run ended and its model was saved (also after an interruption)."""


class FunctionCallback(Callback):
    """A plain function `f(step, metrics)`, called after each step and each evaluation."""

    def __init__(self, fn: Callable[[int, Metrics], Any]):
        self.fn = fn

    def on_step(self, step: int, metrics: Metrics) -> bool | None:
        return self.fn(step, metrics) is True

    def on_evaluate(self, step: int, metrics: Metrics) -> bool | None:
        return self.fn(step, metrics) is True


HOOKS = ("on_step", "on_evaluate", "on_save", "on_end")


class Callbacks:
    """Every callback of a run, called in order; a stop request from any of them counts. An object needs only the hooks
    it uses; a plain function is called after each step and each evaluation."""

    def __init__(self, items: Iterable[Any] = ()):
        self.items: list[Any] = []
        for c in items:
            if any(hasattr(c, hook) for hook in HOOKS):
                self.items.append(c)
            elif callable(c):
                self.items.append(FunctionCallback(c))
            else:
                raise TypeError(f"callback {c!r}: give a function f(step, metrics) or an object with any of {', '.join(HOOKS)}")

    def _call(self, hook: str, *args: Any) -> bool:
        asked = [getattr(c, hook)(*args) is True for c in self.items if hasattr(c, hook)]
        return any(asked)

    def step(self, step: int, metrics: Metrics) -> bool:
        return self._call("on_step", step, dict(metrics))

    def evaluate(self, step: int, metrics: Metrics) -> bool:
        return self._call("on_evaluate", step, dict(metrics))

    def save(self, checkpoint: Path | None) -> None:
        if checkpoint is not None:
            self._call("on_save", checkpoint)

    def end(self, result: TrainResult) -> None:
        self._call("on_end", result)
