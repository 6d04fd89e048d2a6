"""What a run leaves behind: weights in Hugging Face format, the resolved config, and a model card."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

from ..config import RunConfig
from ..models.loading import is_peft
from ..run_files import MERGED_DIR

TRAINABLE = "trainable.safetensors"
logger = logging.getLogger("preftune.training")


def save_trainable(model: torch.nn.Module, folder: Path) -> None:
    """The trainable parameters (adapter or full weights) of `model` as safetensors, for checkpoints."""
    save_tensors({n: p.detach() for n, p in model.named_parameters() if p.requires_grad}, folder)


def save_tensors(tensors: dict[str, torch.Tensor], folder: Path) -> None:
    """`tensors` (a checkpoint's weights) as `folder/TRAINABLE`."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({n: t.contiguous().clone().cpu() for n, t in tensors.items()}, str(folder / TRAINABLE))


def load_trainable(model: torch.nn.Module, folder: Path) -> None:
    state = load_file(str(folder / TRAINABLE))
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise RuntimeError(f"{folder}: checkpoint weights do not fit this model (unexpected {result.unexpected_keys[:5]})")


def save_final(model: torch.nn.Module, tokenizer: Any, cfg: RunConfig, folder: Path, merge: bool,
               state_dict: dict[str, torch.Tensor] | None = None) -> dict[str, str]:
    """Weights (adapter, and merged on request) plus tokenizer in Hugging Face format; returns the folders written.
    `state_dict`: the weights gathered from a sharded model (then no merged copy is made here; `preftune export` makes one)."""
    written = {}
    folder.mkdir(parents=True, exist_ok=True)
    if is_peft(model):  # the trained adapter only (a frozen start adapter is the reference, not the result)
        model.save_pretrained(folder, safe_serialization=True, selected_adapters=[model.active_adapter], state_dict=state_dict)
    else:
        model.save_pretrained(folder, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(folder)
    written["model"] = str(folder)
    if merge and state_dict is not None and hasattr(model, "merge_and_unload"):
        logger.info("train.merge_adapter: a sharded run writes the adapter only; `preftune export` merges it")
    elif merge and hasattr(model, "merge_and_unload"):
        merged_dir = folder.parent / MERGED_DIR
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


SUMMARY_KEYS = ("eval/rewards/accuracies", "eval/rewards/margins", "eval/rewards/chosen", "eval/rewards/rejected", "eval/logps/chosen",
                "eval/logps/rejected", "eval/loss", "eval/mean_token_accuracy", "eval/perplexity")  # the last two: SFT
