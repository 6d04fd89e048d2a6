"""`preftune train`: set up (data, models, reference, optimizer), train, save. Reads top to bottom."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import RunConfig
from ..data.pipeline import LoadedData
from ..data.prepare import prepare_data
from ..errors import ConfigError, PreftuneError
from ..models.compiling import compile_layers
from ..models.loading import load_model, load_tokenizer
from ..models.logprobs import LogpsModel
from .artifacts import DATA_SUMMARY, DIAGNOSTICS, EVAL_PAIRS, data_summary, eval_pair_records, write_json, write_jsonl
from .diagnostics import Diagnostics
from .interrupt import GracefulInterrupt
from .checkpoint import TrainState, latest_valid_checkpoint, load_checkpoint, remove_partial, save_checkpoint
from .loop import BatchSource, NonFiniteLoss, any_process, evaluate, optimizer_step
from .outputs import load_trainable, model_card, save_final, save_trainable, write_config
from .progress import TrainProgress
from .reference import (AdapterDisabledReference, NoReference, PrecomputedReference, Reference, SeparateReference,
                        model_fingerprint, pairs_fingerprint, precompute)
from .tracking import MetricsFile, flat_config, tracker_setup

logger = logging.getLogger("preftune.train")

SUMMARY_KEYS = ("eval/rewards/accuracies", "eval/rewards/margins", "eval/rewards/chosen", "eval/rewards/rejected", "eval/logps/chosen", "eval/logps/rejected", "eval/loss")


@dataclass
class TrainResult:
    """What `train` returns: where things are, and the held-out numbers before and after."""

    output_dir: Path
    steps: int
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False
    seconds: float = 0.0
    findings: list[Any] = field(default_factory=list)
    interrupted: bool = False
    skipped_steps: int = 0
    report: Path | None = None


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def make_accelerator(cfg: RunConfig) -> Any:
    """accelerate's Accelerator; several processes on a machine without CUDA run on CPU with gloo."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()  # a later run in the same process may ask for another precision (the process group stays)
    GradientState._reset_state()
    cpu_processes = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    return Accelerator(mixed_precision=cfg.train.mixed_precision, cpu=cpu_processes, **tracker_setup(cfg.report_to, Path(cfg.output_dir)))


def resolve_strategy(cfg: RunConfig) -> str:
    strategy = cfg.reference.strategy
    if strategy == "auto":
        if not cfg.loss.uses_reference():
            return "none"
        return "adapter_disabled" if cfg.model.lora.enabled else "separate"
    if strategy != "none" and not cfg.loss.uses_reference():
        logger.info("reference: loss %s needs no reference; strategy %s is ignored", cfg.loss.name, strategy)
        return "none"
    return strategy


def build_reference(cfg: RunConfig, policy: torch.nn.Module, accelerator: Any, strategy: str) -> Reference:
    """The live reference for `strategy` (precomputed builds on this: see `precomputed_tables`)."""
    chunk = cfg.train.logits_chunk
    if strategy == "none":
        return NoReference()
    if strategy == "adapter_disabled" or (strategy == "precomputed" and cfg.model.lora.enabled and cfg.reference.name_or_path is None):
        return AdapterDisabledReference(policy, chunk, accelerator.unwrap_model)
    ref_path = cfg.reference.name_or_path
    if ref_path is not None and ref_path != cfg.model.name_or_path:
        logger.warning("reference: %s differs from the policy's start %s; DPO's derivation assumes the reference is the SFT checkpoint the policy starts from",
                       ref_path, cfg.model.name_or_path)
    model = load_model(cfg.model, ref_path or cfg.model.name_or_path, trainable=False).to(accelerator.device)
    if accelerator.distributed_type == "FSDP":  # DistributedType is a str enum
        model = accelerator.prepare_model(model, evaluation_mode=True)  # sharded like the policy
    return SeparateReference(model, chunk)


def compile_models(policy: torch.nn.Module, reference: Reference, backend: str) -> None:
    """`train.compile`: compile the decoder layers of the policy and of a separate reference model."""
    n = compile_layers(policy, backend)
    if isinstance(reference, SeparateReference):
        compile_layers(reference.model, backend)
    logger.info("train.compile: %d decoder layers compiled with %s (the first steps include compile time)", n, backend)


def precomputed_tables(cfg: RunConfig, live: Reference, splits: dict[str, BatchSource], accelerator: Any) -> dict[str, PrecomputedReference]:
    """One pass of the live reference over each split, cached by (model, data, tokenization); later runs reuse it."""
    ref_model = live.model if isinstance(live, SeparateReference) else accelerator.unwrap_model(live.policy)
    base = model_fingerprint(ref_model)
    tables = {}
    cache = Path(cfg.reference.cache_dir) if cfg.reference.cache_dir else None
    for name, source in splits.items():
        key = f"{base}-{pairs_fingerprint(source.split.pairs)}-{cfg.model.dtype}"
        plain = replace(source, seed=0, shuffle=False, rank=0, world=1)  # every pair once, in the run's layout
        with accelerator.main_process_first(), accelerator.autocast():
            table, _ = precompute(live, plain.epoch(0), len(source.split.pairs), key, cache)
        tables[name] = table
    return tables


FUSED_ADAMW_DEVICES = ("cpu", "cuda")
FUSED_ADAMW_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def adamw_impl(params: list[torch.Tensor], choice: str, sharded: bool = False) -> str:
    """`fused` or `foreach` for torch's AdamW. auto takes fused (5.8x faster than foreach for SmolLM2-135M's parameters
    on a 2-core CPU: bench/optimizer_step.py) when every parameter is a plain tensor on one CPU or CUDA device in a
    float type it supports, and the run is not sharded (FSDP / DeepSpeed re-wrap the parameters)."""
    if choice != "auto":
        return choice
    if sharded:
        return "foreach"
    plain = all(type(p.data) is torch.Tensor and p.device.type in FUSED_ADAMW_DEVICES and p.dtype in FUSED_ADAMW_DTYPES for p in params)
    return "fused" if plain and len({p.device for p in params}) == 1 else "foreach"


def make_optimizer(model: torch.nn.Module, cfg: RunConfig, total_steps: int, sharded: bool = False) -> tuple[torch.optim.Optimizer, Any]:
    from transformers import get_scheduler

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("no trainable parameters. Fix: enable model.lora or train the full model.")
    impl = adamw_impl(params, cfg.train.optimizer_impl, sharded)
    optimizer = torch.optim.AdamW(params, lr=cfg.train.learning_rate, weight_decay=cfg.train.weight_decay, **{impl: True})
    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[cfg.train.scheduler]
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=int(cfg.train.warmup_ratio * total_steps), num_training_steps=total_steps)
    return optimizer, scheduler


def preflight(output_dir: Path, need_bytes: int) -> None:
    """Fail before loading anything when the output folder cannot be written or has no room."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / ".preftune-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise PreftuneError(f"output_dir {output_dir}: not writable ({e.strerror}). Fix: choose a folder you can write to.") from None
    free = shutil.disk_usage(output_dir).free
    if free < need_bytes:
        raise PreftuneError(f"output_dir {output_dir}: {free / 2**20:.0f} MiB free, a checkpoint needs about {need_bytes / 2**20:.0f} MiB. Fix: free space or choose another folder.")


@dataclass
class RunData:
    """The tokenizer and the batch sources of a run (this process's share of each global batch)."""

    tokenizer: Any
    train: BatchSource
    eval: BatchSource | None
    loaded: LoadedData


def setup_data(cfg: RunConfig, accelerator: Any) -> RunData:
    """Tokenizer, data (held out and tokenized) and batch sources in the run's layout."""
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code)
    train_split, eval_split, loaded = prepare_data(cfg.data, tokenizer, cfg.train.seed)
    layout = "packed" if cfg.train.layout == "auto" else cfg.train.layout  # fastest on CPU: bench/layouts.py
    common = dict(pad_id=tokenizer.pad_token_id, rank=accelerator.process_index, world=accelerator.num_processes,
                  device=accelerator.device, layout=layout, pack_tokens=cfg.train.pack_tokens)
    train_src = BatchSource(train_split, cfg.train.batch_size, cfg.train.seed, cfg.train.shuffle, **common)
    eval_src = BatchSource(eval_split, cfg.train.batch_size, 0, False, **common) if eval_split else None
    return RunData(tokenizer, train_src, eval_src, loaded)


def train(cfg: RunConfig, show_progress: bool = True, on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train as configured; returns held-out metrics before and after, and writes everything under cfg.output_dir.
    `on_step(step)` is called after each optimizer step (a profiler's step marker, say)."""
    t0 = time.time()
    out_dir = Path(cfg.output_dir)
    preflight(out_dir, 64 * 2**20)
    accelerator = make_accelerator(cfg)
    seed_everything(cfg.train.seed, cfg.train.deterministic)

    # --- data
    run_data = setup_data(cfg, accelerator)
    tokenizer, train_src, eval_src, loaded = run_data.tokenizer, run_data.train, run_data.eval, run_data.loaded
    train_split, eval_split = train_src.split, eval_src.split if eval_src else None
    device = accelerator.device
    batches_per_epoch = train_src.num_batches()
    steps_per_epoch = max(1, batches_per_epoch // cfg.train.grad_accum)
    total_steps = cfg.train.max_steps or max(1, math.ceil(cfg.train.epochs * steps_per_epoch))

    # --- models and reference
    policy = load_model(cfg.model).to(device)
    if cfg.train.gradient_checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    strategy = resolve_strategy(cfg)
    live = build_reference(cfg, policy, accelerator, strategy)
    if cfg.train.compile:
        compile_models(policy, live, cfg.train.compile_backend)
    ref_train: Reference = live
    ref_eval: Reference = live
    if strategy == "precomputed":
        tables = precomputed_tables(cfg, live, {"train": train_src, **({"eval": eval_src} if eval_src else {})}, accelerator)
        ref_train = tables["train"]
        ref_eval = tables.get("eval", ref_train)  # an eval table exists whenever there is eval data
        if isinstance(live, SeparateReference):
            del live.model  # the frozen copy is no longer needed
    logger.info("reference strategy: %s", strategy)

    optimizer, scheduler = make_optimizer(policy, cfg, total_steps, sharded=accelerator.distributed_type in ("FSDP", "DEEPSPEED"))
    model = policy  # the model itself; `policy` becomes its prepared log-prob module (DDP/FSDP-wrapped when distributed)
    policy, optimizer = accelerator.prepare(LogpsModel(model, cfg.train.logits_chunk), optimizer)
    policy.train()

    # --- resume
    state = TrainState()
    resume_dir = _resume_dir(cfg, out_dir)
    if resume_dir is not None:
        load_trainable(accelerator.unwrap_model(policy).model, resume_dir / "model")
        state = load_checkpoint(resume_dir, optimizer, scheduler)
        logger.info("resumed from %s at step %d", resume_dir, state.step)
    main = accelerator.is_main_process
    if main:
        remove_partial(out_dir)
    metrics_file = MetricsFile(out_dir / "metrics.jsonl", state.step if resume_dir else None, state.metrics_lines) if main else None
    if cfg.report_to:
        accelerator.init_trackers("preftune", config=flat_config(cfg.model_dump(mode="json")))
    summary_of_data = data_summary(train_split, eval_split, loaded)
    if main:
        write_config(cfg, out_dir / "config.yaml")
        write_json(out_dir / DATA_SUMMARY, summary_of_data)

    def log(record: dict[str, Any], step: int) -> None:
        if metrics_file is not None:
            metrics_file.write({"step": step, **record})
        if cfg.report_to:
            accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=step)  # trackers take numbers only

    diagnostics = Diagnostics(cfg.diagnostics, cfg.loss.resolved_beta())
    keep = ("rewards/margins", "lengths/chosen_minus_rejected", "rewards/chosen", "rewards/rejected")

    def run_eval() -> dict[str, float]:
        ev, acc = evaluate(policy, eval_src, ref_eval, cfg.loss, cfg.train.logits_chunk, accelerator, keep)
        per_pair = {k: torch.cat(v).tolist() for k, v in acc.per_pair.items()}
        ev |= diagnostics.observe_eval(state.step, ev, per_pair.get(keep[0], []), per_pair.get(keep[1], []))
        if main and eval_split is not None:
            write_jsonl(out_dir / EVAL_PAIRS, eval_pair_records(eval_split, per_pair, state.step))
        return ev

    def write_report() -> Path | None:
        if not (main and cfg.report):
            return None
        write_json(out_dir / DIAGNOSTICS, diagnostics.summary())
        from ..report import write_report as render

        try:
            return render(out_dir)
        except Exception as e:  # a report must never cost the run
            logger.warning("report: could not be written (%s: %s); the run's files are intact, try `preftune report %s`", type(e).__name__, e, out_dir)
            return None

    before: dict[str, float] = {}
    if eval_src is not None and resume_dir is None:
        before = run_eval()
        log(before, 0)

    # --- train
    def batches():
        while True:
            for b in train_src.epoch(state.epoch, state.batch_in_epoch):
                yield b
            state.epoch += 1
            state.batch_in_epoch = 0

    def advance() -> None:
        state.batch_in_epoch += 1  # the generator above rolls over to the next epoch

    stream = batches()
    last: dict[str, float] = {}
    after: dict[str, float] = {}
    stopped_early = False
    interrupted = False
    tick = time.time()

    def checkpoint() -> None:
        accelerator.wait_for_everyone()
        if main:
            state.metrics_lines = metrics_file.lines if metrics_file is not None else None
            save_checkpoint(out_dir, state, accelerator.unwrap_model(policy).model, optimizer, scheduler, cfg.train.save_total_limit, save_trainable)
            write_report()

    with TrainProgress(total_steps, state.step, show_progress and main) as bar, GracefulInterrupt() as interrupt:
        while state.step < total_steps:
            try:
                metrics = optimizer_step(policy, stream, cfg.train.grad_accum, ref_train, cfg.loss, cfg.train.logits_chunk, accelerator,
                                         optimizer, scheduler, cfg.train.max_grad_norm, state, advance)
            except NonFiniteLoss as e:
                if cfg.train.on_nonfinite == "stop" or state.skipped_steps >= cfg.train.max_skipped_steps:
                    accelerator.end_training()
                    why = "train.on_nonfinite is stop" if cfg.train.on_nonfinite == "stop" else f"{state.skipped_steps} steps were skipped already (train.max_skipped_steps)"
                    raise NonFiniteLoss(f"{e} Training stopped ({why}); the last checkpoint is kept.", e.step, e.indices) from None
                state.skipped_steps += 1
                bar.message(f"skipped step {e.step}: non-finite loss or gradient on pairs {e.indices} ({state.skipped_steps} skipped)")
                log({"skipped/nonfinite_steps": float(state.skipped_steps), "skipped/pairs": e.indices}, state.step)
                tick = time.time()
                continue
            state.step += 1
            state.pairs_seen += int(metrics["num_pairs"])
            now = time.time()
            metrics["pairs_per_second"] = metrics["num_pairs"] / max(now - tick, 1e-9)
            metrics["tokens_per_second"] = metrics["num_tokens"] / max(now - tick, 1e-9)
            metrics["epoch"] = state.epoch + state.batch_in_epoch / batches_per_epoch
            metrics |= diagnostics.observe_train(state.step, metrics)
            last = metrics
            if state.step % cfg.train.log_every == 0 or state.step == total_steps:
                log(metrics, state.step)
            bar.update(state.step, metrics)
            if eval_src is not None and cfg.train.eval_every and state.step % cfg.train.eval_every == 0 and state.step < total_steps:
                after = run_eval()
                log(after, state.step)
                if _should_stop(state, after, cfg):
                    bar.message(f"early stopping at step {state.step}: eval/rewards/margins has not risen for {state.evals_without_improvement} evaluation(s)")
                    stopped_early = True
            if any_process(interrupt.requested, accelerator):
                if state.step % cfg.train.log_every:
                    log(metrics, state.step)  # the step it stops at is always logged
                checkpoint()
                interrupted = True
                bar.message(f"interrupted: checkpoint {out_dir / f'checkpoint-{state.step}'} saved; resume with resume_from=auto")
                break
            if cfg.train.save_every and (state.step % cfg.train.save_every == 0 or stopped_early):
                checkpoint()
            if on_step is not None:
                on_step(state.step)
            tick = time.time()
            if stopped_early:
                break

    if interrupted:
        if cfg.report_to:
            accelerator.end_training()
        return TrainResult(out_dir, state.step, before, after, last, stopped_early, time.time() - t0, diagnostics.findings,
                           interrupted=True, skipped_steps=state.skipped_steps)

    if eval_src is not None:
        after = run_eval()
        log(after, state.step)

    # --- save
    accelerator.wait_for_everyone()
    result = TrainResult(out_dir, state.step, before, after, last, stopped_early, time.time() - t0, diagnostics.findings,
                         skipped_steps=state.skipped_steps)
    if main:
        save_final(accelerator.unwrap_model(policy).model, tokenizer, cfg, out_dir / "model", cfg.train.merge_adapter)
        summary = {k: summary_of_data[k] for k in ("train_pairs", "eval_pairs", "format", "errors", "removed", "truncation")}
        (out_dir / "README.md").write_text(model_card(cfg, summary, {k: v for k, v in before.items() if k in SUMMARY_KEYS},
                                                      {k: v for k, v in after.items() if k in SUMMARY_KEYS}, last))
        (out_dir / "summary.json").write_text(json.dumps({"steps": state.step, "seconds": result.seconds, "before": before, "after": after,
                                                          "last_train": last, "stopped_early": stopped_early, "reference": strategy,
                                                          "skipped_steps": state.skipped_steps,
                                                          "diagnostics": [vars(f) for f in diagnostics.findings], **summary}, indent=1))
        result.report = write_report()
        _print_summary(result)
    if cfg.report_to:
        accelerator.end_training()
    return result


def _should_stop(state: TrainState, ev: dict[str, float], cfg: RunConfig) -> bool:
    margin = ev.get("eval/rewards/margins")
    if cfg.train.early_stopping_patience is None or margin is None:
        return False
    if state.best_eval_margin is None or margin > state.best_eval_margin + cfg.train.early_stopping_min_delta:
        state.best_eval_margin = margin
        state.evals_without_improvement = 0
        return False
    state.evals_without_improvement += 1
    return state.evals_without_improvement >= cfg.train.early_stopping_patience


def _resume_dir(cfg: RunConfig, out_dir: Path) -> Path | None:
    if cfg.resume_from is None:
        return None
    if cfg.resume_from == "auto":
        found = latest_valid_checkpoint(out_dir)
        if found is None:
            logger.info("resume_from auto: no checkpoint in %s; starting fresh", out_dir)
        return found
    path = Path(cfg.resume_from)
    if not path.is_dir():
        raise ConfigError(f"resume_from = {cfg.resume_from!r}: not a checkpoint folder. Fix: give a checkpoint-N folder or 'auto'.")
    from .checkpoint import verify

    problem = verify(path)
    if problem:
        raise PreftuneError(f"resume_from {path}: {problem}. Fix: use another checkpoint or resume_from: auto (which skips damaged ones).")
    return path


def _print_summary(result: TrainResult) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    if result.before or result.after:
        table = Table(title=f"held-out metrics after {result.steps} steps ({result.seconds:.0f} s)")
        table.add_column("metric")
        table.add_column("before", justify="right")
        table.add_column("after", justify="right")
        for k in SUMMARY_KEYS:
            if k in result.before or k in result.after:
                b, a = result.before.get(k), result.after.get(k)
                table.add_row(k, "" if b is None else f"{b:.4f}", "" if a is None else f"{a:.4f}")
        console.print(table)
    console.print(f"model saved to {result.output_dir / 'model'}")
    if result.report is not None:
        console.print(f"report: {result.report}")


def precompute_reference(cfg: RunConfig) -> Path:
    """`preftune precompute-ref`: build the reference log-prob cache of the config's data and exit."""
    if not cfg.loss.uses_reference():
        raise ConfigError(f"loss {cfg.loss.name} is reference-free: there is nothing to precompute.")
    accelerator = make_accelerator(cfg)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    run_data = setup_data(cfg, accelerator)
    policy = load_model(cfg.model).to(accelerator.device) if cfg.model.lora.enabled else None
    live = build_reference(cfg, policy, accelerator, "precomputed")
    splits = {"train": run_data.train, **({"eval": run_data.eval} if run_data.eval else {})}
    precomputed_tables(cfg, live, splits, accelerator)
    from .reference import default_reference_cache

    return Path(cfg.reference.cache_dir) if cfg.reference.cache_dir else default_reference_cache()
