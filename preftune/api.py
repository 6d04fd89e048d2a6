"""The Python API: `preftune.train(...)`, `preftune.sft(...)`, `preftune.evaluate(...)` and
`preftune.iterate_rounds(...)`, the entry points of notebooks, scripts and the command line."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from .config import Overrides, RunConfig, load_config
from .data.pipeline import Sources
from .data.readers import InMemoryRecords
from .errors import ConfigError
from .models.loading import is_peft
from .training.callbacks import TrainResult

_FROM_CONFIG: Any = object()

ConfigLike = str | Path | dict[str, Any] | RunConfig | None
DataLike = str | Path | Sequence[str] | Sequence[dict[str, Any]] | Any  # paths, records, or a datasets.Dataset


def as_sources(data: DataLike, name: str) -> Sources | None:
    """Paths stay paths; a list of dicts or a `datasets.Dataset` becomes records read from memory (errors name the index)."""
    if data is None:
        return None
    if isinstance(data, (str, Path)):
        return str(data)
    if isinstance(data, Sequence) and data and all(isinstance(d, (str, Path)) for d in data):
        return [str(d) for d in data]
    if hasattr(data, "__len__") and hasattr(data, "__iter__") and not isinstance(data, (bytes, dict)):
        return InMemoryRecords(data, name)
    raise ConfigError(f"{name}: a {type(data).__name__} is not data preftune reads. Fix: pass a path, a list of dicts or a datasets.Dataset.")


def train(config: ConfigLike = None, *, overrides: Overrides | None = None, model: torch.nn.Module | None = None, tokenizer: Any = None,
          train_data: DataLike = None, eval_data: DataLike = None, callbacks: Iterable[Any] = (), output_dir: str | Path | None = _FROM_CONFIG,
          progress: bool = True, catch_interrupt: bool = False) -> TrainResult:
    """Train a model by DPO (or any loss of the family) and return what happened.

    Args:
        config: a YAML path, a nested dict with the YAML's keys, or a `RunConfig`; None takes every default.
        overrides: `"key=value"` strings or a flat dict such as `{"train.max_steps": 5}`, validated like the CLI's.
        model, tokenizer: an already loaded `transformers` model (plain or peft-wrapped) and its tokenizer, used
            instead of `model.name_or_path`. LoRA settings still apply to a plain model; the reference is a frozen
            copy of the model as passed (or, with an adapter, the model with its adapter switched off).
        train_data, eval_data: a path, a list of dicts in any format preftune reads, or a `datasets.Dataset`,
            instead of `data.train` / `data.eval`.
        callbacks: functions `f(step, metrics)` or objects with `on_step`, `on_evaluate`, `on_save`, `on_end`;
            `on_step` / `on_evaluate` (or the function) returning True stops the run after that step.
        output_dir: where files go (default: the config's `output_dir`); None trains in memory and writes nothing.
        progress: show the progress bar.
        catch_interrupt: Ctrl-C stops after the current step with a checkpoint (the CLI sets this).

    Returns:
        `TrainResult`: `history` (one dict per logged step and evaluation, as in metrics.jsonl), `before` / `after`
        held-out metrics, `findings` (diagnostics), `model` (the trained model), `paths` (files written).
    """
    cfg = load_config(config, overrides)
    if output_dir is not _FROM_CONFIG:
        cfg = cfg.model_copy(update={"output_dir": None if output_dir is None else str(output_dir)})
    if model is not None:
        name = str(getattr(model, "name_or_path", "") or "model passed from Python")
        updates = {"name_or_path": name} | ({"lora": cfg.model.lora.model_copy(update={"enabled": True})} if is_peft(model) else {})
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update=updates)})
        if tokenizer is None:
            raise ConfigError("preftune.train(model=...): pass its tokenizer too (tokenizer=...), so the data is tokenized as the model expects.")
    train_src, eval_src = as_sources(train_data, "train_data"), as_sources(eval_data, "eval_data")
    if isinstance(train_src, InMemoryRecords):
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"train": str(train_src)})})
    hooks = list(callbacks)
    if cfg.report and cfg.output_dir:
        from .report import ReportWriter

        hooks.append(ReportWriter())
    from .training.run import train as run_training

    return run_training(cfg, model=model, tokenizer=tokenizer, train_data=train_src, eval_data=eval_src, callbacks=hooks,
                        show_progress=progress, catch_interrupt=catch_interrupt)


DEFAULT_EVAL_DIR: Any = object()  # RUN/eval for a run folder, else runs/eval (what `preftune eval` writes by default)


def evaluate(model: str | Path | torch.nn.Module, data: DataLike, *, reference: str | Path | torch.nn.Module | None = None,
             beta: float | None = None, tokenizer: Any = None, config: ConfigLike = None, overrides: Overrides | None = None,
             reference_free: bool = False, batch_size: int = 8, max_pairs: int | None = None, generate: bool = False,
             judge: Any = None, output_dir: str | Path | None = None, progress: bool = False) -> dict[str, Any]:
    """What `preftune eval` computes, from Python: held-out preference accuracy, margins, log-ratios and the length
    breakdown, scored by training's own path; with `generate` or a `judge`, samples, lengths, a KL estimate and the
    judge's rewards / win rate.

    Args:
        model: a folder, adapter folder, preftune run folder, .gguf, `smollm2-135m-instruct`, or a loaded model.
        data: a path, a list of dicts or a `datasets.Dataset` of preference pairs.
        reference: a path or a loaded model; by default an adapter's base, a run's start model, else none.
        beta: β of the rewards; default the run's own loss β for a run folder, else the config's.
        tokenizer: needed with a loaded `model`.
        config, overrides: data (recipe, lengths), generation and loss settings, as for `train`.
        reference_free: compare the model's own log-probs even when a reference is implied.
        judge: `module:function` or a `JudgeConfig`.
        output_dir: where eval.json and samples.jsonl go; None writes nothing.
    Returns:
        One JSON-ready dict: `preference`, and `generation` when asked for.
    """
    from .config import JudgeConfig
    from .evaluation.judging import load_judge
    from .evaluation.models import EvalModels, load_eval_models
    from .run_files import check_writable
    from .evaluation.run import EvalSettings, run_eval
    from .scoring.choice import choose_reference, make_reference

    cfg = load_config(config, overrides)
    judge_cfg = JudgeConfig(name=judge) if isinstance(judge, str) else judge
    if judge_cfg is not None:
        load_judge(judge_cfg)  # a judge that cannot be imported fails before any model loads
    if batch_size < 1:
        raise ConfigError(f"batch_size = {batch_size}: must be at least 1 (--batch-size).")
    if max_pairs is not None and max_pairs < 1:
        raise ConfigError(f"max_pairs = {max_pairs}: must be at least 1, or unset for every pair (--max-pairs).")
    if beta is not None and not beta > 0:
        raise ConfigError(f"beta = {beta}: must be > 0 (--beta).")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    chunk = cfg.train.logits_chunk
    loss_cfg = cfg.loss
    if isinstance(model, torch.nn.Module):
        if tokenizer is None:
            raise ConfigError("preftune.evaluate(model=<loaded model>): pass its tokenizer too (tokenizer=...).")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        policy = model.to(device).eval()
        adapter_base = model.peft_config[model.active_adapter].base_model_name_or_path if is_peft(model) else None
        explicit = None if reference_free or reference is None else reference.to(device).eval() if isinstance(reference, torch.nn.Module) else str(reference)
        choice = choose_reference("none" if reference_free else "auto", explicit=explicit, named_by="reference", adapter_base=adapter_base)
        ref = make_reference(choice, policy, chunk, lambda path: load_eval_models(path, None, cfg.model.dtype, device, reference_free=True, chunk=chunk).policy,
                             place=lambda m: m.to(device), tokenizer=tokenizer)
        ref_name = choice.name
        models = EvalModels(tokenizer, policy, ref, str(getattr(model, "name_or_path", "model passed from Python")), ref_name)
        run_dir = None
    else:
        if isinstance(reference, torch.nn.Module):
            raise ConfigError("preftune.evaluate: a loaded reference model needs a loaded policy model too (or pass both as paths).")
        models = load_eval_models(str(model), None if reference is None else str(reference), cfg.model.dtype, device, reference_free, chunk)
        assert models.source is not None
        run_dir = models.source.run
        loss_cfg = models.source.loss() or loss_cfg
    if output_dir is DEFAULT_EVAL_DIR:
        output_dir = run_dir / "eval" if run_dir is not None else Path("runs/eval")
    if output_dir is not None:
        check_writable(Path(output_dir), "output_dir (--output-dir)")  # before the scoring, not after it
    settings = EvalSettings(loss=loss_cfg, beta=beta, max_pairs=max_pairs, batch_size=batch_size, generate=generate or judge_cfg is not None,
                            judge=judge_cfg, show_progress=progress)
    source = as_sources(data, "data")
    if source is None:
        raise ConfigError("preftune.evaluate: no data. Fix: pass preference pairs (a path, a list of dicts or a datasets.Dataset).")
    return run_eval(models, source, cfg, settings, Path(output_dir) if output_dir is not None else None)


def sft(config: ConfigLike = None, *, overrides: Overrides | None = None, **kwargs: Any) -> TrainResult:
    """Supervised fine-tuning, the stage before DPO: `train` with `stage: sft`, the same arguments and result. Data:
    TRL's SFT formats (prompt/completion, `messages`, `text`) or preference data (its chosen responses); the loss
    covers completion tokens only unless `sft.completion_only_loss` is false. Point a later `train`'s
    `model.name_or_path` at the run folder to start DPO from it, with it as the reference."""
    merged: Overrides = {**overrides, "stage": "sft"} if isinstance(overrides, dict) else [*(overrides or []), "stage=sft"]
    return train(config, overrides=merged, **kwargs)


def iterate_rounds(config: ConfigLike = None, *, overrides: Overrides | None = None, output_dir: str | Path = _FROM_CONFIG,
                   progress: bool = True) -> list[dict[str, Any]]:
    """On-policy rounds (`preftune iterate`): each round samples the current model on new prompts (more samples where
    they give nothing to learn from, up to `iterate.max_samples_per_prompt`), judges them, trains on pairs (or, with
    `iterate.round_type: rejection_sft`, on the correct samples) and scores greedy answers to held-out prompts. Returns
    one summary per round, round 0 being the start model: held-out mean and standard error, sampling counts, pairs by
    strategy, KL to the start model, lengths, seconds. Finished rounds in output_dir are not redone."""
    cfg = load_config(config, overrides)
    if output_dir is not _FROM_CONFIG:
        cfg = cfg.model_copy(update={"output_dir": str(output_dir)})
    from .iterate.rounds import iterate

    return iterate(cfg, show_progress=progress)


def compare(run_dirs: Iterable[str | Path], output: str | Path | None = None) -> dict[str, Any]:
    """Runs side by side, what `preftune compare` shows: per run its held-out metrics (accuracy with its standard
    error), the diagnostics that fired and the advice they imply, and its curves; the configuration keys that differ; the
    paired difference of held-out accuracy of each run against the first, with a 95% paired-bootstrap interval, where
    they were evaluated on the same pairs. `output`: also write the self-contained page there."""
    from .report.compare import compare as compare_runs, write_compare

    dirs = list(run_dirs)
    return write_compare(dirs, output)[1] if output is not None else compare_runs(dirs)


def export_model(source: str | Path, to: str = "gguf", output: str | Path = "model.gguf", dtype: str = "f16") -> Path:
    """Write a run's model (a run folder, model or adapter folder, .gguf, or the embedded model; LoRA merged) as one
    GGUF file (`to="gguf"`: f32, f16 or q8_0, for llama.cpp and Ollama) or a merged Hugging Face folder (`to="hf"`:
    f32, f16 or bf16). What `preftune export` does; returns the path written."""
    from .export import export

    return export(source, to, output, dtype)
