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
    """Real SIGINTs to this process inside the handler's scope: the first only sets the flag, the second calls os._exit(130);
    the handler found on entry (here Python's default, set by the test whatever the runner inherited) is put back."""
    import os

    import preftune.training.interrupt as interrupt

    exits: list[int] = []
    monkeypatch.setattr(interrupt.os, "_exit", exits.append)
    found = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with interrupt.GracefulInterrupt() as guard:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            assert guard.requested and exits == []
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            assert exits == [130]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, found)


def test_an_ignored_sigint_stays_ignored_and_is_restored() -> None:
    """Started under nohup (SIGINT ignored), preftune installs nothing: an interrupt neither stops the run nor is lost
    on exit, and the ignored disposition is what remains."""
    import os

    from preftune.training.interrupt import GracefulInterrupt

    found = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with GracefulInterrupt() as guard:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            assert not guard.requested
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, found)


def test_a_custom_handler_is_restored_exactly() -> None:
    from preftune.training.interrupt import GracefulInterrupt

    def mine(signum, frame) -> None:  # pragma: no cover - never called
        pass

    found = signal.signal(signal.SIGINT, mine)
    try:
        with GracefulInterrupt():
            assert signal.getsignal(signal.SIGINT) is not mine
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, found)
