"""`train`: set up the run's parts, run the loop, return the result. The public `preftune.train` and the CLI call this."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ..config import RunConfig
from ..data.pipeline import Sources
from .callbacks import Callbacks, TrainResult
from .interrupt import GracefulInterrupt
from .lock import RunLock
from .loop import fit
from .setup import precompute_reference, setup_run

__all__ = ["train", "precompute_reference", "TrainResult"]


def train(cfg: RunConfig, *, model: torch.nn.Module | None = None, tokenizer: Any = None, train_data: Sources | None = None,
          eval_data: Sources | None = None, callbacks: Iterable[Any] = (), show_progress: bool = True,
          catch_interrupt: bool = False) -> TrainResult:
    """Train as configured and return the result (history, held-out metrics before and after, findings, the model).

    `model` / `tokenizer` replace loading `model.name_or_path`; `train_data` / `eval_data` replace `data.train` /
    `data.eval`. With `cfg.output_dir` None nothing is written. `catch_interrupt` installs a Ctrl-C handler that stops
    after the current step with a checkpoint (the command line sets it; a library call leaves signals alone)."""
    hooks = Callbacks(callbacks)
    started = time.time()  # train.max_time counts set-up too
    main_process = int(os.environ.get("RANK", "0")) == 0  # other processes of a distributed run share the main one's folder
    lock = RunLock(Path(cfg.output_dir)) if cfg.output_dir and main_process else contextlib.nullcontext()
    with lock:
        run = setup_run(cfg, model, tokenizer, train_data, eval_data)
        run.started = started
        guard = GracefulInterrupt() if catch_interrupt else None
        with guard if guard is not None else contextlib.nullcontext():
            return fit(run, hooks, (lambda: guard.requested) if guard is not None else (lambda: False), show_progress)
