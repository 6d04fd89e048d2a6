"""The policy and reference an evaluation compares: a model folder, a LoRA adapter, a preftune run folder, or the
embedded default, with the reference named, implied (adapter base / the run's start model) or absent."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from ..config import ModelConfig
from ..errors import ModelError
from ..models.loading import load_model, load_tokenizer


@dataclass
class EvalModels:
    """`reference` is a separate frozen model; with `adapter_reference` the reference is the policy with its adapter off."""

    tokenizer: Any
    policy: torch.nn.Module
    reference: torch.nn.Module | None
    adapter_reference: bool
    policy_name: str
    reference_name: str | None

    @property
    def has_reference(self) -> bool:
        return self.reference is not None or self.adapter_reference

    @contextlib.contextmanager
    def as_reference(self) -> Iterator[torch.nn.Module | None]:
        """The reference model for the duration of the block (None without one)."""
        if self.reference is not None:
            yield self.reference
        elif self.adapter_reference:
            with self.policy.disable_adapter():
                yield self.policy
        else:
            yield None


def resolve_run_folder(path: str) -> tuple[str, str | None]:
    """(model folder, start model of the run or None): a preftune run folder resolves to its `model/` (or `merged/`)."""
    p = Path(path)
    run = None
    if (p / "config.yaml").exists() and (p / "model").is_dir():
        run, p = p, p / "model"
    elif (p.parent / "config.yaml").exists() and p.name in ("model", "merged"):
        run = p.parent
    if run is None:
        return str(p) if p.exists() else path, None
    try:
        start = yaml.safe_load((run / "config.yaml").read_text())["model"]["name_or_path"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        start = None
    return str(p), start


def load_eval_models(model: str, reference: str | None, dtype: str = "float32", device: str | torch.device = "cpu",
                     reference_free: bool = False) -> EvalModels:
    """Load the policy and its reference for evaluation (frozen, eval mode).

    Reference, in order: `reference` when given; for an adapter folder its base with the adapter disabled; for a preftune
    run folder the run's start model; else none (log-probs are compared directly). `reference_free` forces none."""
    cfg = ModelConfig(dtype=dtype)  # type: ignore[arg-type]
    folder, run_start = resolve_run_folder(model)
    adapter_cfg = Path(folder) / "adapter_config.json"
    adapter_reference = False
    if adapter_cfg.exists():
        from peft import PeftModel

        try:
            base_name = json.loads(adapter_cfg.read_text())["base_model_name_or_path"]
        except (OSError, KeyError, json.JSONDecodeError) as e:
            raise ModelError(f"{adapter_cfg}: cannot read base_model_name_or_path ({e}). Fix: save the adapter with peft's save_pretrained.") from None
        base = load_model(cfg, base_name, trainable=False)
        policy = PeftModel.from_pretrained(base, folder, is_trainable=False)
        policy.eval()
        tokenizer = load_tokenizer(folder if (Path(folder) / "tokenizer_config.json").exists() else base_name)
        adapter_reference = reference is None and not reference_free
    else:
        policy = load_model(cfg, folder, trainable=False)
        tokenizer = load_tokenizer(folder)
    ref_model = None
    ref_name = None
    if not reference_free:
        if reference is not None:
            ref_model, ref_name = load_model(cfg, resolve_run_folder(reference)[0], trainable=False), reference
        elif adapter_reference:
            ref_name = "adapter disabled (the base model)"
        elif run_start is not None:
            ref_model, ref_name = load_model(cfg, run_start, trainable=False), run_start
    policy.to(device)
    if ref_model is not None:
        ref_model.to(device)
    return EvalModels(tokenizer, policy, ref_model, adapter_reference, model, ref_name)
