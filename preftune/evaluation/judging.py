"""Judges: a user-named `module:function` that scores one response (reward) or compares two (pairwise), and the win
rates and rewards computed with one. Only the named module is imported; nothing is fetched or evaluated from data."""

from __future__ import annotations

import importlib
import inspect
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..config import JudgeConfig
from ..errors import JudgeError

JudgeKind = Literal["reward", "pairwise"]


@dataclass
class Judge:
    """`reward(prompt, response) -> float`, or `compare(prompt, a, b) -> 0 (a better) | 1 (b better) | 0.5 (tie)`."""

    name: str
    kind: JudgeKind
    fn: Callable[..., Any]
    args: dict[str, Any] = field(default_factory=dict)

    def reward(self, prompt: str, response: str) -> float:
        if self.kind != "reward":
            raise JudgeError(f"judge {self.name} compares two responses; a reward judge (prompt, response) -> float is needed here.")
        value = self._call(prompt, response)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise JudgeError(f"judge {self.name} returned {value!r} for prompt {prompt[:60]!r}; a reward judge must return a finite number.")
        return float(value)

    def compare(self, prompt: str, a: str, b: str) -> float:
        if self.kind == "reward":
            ra, rb = self.reward(prompt, a), self.reward(prompt, b)
            return 0.0 if ra > rb else 1.0 if rb > ra else 0.5
        value = self._call(prompt, a, b)
        if value not in (0, 1, 0.5) or isinstance(value, bool):
            raise JudgeError(f"judge {self.name} returned {value!r} for prompt {prompt[:60]!r}; a pairwise judge returns 0 (first better), 1 (second better) or 0.5 (tie).")
        return float(value)

    def _call(self, *args: str) -> Any:
        try:
            return self.fn(*args, **self.args)
        except JudgeError:
            raise
        except Exception as e:
            raise JudgeError(f"judge {self.name} raised {type(e).__name__}: {e} (prompt {args[0][:60]!r}). Fix the judge or its args.") from e


def load_judge(cfg: JudgeConfig) -> Judge:
    """Import `module:function` (or `module:Class.method`) from an installed module or one on PYTHONPATH, and tell its kind."""
    name = cfg.name
    if name.count(":") != 1 or not all(name.split(":")):
        raise JudgeError(f"judge '{name}': expected module:function, e.g. preftune.judges:arithmetic_exact_match or my_judges:helpfulness.")
    module_name, attr = name.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise JudgeError(f"judge '{name}': cannot import module '{module_name}' ({e}). Fix: install it or put its folder on PYTHONPATH.") from None
    except Exception as e:  # noqa: BLE001 - the module's own code failed while it was imported
        raise JudgeError(f"judge '{name}': importing module '{module_name}' failed ({type(e).__name__}: {e}). Fix the module so it imports.") from None
    fn: Any = module
    for part in attr.split("."):
        try:
            fn = getattr(fn, part, None)
        except Exception as e:  # noqa: BLE001 - a property or module __getattr__ that raises
            raise JudgeError(f"judge '{name}': reading '{attr}' failed ({type(e).__name__}: {e}).") from None
        if fn is None:
            raise JudgeError(f"judge '{name}': module '{module_name}' has no '{attr}'.")
    if not callable(fn):
        raise JudgeError(f"judge '{name}': '{attr}' is not callable.")
    kind = cfg.kind if cfg.kind != "auto" else _kind_of(fn, name, set(cfg.args))
    return Judge(name, kind, fn, dict(cfg.args))


def _kind_of(fn: Callable[..., Any], name: str, given: set[str]) -> JudgeKind:
    """reward with 2 required positional parameters, pairwise with 3 (those filled by judge.args not counted)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        raise JudgeError(f"judge '{name}': cannot read its signature. Fix: set judge.kind to reward or pairwise.") from None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty and p.name not in given]
    if len(positional) == 2:
        return "reward"
    if len(positional) == 3:
        return "pairwise"
    raise JudgeError(f"judge '{name}' takes {len(positional)} required positional argument(s); a reward judge takes (prompt, response), "
                     "a pairwise judge (prompt, a, b). Fix the function or set judge.kind.")


def rewards(judge: Judge, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    return [judge.reward(p, r) for p, r in zip(prompts, responses, strict=True)]


def win_rate(judge: Judge, prompts: Sequence[str], policy: Sequence[str], reference: Sequence[str], seed: int = 0) -> dict[str, float]:
    """Share of prompts on which the policy's response beats the reference's (ties 0.5). A pairwise judge sees the two in
    a random order per prompt, so a judge that favours a position does not favour either model."""
    rng = random.Random(seed)
    wins = ties = 0.0
    for p, a, b in zip(prompts, policy, reference, strict=True):
        if judge.kind == "pairwise" and rng.random() < 0.5:
            outcome = 1.0 - judge.compare(p, b, a)
        else:
            outcome = judge.compare(p, a, b)
        wins += 1.0 - outcome  # outcome 0: the policy's response (a) is better
        ties += outcome == 0.5
    n = len(policy)
    return {"win_rate": wins / n if n else float("nan"), "tie_rate": ties / n if n else float("nan"), "comparisons": float(n)}
