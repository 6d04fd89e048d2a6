"""The running run: the parts set-up built (`Run`), the loop's steps that are not the step itself (evaluate,
checkpoint, sample, early stopping) and the run folder it writes. Built by `setup.setup_run`; used by `loop.fit`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import RunConfig
from ..data.pipeline import LoadedData
from ..data.prepare import TokenizedSplit
from ..data.stream import BatchSource, BatchStream
from ..run_files import DIAGNOSTICS, EVAL_PAIRS, METRICS, MODEL_CARD, MODEL_DIR, SUMMARY, write_json, write_jsonl, write_text_atomic
from .artifacts import data_summary, eval_pair_records
from .callbacks import Metrics, TrainResult
from .checkpoint import TrainState, remove_partial, save_checkpoint
from .diagnostics import Diagnostics
from .modes import Mode
from .objectives import Objective
from .outputs import SUMMARY_KEYS, model_card, save_final, save_tensors, save_trainable
from ..scoring.reference import PrecomputedReference, Reference
from .samples import add_samples, sample_answers
from ..scoring.batches import score
from .tracking import MetricsFile

EVAL_KEEP = ("rewards/margins", "lengths/chosen_minus_rejected", "rewards/chosen", "rewards/rejected")


@dataclass
class RunData:
    """The tokenizer, the splits and this process's batch sources of each."""

    tokenizer: Any
    train: BatchSource
    eval: BatchSource | None
    train_split: TokenizedSplit
    eval_split: TokenizedSplit | None
    loaded: LoadedData


class RunFolder:
    """The run's files under `output_dir` (config, metrics, data summary, held-out pairs, diagnostics, checkpoints);
    with no folder (an in-memory run) or on a process other than the main one, it writes nothing."""

    def __init__(self, path: Path | None, main: bool, resume_step: int | None, metrics_lines: int | None):
        self.path = path if main else None
        if self.path is not None:
            remove_partial(self.path)
        self.metrics = MetricsFile(self.path / METRICS, resume_step, metrics_lines) if self.path is not None else None

    def write(self, name: str, value: Any) -> None:
        if self.path is not None:
            write_json(self.path / name, value)


@dataclass
class Run:
    """The parts of a training run, built once by `setup_run`; the loop (`loop.fit`) uses these and nothing else."""

    cfg: RunConfig
    accelerator: Any
    data: RunData
    model: torch.nn.Module                 # the model itself (a peft model with LoRA)
    policy: torch.nn.Module                # its prepared log-prob module (DDP/FSDP-wrapped when distributed)
    ref_train: Reference
    ref_eval: Reference
    strategy: str
    objective: Objective                   # what it trains: a pair loss, KTO or SFT, each with its metric summary
    optimizer: torch.optim.Optimizer
    scheduler: Any
    stream: BatchStream
    state: TrainState
    total_steps: int
    resumed: bool
    folder: RunFolder
    diagnostics: Diagnostics
    mode: Mode  # single process or DDP, FSDP, FSDP on CPU processes, DeepSpeed ZeRO
    history: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    @property
    def main(self) -> bool:
        return bool(self.accelerator.is_main_process)

    @property
    def gather(self) -> Any:
        return self.accelerator.gather if self.accelerator.num_processes > 1 else None

    def log(self, record: Metrics) -> None:
        """One line of the history (and metrics.jsonl, and the trackers) at the current step."""
        line = {"step": self.state.step, **record}
        self.history.append(line)
        if self.folder.metrics is not None:
            self.folder.metrics.write(line)
        if self.cfg.report_to:
            self.accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=self.state.step)  # numbers only

    def evaluate(self) -> Metrics:
        """Held-out metrics (`eval/` prefixed) with the diagnostics they trigger; the per-pair values go to eval_pairs.jsonl."""
        assert self.data.eval is not None
        was_training = self.policy.training
        self.policy.eval()
        values = lambda b: self.objective.on_batch(self.policy, b, self.ref_eval, self.cfg.train.logits_chunk)[1]  # noqa: E731
        keep = EVAL_KEEP if self.objective.eval_pairs else ()
        means, per_pair = score(self.data.eval.epoch(0), values, keep, self.accelerator.autocast, self.gather)
        if was_training:
            self.policy.train()
        ev = {f"eval/{k}": v for k, v in self.objective.summarize(means).items()}
        lists = {k: v.tolist() for k, v in per_pair.items()}
        ev |= self.diagnostics.observe_eval(self.state.step, ev, lists.get(EVAL_KEEP[0], []), lists.get(EVAL_KEEP[1], []))
        if self.folder.path is not None and self.data.eval_split is not None and keep:
            write_jsonl(self.folder.path / EVAL_PAIRS, eval_pair_records(self.data.eval_split, lists, self.state.step))
        return ev

    def sample(self) -> None:
        """SFT: the model's greedy answers to `sft.samples` held-out prompts at this step, added to samples.jsonl (on one
        process with an output folder; a distributed run skips them, as generation would need every shard)."""
        n, split = self.cfg.sft.samples, self.data.eval_split
        if not self.objective.samples or not n or split is None or self.folder.path is None or self.accelerator.num_processes > 1:
            return
        model = self.accelerator.unwrap_model(self.policy).model
        add_samples(self.folder.path, sample_answers(model, self.data.tokenizer, split, n, self.cfg.generation, self.accelerator.device,
                                                     self.state.step))

    def checkpoint(self) -> Path | None:
        """Write checkpoint-{step} (weights, optimizer, scheduler, RNG, stream position); None for an in-memory run."""
        self.accelerator.wait_for_everyone()
        model = self.accelerator.unwrap_model(self.policy).model
        weights, optimizer_state = self.mode.checkpoint_state(self.policy, self.optimizer)  # every process takes part
        self.save_reference()  # every process its own pairs
        if self.folder.path is None:
            return None
        self.state.epoch, self.state.batch_in_epoch = self.stream.epoch, self.stream.batch
        self.state.metrics_lines = self.folder.metrics.lines if self.folder.metrics is not None else None
        self.folder.write(DIAGNOSTICS, self.diagnostics.summary())
        save_model = save_trainable if weights is None else (lambda _, folder: save_tensors(weights, folder))
        return save_checkpoint(self.folder.path, self.state, model, optimizer_state, self.scheduler.state_dict(),
                               self.cfg.train.save_total_limit, save_model)

    def save_reference(self) -> None:
        """Write the reference log-probs computed so far to the cache (strategy precomputed; each process its own)."""
        for ref in {id(r): r for r in (self.ref_train, self.ref_eval)}.values():
            if isinstance(ref, PrecomputedReference):
                ref.save()

    def any_process(self, *flags: bool) -> list[bool]:
        """Each flag, true when it is true on any process (one small collective when distributed)."""
        if self.accelerator.num_processes == 1:
            return list(flags)
        t = torch.tensor([float(f) for f in flags], device=self.accelerator.device)
        return [bool(v > 0) for v in self.accelerator.reduce(t, reduction="sum").tolist()]

    def should_stop_early(self, ev: Metrics) -> bool:
        """Early stopping on eval/rewards/margins (train.early_stopping_patience evaluations without a rise)."""
        margin, s, t = ev.get("eval/rewards/margins"), self.state, self.cfg.train
        if t.early_stopping_patience is None or margin is None:
            return False
        if s.best_eval_margin is None or margin > s.best_eval_margin + t.early_stopping_min_delta:
            s.best_eval_margin, s.evals_without_improvement = margin, 0
            return False
        s.evals_without_improvement += 1
        return s.evals_without_improvement >= t.early_stopping_patience


def save_outputs(run: Run, result: TrainResult, state_dict: dict[str, torch.Tensor] | None = None) -> dict[str, Path]:
    """At the end of a run, on the main process: the model (and merged weights), the model card, summary.json and
    diagnostics.json under the run folder; returns what was written. `state_dict`: a sharded model's gathered weights."""
    folder = run.folder.path
    if folder is None:
        return {}
    cfg = run.cfg
    written = save_final(result.model, run.data.tokenizer, cfg, folder / MODEL_DIR, cfg.train.merge_adapter, state_dict)
    counts = data_summary(run.data.train_split, run.data.eval_split, run.data.loaded)
    summary = {k: counts[k] for k in ("train_pairs", "eval_pairs", "format", "errors", "removed", "truncation")}
    pick = lambda m: {k: v for k, v in m.items() if k in SUMMARY_KEYS}  # noqa: E731
    write_text_atomic(folder / MODEL_CARD, model_card(cfg, summary, pick(result.before), pick(result.after), result.last))
    write_json(folder / SUMMARY, {"steps": result.steps, "seconds": result.seconds, "before": result.before, "after": result.after,
                                  "last_train": result.last, "stopped_early": result.stopped_early, "stop_reason": result.stop_reason,
                                  "reference": run.strategy, "skipped_steps": result.skipped_steps,
                                  "diagnostics": [vars(f) for f in result.findings], "diagnostics_not_applicable": run.diagnostics.skipped,
                                  **summary})
    write_json(folder / DIAGNOSTICS, run.diagnostics.summary())
    return {k: Path(v) for k, v in written.items()} | {"summary": folder / SUMMARY, "model_card": folder / MODEL_CARD}
