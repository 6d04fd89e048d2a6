"""Set-up of a training run: from a validated config (and any objects the caller passes) to the run's parts, once."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import math
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import RunConfig
from ..data.pipeline import Sources
from ..data.prepare import TokenizedSplit, prepare_data
from ..data.stream import BatchSource, BatchStream
from ..data.unpaired import kl_pairs, weight_advice
from ..errors import ConfigError, PreftuneError
from ..models.checkpointing import enable_checkpointing
from ..models.fused_mlp import fuse_mlps
from ..models.fused_norm import fuse_norms
from ..models.compiling import compile_layers
from ..models.loading import add_lora, is_peft, load_model, load_tokenizer
from ..models.logprobs import LogpsModel
from ..run_files import CONFIG, DATA_SUMMARY, check_writable
from .artifacts import data_summary
from .checkpoint import TrainState, checkpoint_bytes, latest_valid_checkpoint, load_checkpoint, verify
from .diagnostics import Diagnostics, not_applicable
from .outputs import write_config
from .objectives import Objective, choose_objective
from .modes import Mode, launch_settings, pick_mode
from ..progress import stage
from .running import Run, RunData, RunFolder
from ..scoring.choice import ReferenceChoice, choose_reference, make_reference
from ..scoring.reference import (PrecomputedReference, Reference, ReferenceTable, SeparateReference, default_reference_cache,
                                 model_fingerprint, pairs_fingerprint, precompute)
from . import host_memory, kto
from .tracking import flat_config, tracker_setup

logger = logging.getLogger("preftune.training")

FUSED_ADAMW_DEVICES = ("cpu", "cuda")
FUSED_ADAMW_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


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

    host_memory.fix_mmap_threshold(cfg.train.host_mmap_threshold_kib)
    AcceleratorState._reset_state()  # a later run in the same process may ask for another precision (the process group stays)
    GradientState._reset_state()
    trackers = tracker_setup(cfg.report_to, Path(cfg.output_dir)) if cfg.output_dir else {}
    return Accelerator(mixed_precision=cfg.train.mixed_precision, **launch_settings(), **trackers)


def reference_choice(cfg: RunConfig, objective: Objective, lora: bool, continuing: bool = False) -> ReferenceChoice:
    """The run's reference, by `scoring.choice`'s one rule: none when the objective needs none (SFT, a reference-free
    loss); else `reference.strategy` (auto: the named reference, else the adapter turned off with LoRA, else the
    policy's start). `continuing`: the LoRA policy starts from an existing adapter, which then stays in the reference,
    frozen (`reference.start_adapter: frozen`)."""
    strategy = cfg.reference.strategy
    if not objective.uses_reference:
        if strategy not in ("auto", "none"):
            logger.info("reference: %s needs no reference; reference.strategy %s is ignored", "SFT" if cfg.stage == "sft" else f"loss {cfg.loss.name}", strategy)
        strategy = "none"
    choice = choose_reference(strategy, explicit=cfg.reference.name_or_path, adapter_base=cfg.model.name_or_path if lora else None,
                              start=cfg.model.name_or_path, start_adapter=cfg.model.lora.adapter_path,
                              keep_start_adapter=continuing and cfg.reference.start_adapter == "frozen")
    if choice.named_by is not None and choice.load != cfg.model.name_or_path:
        logger.warning("reference: %s differs from the policy's start %s; DPO's derivation assumes the reference is the SFT checkpoint the policy starts from",
                       choice.load, cfg.model.name_or_path)
    return choice


def strategy_name(cfg: RunConfig, choice: ReferenceChoice) -> str:
    """How the run's summary names its reference: none, separate, adapter_disabled, or precomputed (a table in front of
    one of the others)."""
    if choice.kind == "none":
        return "none"
    if cfg.reference.strategy == "precomputed":
        return "precomputed"
    return "separate" if choice.kind == "separate" else "adapter_disabled"


def build_reference(cfg: RunConfig, choice: ReferenceChoice, policy: torch.nn.Module | None, accelerator: Any, mode: Mode,
                    frozen_start: torch.nn.Module | None = None, tokenizer: Any = None) -> Reference:
    """The live reference of the run's choice (precomputed builds on this: see `precomputed_tables`), placed as the
    mode runs it. `frozen_start` is a frozen copy of a model the caller passed, used instead of loading the start."""
    chunk = cfg.train.logits_chunk
    if frozen_start is not None and choice.kind == "separate" and choice.named_by is None:
        choice = dataclasses.replace(choice, load=None, model=frozen_start)

    def load(path: str) -> torch.nn.Module:  # an adapter folder loads merged
        return load_model(cfg.model, path, trainable=False, attention=cfg.experimental.attention)

    def place(model: torch.nn.Module) -> torch.nn.Module:
        return mode.shard_reference(model.to(accelerator.device), chunk)

    return make_reference(choice, policy, chunk, load, place=place, unwrap=accelerator.unwrap_model, tokenizer=tokenizer)


def reference_cache_key(cfg: RunConfig, model_fp: str, pairs_fp: str) -> str:
    """The reference log-prob cache key: the reference weights and the tokenized pairs (fingerprints), and every setting
    that changes the numbers computed from them (weight dtype, mixed precision, attention kernel, batch layout and its
    row size, LM-head chunk)."""
    t = cfg.train
    layout = t.resolved_layout()
    settings = f"{cfg.model.dtype}|{t.mixed_precision}|{cfg.experimental.attention}|{layout}|{t.pack_tokens if layout == 'packed' else ''}|{t.logits_chunk}"
    return f"{model_fp}-{pairs_fp}-{hashlib.sha256(settings.encode()).hexdigest()[:12]}"


def precomputed_tables(cfg: RunConfig, live: Reference, splits: dict[str, BatchSource], accelerator: Any,
                       needed: dict[str, list[list[int]]] | None = None) -> dict[str, PrecomputedReference]:
    """Each split's reference table, read from the cache (keyed by model, data and tokenization) and filled as the run
    uses pairs. `needed`: the global batches of each split the run will use (None: all of it), which `reference.precompute:
    upfront` computes before the first step and whose coverage lets the live reference go."""
    ref_model = live.model if isinstance(live, SeparateReference) else accelerator.unwrap_model(live.policy)
    ref_model = ref_model.model if isinstance(ref_model, LogpsModel) else ref_model  # the same weights, the same key, sharded or not
    base = model_fingerprint(ref_model)
    folder = Path(cfg.reference.cache_dir) if cfg.reference.cache_dir else default_reference_cache()
    tables = {}
    for name, source in splits.items():
        path = folder / f"{reference_cache_key(cfg, base, pairs_fingerprint(source.pairs))}.safetensors"
        batches = (needed or {}).get(name) or source.grouping.batches(0)
        mine = torch.tensor(sorted({i for b in batches for i in source.mine(b)}), dtype=torch.long)
        table = ReferenceTable(len(source.pairs), path)
        logger.info("reference: %d of the %d %s pairs this run uses are cached (%s)", int((~torch.isnan(table.chosen[mine])).sum()),
                    mine.numel(), name, path)
        if cfg.reference.precompute == "upfront":
            todo = [b for b in batches if not table.has(torch.tensor(source.mine(b), dtype=torch.long))]
            with stage(f"reference ({name})", sum(len(source.mine(b)) for b in todo), accelerator.is_main_process) as advance:
                precompute(live, (source.batch(b) for b in todo), table, accelerator.autocast, advance)
        tables[name] = PrecomputedReference(table, live, mine)
    return tables


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


def space_needed(model: torch.nn.Module, cfg: RunConfig, total_steps: int) -> int:
    """Bytes the run writes at most: the checkpoints that exist at once (`train.save_total_limit` kept, plus the one being
    written; at least one, which an interrupt writes), the final trainable weights, and the merged model when asked."""
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    whole = sum(p.numel() * p.element_size() for p in model.parameters())
    planned = total_steps // cfg.train.save_every if cfg.train.save_every else 1
    at_once = min(cfg.train.save_total_limit, max(planned, 1)) + 1
    merged = whole if cfg.train.merge_adapter else 0
    return int(checkpoint_bytes(model) * at_once + trainable + merged + 16 * 2**20)


def check_space(output_dir: Path, need_bytes: int) -> None:
    """Fail before training when the output folder's disk has less room than the run will write."""
    free = shutil.disk_usage(output_dir).free
    if free < need_bytes:
        raise PreftuneError(f"output_dir {output_dir}: {free / 2**20:.0f} MiB free, but this run writes up to about {need_bytes / 2**20:.0f} MiB "
                            "(checkpoints with optimizer state, the final model). Fix: free space, choose another folder, or lower "
                            "train.save_total_limit.")


def setup_data(cfg: RunConfig, accelerator: Any, tokenizer: Any = None, train: Sources | None = None, eval: Sources | None = None) -> RunData:
    """Tokenizer, data (held out and tokenized) and batch sources in the run's layout; `train` / `eval` replace the
    config's sources (records passed from Python)."""
    if tokenizer is None:
        tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model.trust_remote_code)
    elif tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    train_split, eval_split, loaded = prepare_data(cfg.data_settings(train, eval), tokenizer, cfg.train.seed)
    layout = cfg.train.resolved_layout()
    common = dict(pad_id=tokenizer.pad_token_id, rank=accelerator.process_index, world=accelerator.num_processes,
                  device=accelerator.device, layout=layout, pack_tokens=cfg.train.pack_tokens,
                  static=cfg.experimental.static_shapes)
    unpaired = cfg.stage == "preference" and cfg.loss.unpaired()

    def source(split: TokenizedSplit, seed: int, shuffle: bool) -> BatchSource:
        if not unpaired:
            return BatchSource(split.pairs, cfg.train.batch_size, seed, shuffle, **common)
        labels = [bool(getattr(ex, "label")) for ex in split.examples]
        return BatchSource(kl_pairs(split.pairs, cfg.train.batch_size, cfg.data.max_length), cfg.train.batch_size, seed, shuffle,
                           labels=labels, **common)

    train_src = source(train_split, cfg.train.seed, cfg.train.shuffle)
    eval_src = source(eval_split, 0, False) if eval_split else None
    if train_src.labels is not None:
        weights = kto.KTOLoss.from_config(cfg.loss)
        advice = weight_advice(train_src.labels, weights.desirable_weight, weights.undesirable_weight)
        if advice:
            logger.warning("data: %s", advice)
    return RunData(tokenizer, train_src, eval_src, train_split, eval_split, loaded)


def setup_policy(cfg: RunConfig, model: torch.nn.Module | None, needs_copy: bool) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """The policy to train (loaded from `model.name_or_path`, or the caller's model with LoRA added when configured)
    and, when `needs_copy`, a frozen copy of the caller's model as it was handed over (the reference; for a peft model,
    its adapter merged, or left out with `reference.start_adapter: base`)."""
    if model is None:
        return load_model(cfg.model, attention=cfg.experimental.attention), None
    frozen = None
    if needs_copy:
        frozen = copy.deepcopy(model)
        if is_peft(frozen):
            frozen = frozen.merge_and_unload() if cfg.reference.start_adapter == "frozen" else frozen.unload()
        frozen = frozen.eval().requires_grad_(False)
    if cfg.model.lora.enabled and not is_peft(model):
        model = add_lora(model, cfg.model)
    model.config.use_cache = False
    return model, frozen


def _resume_dir(cfg: RunConfig, out_dir: Path | None) -> Path | None:
    if cfg.resume_from is None:
        return None
    if out_dir is None:
        raise ConfigError("resume_from needs an output_dir to resume in; an in-memory run (output_dir=None) keeps no checkpoints.")
    if cfg.resume_from == "auto":
        found = latest_valid_checkpoint(out_dir)
        if found is None:
            logger.info("resume_from auto: no checkpoint in %s; starting fresh", out_dir)
        return found
    path = Path(cfg.resume_from)
    if not path.is_dir():
        raise ConfigError(f"resume_from = {cfg.resume_from!r}: not a checkpoint folder. Fix: give a checkpoint-N folder or 'auto'.")
    problem = verify(path)
    if problem:
        raise PreftuneError(f"resume_from {path}: {problem}. Fix: use another checkpoint or resume_from: auto (which skips damaged ones).")
    return path


def setup_run(cfg: RunConfig, model: torch.nn.Module | None = None, tokenizer: Any = None, train_data: Sources | None = None,
              eval_data: Sources | None = None) -> Run:
    """Every part of a run, in order: output folder check, accelerator and seeds, data, policy and reference, optimizer,
    resume state, run folder and trackers. `cfg.output_dir` None trains in memory (no files)."""
    out_dir = Path(cfg.output_dir) if cfg.output_dir else None
    if out_dir is not None:
        check_writable(out_dir, "output_dir")
    elif cfg.train.save_every:
        logger.info("train.save_every is ignored: an in-memory run (output_dir=None) writes no checkpoints")
    accelerator = make_accelerator(cfg)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    data = setup_data(cfg, accelerator, tokenizer, train_data, eval_data)
    steps_per_epoch = max(1, data.train.num_batches() // cfg.train.grad_accum)
    total_steps = cfg.train.max_steps or max(1, math.ceil(cfg.train.epochs * steps_per_epoch))

    objective = choose_objective(cfg, accelerator.gather if accelerator.num_processes > 1 else None)
    lora = cfg.model.lora.enabled or (model is not None and is_peft(model))
    continuing = cfg.model.lora.adapter_path is not None or (model is not None and is_peft(model))
    choice = reference_choice(cfg, objective, lora, continuing)
    strategy = strategy_name(cfg, choice)
    mode = pick_mode(accelerator)
    mode.check(choice)
    policy, frozen = setup_policy(cfg, model, needs_copy=model is not None and choice.kind == "separate" and choice.named_by is None)
    if out_dir is not None and accelerator.is_main_process:
        check_space(out_dir, space_needed(policy, cfg, total_steps))
    policy = policy.to(accelerator.device)
    if cfg.train.fuses("fused_mlp", accelerator.device.type):
        fuse_mlps(policy)
    if cfg.train.fuses("fused_norm", accelerator.device.type):
        fuse_norms(policy)
    if cfg.train.gradient_checkpointing:
        enable_checkpointing(policy, cfg.train.gradient_checkpointing)
    live = build_reference(cfg, choice, policy, accelerator, mode, frozen, data.tokenizer)
    x = cfg.experimental
    if x.compile:
        dynamic = not x.static_shapes
        n = compile_layers(policy, x.compile_backend, dynamic, x.compile_mode)
        if isinstance(live, SeparateReference):
            compile_layers(live.model, x.compile_backend, dynamic, x.compile_mode)
        logger.info("experimental.compile: %d decoder layers compiled with %s (the first steps include compile time)", n, x.compile_backend)
    ref_train = ref_eval = live
    if strategy == "precomputed":
        planned = BatchStream(data.train).planned(total_steps * cfg.train.grad_accum)  # from the start: a resumed run's are among them
        tables = precomputed_tables(cfg, live, {"train": data.train, **({"eval": data.eval} if data.eval else {})}, accelerator,
                                    {"train": planned})
        ref_train, ref_eval = tables["train"], tables.get("eval", tables["train"])
        del live  # the tables hold it until they cover what the run uses (a frozen copy is then freed)
    logger.info("reference strategy: %s", strategy)

    logps_model = LogpsModel(policy, cfg.train.logits_chunk, top1=objective.counts_top1)
    mode.before_optimizer(logps_model)
    optimizer, scheduler = make_optimizer(policy, cfg, total_steps, sharded=mode.rewraps)
    prepared, optimizer = mode.prepare(logps_model, optimizer, cfg)
    prepared.train()

    state = TrainState()
    resume_dir = _resume_dir(cfg, out_dir)
    if resume_dir is not None:
        state = load_checkpoint(resume_dir, mode.load(prepared, optimizer, resume_dir), scheduler)
        logger.info("resumed from %s at step %d", resume_dir, state.step)
    folder = RunFolder(out_dir, accelerator.is_main_process, state.step if resume_dir else None, state.metrics_lines)
    if cfg.report_to and out_dir is not None:
        accelerator.init_trackers("preftune", config=flat_config(cfg.model_dump(mode="json")))
    if folder.path is not None:
        write_config(cfg, folder.path / CONFIG)
        folder.write(DATA_SUMMARY, data_summary(data.train_split, data.eval_split, data.loaded))
    diagnostics = cfg.diagnostics if objective.diagnoses else cfg.diagnostics.model_copy(update={"enabled": False})
    return Run(cfg, accelerator, data, policy, prepared, ref_train, ref_eval, strategy, objective, optimizer, scheduler,
               BatchStream(data.train, state.epoch, state.batch_in_epoch), state, total_steps, resume_dir is not None, folder,
               Diagnostics(diagnostics, not_applicable(cfg.loss.uses_reference(), cfg.loss.name)), mode)


def precompute_reference(cfg: RunConfig) -> Path:
    """`preftune precompute-ref`: build the reference log-prob cache of the config's data and exit."""
    if not cfg.loss.uses_reference():
        raise ConfigError(f"loss {cfg.loss.name} is reference-free: there is nothing to precompute.")
    accelerator = make_accelerator(cfg)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    data = setup_data(cfg, accelerator)
    policy = load_model(cfg.model, attention=cfg.experimental.attention).to(accelerator.device) if cfg.model.lora.enabled else None
    lora = policy is not None and is_peft(policy)
    choice = reference_choice(cfg.model_copy(update={"reference": cfg.reference.model_copy(update={"strategy": "precomputed"})}),
                              choose_objective(cfg), lora, continuing=cfg.model.lora.adapter_path is not None)
    live = build_reference(cfg, choice, policy, accelerator, pick_mode(accelerator))
    every = cfg.model_copy(update={"reference": cfg.reference.model_copy(update={"precompute": "upfront"})})
    precomputed_tables(every, live, {"train": data.train, **({"eval": data.eval} if data.eval else {})}, accelerator)  # every pair
    return Path(cfg.reference.cache_dir) if cfg.reference.cache_dir else default_reference_cache()
