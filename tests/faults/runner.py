"""Run `preftune train` in a subprocess and interrupt it: the harness of the fault tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml


def write_config(folder: Path, model_dir: Path, data: Path, out: Path, **train: object) -> Path:
    """A config for the tiny model: deterministic, no shuffle, held-out share evaluated, checkpoint every step."""
    cfg = {"model": {"name_or_path": str(model_dir)},
           "data": {"train": str(data), "eval_fraction": 0.2, "cache_dir": str(folder / "tok")},
           "train": {"batch_size": 4, "max_steps": 10, "learning_rate": 1e-3, "warmup_ratio": 0.0, "deterministic": True,
                     "save_every": 1, "save_total_limit": 2, "eval_every": 5, **train},
           "report": False, "output_dir": str(out), "resume_from": "auto"}
    path = folder / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def interruptible() -> None:
    """In the child before exec: SIGINT back to its default, so a run can be interrupted even when this test process was
    started with SIGINT ignored (nohup), which children would otherwise inherit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(config: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "preftune.cli", "train", str(config)], stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, env=env(), preexec_fn=interruptible)


def train_steps_logged(out: Path) -> int:
    path = out / "metrics.jsonl"
    if not path.exists():
        return 0
    return sum('"loss"' in line and not line.startswith('{"step": 0') for line in path.read_text().splitlines())


@dataclass
class Kill:
    """Kill after `after_steps` logged steps: at once plus `delay` seconds ("step"), or when a checkpoint is being written ("checkpoint")."""

    when: str
    after_steps: int
    delay: float = 0.0


def steps_done_since(log: Path, offset: int) -> int:
    """Training steps this process has finished: its progress lines ("step k/N ...") after byte `offset` of the log."""
    text = log.read_bytes()[offset:] if log.exists() else b""
    return sum(line.startswith(b"step ") for line in text.splitlines())


def run_until(config: Path, out: Path, log: Path, kill: Kill | None, timeout: float = 240) -> str:
    """Start a run and kill it with SIGKILL as `kill` says: only once this process has finished a training step (never
    during start-up) and `kill.after_steps` steps are logged; returns what happened ('killed ...', 'finished', 'exited N')."""
    offset = log.stat().st_size if log.exists() else 0
    proc = start(config, log)
    deadline = time.time() + timeout
    try:
        while proc.poll() is None and time.time() < deadline:
            if kill is not None and steps_done_since(log, offset) >= 1 and train_steps_logged(out) >= kill.after_steps:
                if kill.when == "step":
                    time.sleep(kill.delay)
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    return f"killed during steps after {kill.after_steps} logged (+{kill.delay:.3f} s)"
                if out.exists() and any(p.name.startswith(".tmp-checkpoint-") for p in out.iterdir()):
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    return f"killed during a checkpoint write after {kill.after_steps} logged"
            time.sleep(0.0005 if kill is not None and kill.when == "checkpoint" else 0.01)
        if proc.poll() is None:
            proc.kill()
            raise TimeoutError(f"run did not finish in {timeout} s; log: {log.read_text()[-2000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
    return "finished" if proc.returncode == 0 else f"exited {proc.returncode}"


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
