"""`preftune sweep`: trials are run folders in an Optuna study kept in the sweep folder; weak trials are pruned from the
held-out evaluations, a failing trial is recorded and the sweep goes on, two workers share one study, and a sweep
killed with SIGKILL resumes where it stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import preftune
from preftune.errors import ConfigError
from preftune.sweeping import load_space

from ..training.helpers import toy_data


def base_config(tmp: Path, model_dir: Path) -> Path:
    cfg = {"model": {"name_or_path": str(model_dir)},
           "data": {"train": str(toy_data(tmp)), "eval_fraction": 0.25, "cache_dir": str(tmp / "tok")},
           "train": {"batch_size": 4, "max_steps": 4, "eval_every": 2, "learning_rate": 1e-3, "warmup_ratio": 0.0, "shuffle": False},
           "reference": {"cache_dir": str(tmp / "ref")}, "report": False}
    path = tmp / "base.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def space_file(tmp: Path, name: str, **sweep: object) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"metric": "eval/rewards/margins", "direction": "maximize", **sweep}))
    return path


def train_steps(folder: Path) -> int:
    return sum('"loss"' in line and '"eval/' not in line for line in (folder / "metrics.jsonl").read_text().splitlines())


def test_a_weak_trial_is_pruned_from_its_held_out_evaluations(tmp_path: Path, tiny_model_dir: Path) -> None:
    base, out = base_config(tmp_path, tiny_model_dir), tmp_path / "sweep"
    good = space_file(tmp_path, "good", space={"train.learning_rate": {"low": 0.02, "high": 0.0201}}, trials=1, sampler="random")
    weak = space_file(tmp_path, "weak", space={"train.learning_rate": {"low": 1e-9, "high": 1.01e-9}}, trials=2, sampler="random")
    first = preftune.sweep(base, good, out)
    assert first["trials"] == {"complete": 1} and first["best"]["trial"] == 0
    second = preftune.sweep(base, weak, out)
    assert second["trials"] == {"complete": 1, "pruned": 1}
    assert train_steps(out / "trial-0001") == 2 < train_steps(out / "trial-0000") == 4  # stopped at its first evaluation
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["train"]["learning_rate"] == pytest.approx(first["best"]["params"]["train.learning_rate"])
    assert best["output_dir"] == str(out / "trial-0000")
    page = (out / "compare.html").read_text()
    assert "trial-0000" in page and "trial-0001" in page and "train.learning_rate" in page


def test_a_failing_trial_is_recorded_with_its_error_and_the_sweep_goes_on(tmp_path: Path, tiny_model_dir: Path) -> None:
    base = base_config(tmp_path, tiny_model_dir)
    space = space_file(tmp_path, "space", space={"data.eval": {"choices": [str(tmp_path / "missing.jsonl"), str(toy_data(tmp_path, 12))]}},
                       sampler="grid", trials=2)
    summary = preftune.sweep(base, space, tmp_path / "sweep")
    assert summary["trials"] == {"complete": 1, "fail": 1}
    (error,) = summary["failed"].values()
    assert "missing.jsonl: file not found" in error
    assert summary["best"]["params"]["data.eval"].endswith("toy.jsonl")


def cli(base: Path, space: Path, out: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "preftune.cli", "sweep", str(base), str(space), "-o", str(out)],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env)


def study_trials(out: Path) -> list[dict]:
    import optuna

    study = optuna.load_study(study_name=out.name, storage=f"sqlite:///{out / 'study.db'}")
    return [{"number": t.number, "state": t.state.name, "worker": t.user_attrs.get("worker")} for t in study.get_trials()]


def test_two_workers_share_one_study(tmp_path: Path, tiny_model_dir: Path) -> None:
    base, out = base_config(tmp_path, tiny_model_dir), tmp_path / "shared"
    space = space_file(tmp_path, "space", space={"train.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}}, sampler="random",
                       trials=4, pruner="none")
    workers = [cli(base, space, out, tmp_path / f"worker-{i}.log") for i in range(2)]
    assert [w.wait(timeout=300) for w in workers] == [0, 0], [(tmp_path / f"worker-{i}.log").read_text()[-2000:] for i in range(2)]
    trials = study_trials(out)
    assert 4 <= len(trials) <= 5 and all(t["state"] == "COMPLETE" for t in trials)  # a worker may start one while the other ends the 4th
    assert len({t["worker"] for t in trials}) == 2  # both processes ran trials of the one study
    assert len({t["number"] for t in trials}) == len(trials) and all((out / f"trial-{t['number']:04d}" / "summary.json").exists() for t in trials)


def test_a_killed_sweep_resumes_where_it_stopped(tmp_path: Path, tiny_model_dir: Path) -> None:
    base, out = base_config(tmp_path, tiny_model_dir), tmp_path / "killed"
    space = space_file(tmp_path, "space", space={"loss.beta": {"low": 0.05, "high": 0.5}}, sampler="random", trials=3, pruner="none",
                       heartbeat_seconds=1)
    log = tmp_path / "sweep.log"
    proc = cli(base, space, out, log)
    deadline = time.time() + 240
    while not ((out / "trial-0001" / "metrics.jsonl").exists() and train_steps(out / "trial-0001") >= 1):
        assert proc.poll() is None and time.time() < deadline, log.read_text()[-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [t["state"] for t in study_trials(out)] == ["COMPLETE", "RUNNING"]
    time.sleep(2.5)  # past the grace period of the killed worker's heartbeat
    assert cli(base, space, out, log).wait(timeout=240) == 0, log.read_text()[-2000:]
    states = [t["state"] for t in study_trials(out)]
    assert states == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]  # the killed trial failed and did not use up the budget
    assert (out / "best.yaml").exists()


def test_a_bad_sweep_file_names_the_key_and_the_fix(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"space": {"loss.beta": {"low": 0.5, "high": 0.1}}}))
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid sweep:\n  - space.loss.beta: .*low. < .high."):
        load_space(bad)
    bad.write_text(yaml.safe_dump({"space": {"loss.beta": {"low": 0.1, "high": 0.5}}, "sampler": "grid"}))
    with pytest.raises(ConfigError, match="sampler grid needs `choices` for every key; loss.beta"):
        load_space(bad)


def test_a_space_key_the_run_configuration_lacks_is_refused_before_any_trial(tmp_path: Path, tiny_model_dir: Path) -> None:
    base = base_config(tmp_path, tiny_model_dir)
    space = space_file(tmp_path, "space", space={"train.learning_rat": {"low": 1e-4, "high": 1e-2}})
    with pytest.raises(ConfigError, match="does not fit the run configuration(.|\n)*train.learning_rat: unknown key"):
        preftune.sweep(base, space, tmp_path / "sweep")
    assert not (tmp_path / "sweep" / "trial-0000").exists()


def test_a_sweep_file_that_is_not_text_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "space.yaml"
    bad.write_bytes(b"space:\n  x: \x80\x81\n")
    with pytest.raises(ConfigError, match="space.yaml: not UTF-8 text"):
        load_space(bad)


def test_a_worker_that_loses_the_race_to_create_the_schema_opens_it_on_its_next_try(monkeypatch, tmp_path: Path) -> None:
    import optuna
    from sqlalchemy.exc import IntegrityError

    from preftune.sweeping import open_storage

    real, calls = optuna.storages.RDBStorage, []

    def racing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # the other worker inserted the schema's version row first
            raise IntegrityError("INSERT INTO alembic_version", {}, Exception("UNIQUE constraint failed: alembic_version.version_num"))
        return real(*args, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}", None, 10)
    assert len(calls) == 2 and storage is not None
