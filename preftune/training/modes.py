"""Distributed modes behind one interface: one process or DDP, FSDP through accelerate (accelerators), FSDP on CPU
processes (torch's fully_shard), DeepSpeed ZeRO. Set-up picks one with `pick_mode`; set-up's remaining steps, the
loop, checkpoints and the final save call it without asking which it is."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..config import RunConfig
from ..errors import ConfigError
from ..models.logprobs import LogpsModel
from ..scoring.choice import ReferenceChoice
from . import sharding, zero
from .outputs import TRAINABLE, load_trainable

logger = logging.getLogger("preftune.training")

Tensors = dict[str, torch.Tensor]


class Mode:
    """One process, or data parallel (DDP) through accelerate: the behaviour the other modes refine. `rewraps` says
    whether the mode replaces the parameters (FSDP, DeepSpeed), which rules out torch's fused AdamW."""

    name = "single process or DDP"
    rewraps = False

    def __init__(self, accelerator: Any):
        self.accelerator = accelerator

    def check(self, reference: ReferenceChoice) -> None:
        """Refuse, with the fix, a reference this mode cannot run."""

    def shard_reference(self, model: torch.nn.Module, chunk: int) -> torch.nn.Module:
        """A separate reference model as this mode runs it: as it is here; sharded like the policy (its log-prob
        module) where the mode shards."""
        return model

    def before_optimizer(self, logps_model: torch.nn.Module) -> None:
        """What the mode does to the policy's log-prob module before its optimizer is made (nothing here)."""

    def prepare(self, logps_model: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: RunConfig) -> tuple[torch.nn.Module, Any]:
        """The policy's log-prob module and its optimizer, wrapped for this mode."""
        return self.accelerator.prepare(logps_model, optimizer)

    def micro_batch(self, policy: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager[Any]:
        """The context of one micro-batch's forward and backward: gradients are synchronized on the step's last only."""
        if not last and self.accelerator.num_processes > 1:
            return self.accelerator.no_sync(policy)
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, grad_accum: int) -> None:
        self.accelerator.backward(loss / grad_accum)

    def clip(self, policy: torch.nn.Module, max_norm: float | None) -> float:
        """Clip the gradients to `max_norm` (None: no clipping) and return their norm before clipping."""
        params = [p for p in policy.parameters() if p.requires_grad and p.grad is not None]
        if max_norm is not None:
            norm = self.accelerator.clip_grad_norm_(params, max_norm)
        elif params:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        else:
            return 0.0
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # sharded (FSDP) gradients give a DTensor

    def checkpoint_state(self, policy: torch.nn.Module, optimizer: Any) -> tuple[Tensors | None, dict[str, Any]]:
        """The trainable weights (None: the unwrapped model's own, saved by the caller) and the optimizer state in torch's
        AdamW format, gathered from every process where the mode splits them (every process must call this)."""
        return None, optimizer.state_dict()

    def final_state(self, policy: torch.nn.Module) -> Tensors | None:
        """The full weights gathered from every process where the mode shards them, else None (every process calls this)."""
        return None

    def load(self, prepared: torch.nn.Module, optimizer: Any, resume_dir: Path) -> Any:
        """Load a checkpoint's trainable weights into `prepared`; returns the function that loads its optimizer state."""
        load_trainable(self.accelerator.unwrap_model(prepared).model, resume_dir / "model")
        return optimizer.load_state_dict


class AcceleratorFSDP(Mode):
    """FSDP through accelerate on accelerators: the reference is sharded like the policy."""

    name = "FSDP"
    rewraps = True

    def shard_reference(self, model: torch.nn.Module, chunk: int) -> torch.nn.Module:
        return self.accelerator.prepare_model(LogpsModel(model, chunk), evaluation_mode=True)


class CpuFSDP(Mode):
    """FSDP on CPU processes, where accelerate sets up plain data parallelism: torch's fully_shard over its gloo group,
    full state dicts gathered for checkpoints and the final model."""

    name = "FSDP on CPU processes"
    rewraps = True

    def check(self, reference: ReferenceChoice) -> None:
        if reference.kind in ("adapter_disabled", "start_adapter"):
            raise ConfigError(f"reference ({reference.name}) with LoRA uses the policy's own weights as the reference, which FSDP on CPU "
                              "does not gather outside the policy's forward pass. Fix: reference.strategy: separate (sharded like the policy).")

    def shard_reference(self, model: torch.nn.Module, chunk: int) -> torch.nn.Module:
        return sharding.shard(LogpsModel(model, chunk))

    def prepare(self, logps_model: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: RunConfig) -> tuple[torch.nn.Module, Any]:
        return logps_model, self.accelerator.prepare(optimizer)  # sharded before the optimizer was made (`before_optimizer`)

    def before_optimizer(self, logps_model: torch.nn.Module) -> None:  # noqa: D102
        sharding.shard(logps_model)  # sharding replaces the parameters the optimizer must hold

    def checkpoint_state(self, policy: torch.nn.Module, optimizer: Any) -> tuple[Tensors | None, dict[str, Any]]:
        return sharding.full_state(policy, trainable_only=True), sharding.full_optimizer_state(policy, optimizer.optimizer)

    def final_state(self, policy: torch.nn.Module) -> Tensors | None:
        return sharding.full_state(policy)

    def load(self, prepared: torch.nn.Module, optimizer: Any, resume_dir: Path) -> Any:
        sharding.load_full_state(prepared, load_file(str(resume_dir / "model" / TRAINABLE)))
        return lambda state: sharding.load_full_optimizer_state(prepared, optimizer.optimizer, state)


class DeepSpeedZeRO(Mode):
    """DeepSpeed ZeRO through accelerate: its engine accumulates, scales, clips and steps inside backward; checkpoints
    gather every process's optimizer slice into torch's AdamW format."""

    name = "DeepSpeed ZeRO"
    rewraps = True

    def prepare(self, logps_model: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: RunConfig) -> tuple[torch.nn.Module, Any]:
        ds = self.accelerator.state.deepspeed_plugin.deepspeed_config
        want = {"train_micro_batch_size_per_gpu": cfg.train.batch_size, "gradient_accumulation_steps": cfg.train.grad_accum,
                "gradient_clipping": cfg.train.max_grad_norm or 0.0}
        for key, value in want.items():  # no dataloader is prepared for DeepSpeed to read them from; the run's settings win
            if ds.get(key, "auto") not in ("auto", value):
                logger.info("DeepSpeed %s %s from the accelerate config is replaced by the run's %s", key, ds[key], value)
            ds[key] = value
        ds["train_batch_size"] = cfg.train.batch_size * cfg.train.grad_accum * self.accelerator.num_processes
        ds["zero_allow_untested_optimizer"] = True  # torch's AdamW, as every other preftune run uses
        return self.accelerator.prepare(logps_model, optimizer)

    def micro_batch(self, policy: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()  # the engine knows the accumulation boundary

    def backward(self, loss: torch.Tensor, grad_accum: int) -> None:
        self.accelerator.backward(loss)  # the engine scales by the accumulation steps itself

    def clip(self, policy: torch.nn.Module, max_norm: float | None) -> float:
        norm = policy.get_global_grad_norm()  # type: ignore[operator]  # clipped and stepped by the engine in backward
        return float(norm) if norm is not None else 0.0

    def checkpoint_state(self, policy: torch.nn.Module, optimizer: Any) -> tuple[Tensors | None, dict[str, Any]]:
        return None, zero.full_optimizer_state(optimizer)

    def load(self, prepared: torch.nn.Module, optimizer: Any, resume_dir: Path) -> Any:
        load_trainable(self.accelerator.unwrap_model(prepared).model, resume_dir / "model")
        return lambda state: zero.load_full_optimizer_state(optimizer, state)


def launch_settings() -> dict[str, Any]:
    """What accelerate's Accelerator needs, from how the processes were launched: several processes on a machine without
    CUDA run on CPU with gloo; DeepSpeed there needs gloo named, or accelerate finds no backend and counts one process."""
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"  # DeepSpeed brings its own CPU accelerator
    cpu_processes = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available() and not deepspeed
    handlers = []
    if deepspeed and not torch.cuda.is_available():
        from accelerate.utils import InitProcessGroupKwargs

        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    return {"cpu": cpu_processes, "kwargs_handlers": handlers}


def pick_mode(accelerator: Any) -> Mode:
    """The mode of a run, from what accelerate set up (and, on CPU processes, the launch's FSDP request)."""
    if sharding.cpu_fsdp(accelerator):
        logger.info("FSDP on %d CPU processes: torch's fully_shard (accelerate shards only on accelerators)", accelerator.num_processes)
        return CpuFSDP(accelerator)
    kind = accelerator.distributed_type  # DistributedType is a str enum
    if kind == "DEEPSPEED":
        stage = accelerator.state.deepspeed_plugin.deepspeed_config.get("zero_optimization", {}).get("stage")
        logger.info("DeepSpeed ZeRO stage %s on %d processes (%s)", stage, accelerator.num_processes, accelerator.device)
        return DeepSpeedZeRO(accelerator)
    if kind == "FSDP":
        return AcceleratorFSDP(accelerator)
    return Mode(accelerator)
