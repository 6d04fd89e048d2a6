"""Sweeps on Optuna: a search space over any config key, an objective that is a held-out metric, Optuna's samplers and
pruners, a trial budget and a wall-time budget. Every trial is an ordinary run folder (`SWEEP_DIR/trial-NNNN`); the
study lives in Optuna's storage (a SQLite file in the sweep folder by default, or any database URL Optuna accepts),
so several processes can work one study and a killed sweep resumes where it stopped. At the end of each worker:
`best.yaml` (the best trial's full configuration) and `compare.html` (the finished trials side by side)."""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .config import Overrides, load_config, parse_seconds
from .errors import ConfigError, PreftuneError

logger = logging.getLogger("preftune.sweep")
STUDY_FILE = "study.db"
BEST = "best.yaml"
COMPARE = "compare.html"


class Dimension(BaseModel):
    """One searched key: `choices` (a list), or a range `low`..`high` (`log` scale, integer `type`, a `step`)."""

    model_config = ConfigDict(extra="forbid")

    choices: list[Any] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    type: Literal["float", "int"] = "float"

    @model_validator(mode="after")
    def _one_kind(self) -> "Dimension":
        if self.choices is not None:
            if not self.choices or any(v is not None for v in (self.low, self.high, self.step)):
                raise ValueError("give either a non-empty `choices` list, or `low` and `high` (not both)")
            return self
        if self.low is None or self.high is None or not self.low < self.high:
            raise ValueError("a range needs `low` < `high` (or give `choices`)")
        if self.log and self.low <= 0:
            raise ValueError("a log-scale range needs `low` > 0")
        return self


class SweepSpace(BaseModel):
    """The sweep file: what to optimize, how to search, and the budgets."""

    model_config = ConfigDict(extra="forbid")

    space: dict[str, Dimension] = Field(min_length=1, description="config key -> its choices or range")
    metric: str = Field("eval/rewards/accuracies", description="the held-out metric to optimize (an eval/ key of the runs)")
    direction: Literal["maximize", "minimize"] = "maximize"
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: Literal["median", "none"] = "median"
    trials: int = Field(8, ge=1, description="trials that ran to the end or were pruned, at which the study stops (it also stops "
                        "after this many failed trials)")
    max_time: float | None = Field(None, gt=0, description="wall-time budget of one worker, in seconds or with a unit (15m, 2h)")
    seed: int = 0
    storage: str | None = Field(None, description="an Optuna storage URL; default: sqlite in the sweep folder")
    study: str | None = Field(None, description="the study's name; default: the sweep folder's name")
    heartbeat_seconds: int = Field(30, ge=1, description="a worker's trial that sends no heartbeat for twice this is taken as dead")

    @field_validator("max_time", mode="before")
    @classmethod
    def _seconds(cls, v: Any) -> Any:
        return parse_seconds(v)

    @model_validator(mode="after")
    def _grid_needs_choices(self) -> "SweepSpace":
        if self.sampler == "grid":
            ranged = [k for k, d in self.space.items() if d.choices is None]
            if ranged:
                raise ValueError(f"sampler grid needs `choices` for every key; {', '.join(ranged)} give a range")
        return self


def load_space(path: str | Path) -> SweepSpace:
    """Read and check a sweep file; errors name the file and the key."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror or e}). Fix: give the sweep's YAML file.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text. Fix: give the sweep's YAML file, saved as UTF-8.") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({getattr(e, 'problem', e)}). Fix the syntax.") from None
    try:
        return SweepSpace.model_validate(data)
    except ValidationError as e:
        lines = [f"  - {'.'.join(str(x) for x in err['loc']) or '(top level)'}: {err['msg']}" for err in e.errors()]
        raise ConfigError(f"{path}: invalid sweep:\n" + "\n".join(lines)) from None


def _suggest(trial: Any, key: str, dim: Dimension) -> Any:
    if dim.choices is not None:
        return trial.suggest_categorical(key, dim.choices)
    if dim.type == "int":
        return trial.suggest_int(key, int(dim.low), int(dim.high), step=int(dim.step or 1), log=dim.log)  # type: ignore[arg-type]
    return trial.suggest_float(key, dim.low, dim.high, step=dim.step, log=dim.log)  # type: ignore[arg-type]


def check_keys(config: Any, space: SweepSpace, overrides: Overrides | None) -> None:
    """Every searched key is a key of the run configuration (tried with the first value of each dimension)."""
    first = {k: (d.choices[0] if d.choices is not None else d.low if d.type == "float" else int(d.low)) for k, d in space.space.items()}  # type: ignore[arg-type]
    try:
        load_config(config, _merge(overrides, first))
    except ConfigError as e:
        raise ConfigError(f"the sweep's space does not fit the run configuration:\n{e}") from None


def _merge(overrides: Overrides | None, values: dict[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] = {}
    if isinstance(overrides, dict):
        base |= overrides
    elif overrides:
        from .config import parse_override

        for text in overrides:
            keys, value = parse_override(text)
            base[".".join(keys)] = value
    return base | values


def sweep(config: Any, space: SweepSpace | str | Path, output_dir: str | Path, *, overrides: Overrides | None = None,
          progress: bool = False) -> dict[str, Any]:
    """Run (or resume, or join) the sweep in `output_dir`; returns the study's summary: the trials by state, the best
    trial's number, value and settings, and the files written."""
    import optuna

    from .api import train

    space = load_space(space) if not isinstance(space, SweepSpace) else space
    check_keys(config, space, overrides)
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{out}: cannot create the sweep folder ({e.strerror or e}). Fix: give another --output.") from None
    url = space.storage or f"sqlite:///{(out / STUDY_FILE).resolve()}"
    engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else None  # workers wait for each other's writes
    storage = open_storage(url, engine, space.heartbeat_seconds)
    sampler = (optuna.samplers.GridSampler({k: d.choices for k, d in space.space.items()}, seed=space.seed) if space.sampler == "grid"
               else optuna.samplers.RandomSampler(seed=space.seed) if space.sampler == "random" else optuna.samplers.TPESampler(seed=space.seed))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0) if space.pruner == "median" else optuna.pruners.NopPruner()
    study = optuna.create_study(study_name=space.study or out.resolve().name, storage=storage, sampler=sampler, pruner=pruner,
                                direction=space.direction, load_if_exists=True)
    optuna.storages.fail_stale_trials(study)  # a trial whose worker was killed (no heartbeat) is marked failed, and not waited on
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)  # a failed or killed trial does not use up the budget

    def budget_spent() -> bool:
        return (len(study.get_trials(deepcopy=False, states=done)) >= space.trials
                or len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))) >= space.trials)

    def objective(trial: Any) -> float:
        values = {k: _suggest(trial, k, d) for k, d in space.space.items()}
        folder = out / f"trial-{trial.number:04d}"
        trial.set_user_attr("folder", str(folder))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        pruned = {"at": None}

        def report(step: int, metrics: dict[str, float]) -> bool:
            value = metrics.get(space.metric)
            if step == 0 or value is None:
                return False
            trial.report(float(value), step)
            if trial.should_prune():
                pruned["at"] = step
                return True
            return False

        try:
            result = train(config, overrides=_merge(overrides, values), output_dir=folder, callbacks=[EvaluationHook(report)], progress=progress)
        except PreftuneError as e:
            trial.set_user_attr("error", str(e))
            raise
        if pruned["at"] is not None:
            raise optuna.TrialPruned(f"pruned at step {pruned['at']}")
        if space.metric not in result.after:
            raise PreftuneError(f"metric {space.metric} was not logged by the trial's held-out evaluation (logged: "
                                f"{', '.join(sorted(result.after)) or 'nothing: no held-out data'}). Fix: name an eval/ metric of the runs.")
        return float(result.after[space.metric])

    def enough(study: Any, trial: Any) -> None:
        if budget_spent():
            study.stop()

    started = time.time()
    if not budget_spent():
        study.optimize(objective, timeout=space.max_time, callbacks=[enough], catch=(Exception,))
    return finish(study, out, started)


def open_storage(url: str, engine: dict[str, Any] | None, heartbeat: int, tries: int = 5) -> Any:
    """Optuna's RDB storage of a study. Workers starting together race to create the schema's version row (SQLite:
    "UNIQUE constraint failed: alembic_version"); the loser opens what the winner made on its next try."""
    import optuna
    from sqlalchemy.exc import IntegrityError

    for attempt in range(tries):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat, grace_period=2 * heartbeat)
        except IntegrityError:
            if attempt == tries - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def finish(study: Any, out: Path, started: float) -> dict[str, Any]:
    """best.yaml and compare.html from the study's finished trials; the summary `sweep` returns."""
    import optuna

    from .report.compare import write_compare

    trials = study.get_trials(deepcopy=False)
    by_state: dict[str, int] = {}
    for t in trials:
        by_state[t.state.name.lower()] = by_state.get(t.state.name.lower(), 0) + 1
    summary: dict[str, Any] = {"study": study.study_name, "trials": by_state, "seconds": time.time() - started, "files": {}}
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        config = yaml.safe_load((Path(best.user_attrs["folder"]) / "config.yaml").read_text(encoding="utf-8"))
        (out / BEST).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        summary |= {"best": {"trial": best.number, "value": best.value, "params": best.params, "folder": best.user_attrs["folder"]}}
        summary["files"]["best"] = str(out / BEST)
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
                and (Path(t.user_attrs.get("folder", "")) / "metrics.jsonl").exists()]
    if len(finished) >= 2:
        path, _ = write_compare([t.user_attrs["folder"] for t in finished], out / COMPARE, names=[f"trial-{t.number:04d}" for t in finished])
        summary["files"]["compare"] = str(path)
    failed = {t.number: t.user_attrs.get("error", t.system_attrs.get("fail_reason", "")) for t in trials if t.state == optuna.trial.TrialState.FAIL}
    if failed:
        summary["failed"] = failed
    return summary



class EvaluationHook:
    """A callback that sees only held-out evaluations: `fn(step, metrics)` returning True stops the run."""

    def __init__(self, fn: Any):
        self.on_evaluate = fn
