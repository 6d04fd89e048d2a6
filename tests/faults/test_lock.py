"""One run per output folder: a second run into a folder in use refuses with a clear message; the lock of a run
killed with SIGKILL is taken over, and the new run resumes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from preftune.training.lock import LOCK, RunLock

from ..training.helpers import toy_data
from .runner import env, metrics, start, steps_done_since, write_config


def test_a_second_run_refuses_a_folder_in_use_and_takes_over_after_sigkill(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = toy_data(tmp_path)
    out = tmp_path / "run"
    config = write_config(tmp_path, tiny_model_dir, data, out, max_steps=400, save_every=2, eval_every=None)
    log = tmp_path / "first.log"
    first = start(config, log)
    try:
        deadline = time.time() + 120
        while steps_done_since(log, 0) < 2 and time.time() < deadline and first.poll() is None:
            time.sleep(0.05)
        assert first.poll() is None and steps_done_since(log, 0) >= 2, log.read_text()[-2000:]
        second = subprocess.run([sys.executable, "-m", "preftune.cli", "train", str(config)], capture_output=True, text=True, env=env(), timeout=120)
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"output_dir {out}: another preftune run is using it (pid {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
    killed_at = max(m["step"] for m in metrics(out) if "loss" in m)
    short = write_config(tmp_path, tiny_model_dir, data, out, max_steps=killed_at + 2, save_every=2, eval_every=None)
    third = subprocess.run([sys.executable, "-m", "preftune.cli", "train", str(short)], capture_output=True, text=True, env=env(), timeout=300)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "taking over the lock of a run that is no longer running" in third.stderr
    steps = [m["step"] for m in metrics(out) if "loss" in m]
    assert steps == list(range(1, killed_at + 3))  # resumed from its last checkpoint, no step twice
    assert (out / LOCK).read_text() == ""  # released at the end


def test_the_lock_is_released_when_a_run_fails_in_process(tmp_path: Path) -> None:
    try:
        with RunLock(tmp_path):
            raise RuntimeError("the run failed")
    except RuntimeError:
        pass
    with RunLock(tmp_path):  # taken again: the failed holder let go
        assert (tmp_path / LOCK).read_text().startswith('{"pid"')
