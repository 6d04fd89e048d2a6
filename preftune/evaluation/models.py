"""The policy and reference an evaluation compares: a model folder, a LoRA adapter, a preftune run folder, the embedded
default, or models already loaded in Python, with the reference named, implied (adapter base / the run's start model)
or absent, chosen by the same rule as training's (`scoring.choice`), so it is scored exactly as in training."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from ..config import LossConfig, ModelConfig
from ..errors import ConfigError, ModelError
from ..models.loading import load_model, load_tokenizer
from ..run_files import CONFIG, MERGED_DIR, MODEL_DIR
from ..scoring.batches import Reference
from ..scoring.choice import choose_reference, make_reference
from ..scoring.reference import NoReference


@dataclass(frozen=True)
class FoundRun:
    """What a path given as --model resolves to: the model folder, and for a preftune run its folder and start model."""

    model: str
    run: Path | None = None
    start: str | None = None

    def loss(self) -> LossConfig | None:
        """The run's own `loss` section (β, variant, normalization), or None when this is not a run folder."""
        if self.run is None:
            return None
        try:
            section = yaml.safe_load((self.run / CONFIG).read_text(encoding="utf-8"))["loss"]
            return LossConfig.model_validate(section)
        except Exception as e:  # noqa: BLE001 - any damage to the file is reported the same way
            raise ConfigError(f"{self.run / CONFIG}: cannot read the run's loss section ({type(e).__name__}). Fix: pass --beta, or restore the file.") from None


@dataclass
class EvalModels:
    """The policy, its tokenizer and its reference (a separate frozen model, the policy with its adapter off, or none)."""

    tokenizer: Any
    policy: torch.nn.Module
    reference: Reference
    policy_name: str
    reference_name: str | None
    source: FoundRun | None = None  # what a path given as the model resolved to (None for a model passed from Python)

    @property
    def has_reference(self) -> bool:
        return not isinstance(self.reference, NoReference)


def resolve_run_folder(path: str) -> FoundRun:
    """A preftune run folder resolves to its `model/` (or `merged/`), its folder and its start model."""
    p = Path(path)
    run = None
    if (p / CONFIG).exists() and (p / MODEL_DIR).is_dir():
        run, p = p, p / MODEL_DIR
    elif (p.parent / CONFIG).exists() and p.name in (MODEL_DIR, MERGED_DIR):
        run = p.parent
    if run is None:
        return FoundRun(str(p) if p.exists() else path)
    try:
        start = yaml.safe_load((run / CONFIG).read_text())["model"]["name_or_path"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        start = None
    return FoundRun(str(p), run, start)


def load_eval_models(model: str, reference: str | None, dtype: str = "float32", device: str | torch.device = "cpu",
                     reference_free: bool = False, chunk: int = 1024) -> EvalModels:
    """Load the policy and its reference for evaluation (frozen, eval mode).

    Reference, in order: `reference` when given; for an adapter folder its base with the adapter disabled; for a preftune
    run folder the run's start model; else none (log-probs are compared directly). `reference_free` forces none."""
    cfg = ModelConfig(dtype=dtype)  # type: ignore[arg-type]
    found = resolve_run_folder(model)
    folder = found.model
    adapter_cfg = Path(folder) / "adapter_config.json"
    is_adapter = adapter_cfg.exists()
    if is_adapter:
        from peft import PeftModel

        try:
            base_name = json.loads(adapter_cfg.read_text())["base_model_name_or_path"]
        except (OSError, KeyError, json.JSONDecodeError) as e:
            raise ModelError(f"{adapter_cfg}: cannot read base_model_name_or_path ({e}). Fix: save the adapter with peft's save_pretrained.") from None
        base = load_model(cfg, base_name, trainable=False)
        policy = PeftModel.from_pretrained(base, folder, is_trainable=False)
        policy.eval()
        tokenizer = load_tokenizer(folder if (Path(folder) / "tokenizer_config.json").exists() else base_name)
    else:
        policy = load_model(cfg, folder, trainable=False)
        tokenizer = load_tokenizer(folder)
    policy.to(device)
    choice = choose_reference("none" if reference_free else "auto", explicit=reference, named_by="--reference",
                              adapter_base=base_name if is_adapter else None, start=found.start)
    ref = make_reference(choice, policy, chunk, lambda path: load_model(cfg, resolve_run_folder(path).model, trainable=False),
                         place=lambda m: m.to(device), tokenizer=tokenizer)
    ref_name = choice.name
    return EvalModels(tokenizer, policy, ref, model, ref_name, found)
