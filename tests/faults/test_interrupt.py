"""Ctrl-C: the first SIGINT saves a checkpoint and exits cleanly (130); a run resumed from it ends like an uninterrupted one;
a second SIGINT exits at once."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..training.helpers import toy_data
from .runner import metrics, run_until, start, train_steps_logged, write_config


def wait_for_steps(out: Path, n: int, proc, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while train_steps_logged(out) < n:
        assert proc.poll() is None, "the run ended before it was interrupted"
        assert time.time() < deadline
        time.sleep(0.01)


def test_first_interrupt_checkpoints_and_resume_matches(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = toy_data(tmp_path)
    ref = tmp_path / "uninterrupted"
    assert run_until(write_config(tmp_path, tiny_model_dir, data, ref, max_steps=8, save_every=None), ref, tmp_path / "ref.log", None) == "finished"
    out = tmp_path / "run"
    config = write_config(tmp_path, tiny_model_dir, data, out, max_steps=8, save_every=None)  # no periodic checkpoints at all
    log = tmp_path / "run.log"
    proc = start(config, log)
    wait_for_steps(out, 2, proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    text = log.read_text()
    assert "saving a checkpoint after this step" in text and "resume with resume_from=auto" in text
    saved = [p.name for p in out.iterdir() if p.name.startswith("checkpoint-")]
    assert len(saved) == 1 and not (out / "model").exists()
    assert run_until(config, out, log, None) == "finished"
    want, got = load_file(str(ref / "model" / "model.safetensors")), load_file(str(out / "model" / "model.safetensors"))
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert [m["step"] for m in metrics(out) if "loss" in m] == list(range(1, 9))


def test_second_interrupt_exits_at_once(monkeypatch) -> None:
    """Real SIGINTs to this process inside the handler's scope: the first only sets the flag, the second calls os._exit(130)."""
    import os

    import preftune.training.interrupt as interrupt

    exits: list[int] = []
    monkeypatch.setattr(interrupt.os, "_exit", exits.append)
    with interrupt.GracefulInterrupt() as guard:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert guard.requested and exits == []
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert exits == [130]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the previous handler is back
