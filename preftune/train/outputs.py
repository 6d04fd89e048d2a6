"""What a run leaves behind: weights in Hugging Face format, the resolved config, and a model card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

from ..config import RunConfig

TRAINABLE = "trainable.safetensors"


def save_trainable(model: torch.nn.Module, folder: Path) -> None:
    """The trainable parameters (adapter or full weights) of `model` as safetensors, for checkpoints."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {n: p.detach().contiguous().clone().cpu() for n, p in model.named_parameters() if p.requires_grad}
    save_file(tensors, str(folder / TRAINABLE))


def load_trainable(model: torch.nn.Module, folder: Path) -> None:
    state = load_file(str(folder / TRAINABLE))
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise RuntimeError(f"{folder}: checkpoint weights do not fit this model (unexpected {result.unexpected_keys[:5]})")


def save_final(model: torch.nn.Module, tokenizer: Any, cfg: RunConfig, folder: Path, merge: bool) -> dict[str, str]:
    """Weights (adapter, and merged on request) plus tokenizer in Hugging Face format; returns the folders written."""
    written = {}
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    written["model"] = str(folder)
    if merge and hasattr(model, "merge_and_unload"):
        merged_dir = folder.parent / "merged"
        import copy

        merged = copy.deepcopy(model).merge_and_unload()
        merged.save_pretrained(merged_dir, safe_serialization=True)
        tokenizer.save_pretrained(merged_dir)
        written["merged"] = str(merged_dir)
    return written


def write_config(cfg: RunConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def model_card(cfg: RunConfig, data_summary: dict[str, Any], before: dict[str, float], after: dict[str, float], final_train: dict[str, float]) -> str:
    lines = ["---", "library_name: preftune", f"base_model: {cfg.model.name_or_path}", "tags: [preftune, dpo, preference-optimization]", "---", "",
             f"# {Path(cfg.output_dir).name}", "",
             f"Trained with preftune: loss `{cfg.loss.name if not cfg.loss.components else '+'.join(c.name for c in cfg.loss.components)}` "
             f"(β = {cfg.loss.resolved_beta()}), reference strategy `{cfg.reference.strategy}`, "
             f"{'LoRA r=' + str(cfg.model.lora.r) if cfg.model.lora.enabled else 'full fine-tuning'}.", "",
             "## Data", "", f"- train: `{cfg.data.train}`", f"- eval: `{cfg.data.eval or f'{cfg.data.eval_fraction:.0%} of train held out'}`"]
    lines += [f"- {k}: {v}" for k, v in data_summary.items()]
    lines += ["", "## Settings", "", "```yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).strip(), "```", ""]
    if before or after:
        lines += ["## Held-out metrics", "", "| metric | before | after |", "|---|---|---|"]
        for k in sorted(set(before) | set(after)):
            b, a = before.get(k), after.get(k)
            lines.append(f"| {k} | {'' if b is None else f'{b:.4f}'} | {'' if a is None else f'{a:.4f}'} |")
        lines.append("")
    if final_train:
        lines += ["## Last training step", "", *[f"- {k}: {v:.4f}" for k, v in sorted(final_train.items()) if isinstance(v, float)], ""]
    return "\n".join(lines)
