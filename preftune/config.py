"""The run configuration: one YAML file validated by pydantic, the single source of defaults.

`load_config(path, overrides)` reads the file, applies `key=value` overrides (`train.max_steps=5`)
and validates; any problem raises `ConfigError` naming the key, the value and what is allowed.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .data.filters import FilterSettings
from .data.formats import DEFAULT_TURN_BOUNDARY, FORMATS
from .data.mapping import ColumnMapping
from .data.pipeline import LoadSettings, Sources
from .data.prepare import DataSettings
from .data.tokenize import TokenizeSettings
from .errors import ConfigError
from .losses import NAMES, default_beta, is_unpaired, loss_params, uses_reference


def parse_seconds(v: Any) -> Any:
    """A duration: '90s', '15m', '1.5h' -> seconds; numbers pass through (seconds); anything else is a ValueError."""
    if isinstance(v, str):
        text = v.strip().lower()
        scale = {"s": 1, "m": 60, "h": 3600}.get(text[-1:], None)
        try:
            return float(text[:-1]) * scale if scale else float(text)
        except ValueError:
            raise ValueError("must be seconds (a number) or a number with s, m or h, e.g. 900, 15m, 1.5h") from None
    return v


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DiagnosticsConfig(Section):
    """Thresholds of the detectors (the `diagnostics` config section)."""

    enabled: bool = Field(True, description="watch for the failure modes below, warn once per kind and log diagnostics/<kind>")
    chosen_drop_nats: float = Field(5.0, gt=0, description="chosen log-ratio below −this while margins rise")
    flat_margin_evals: int = Field(3, ge=2, description="held-out evaluations without the margin rising")
    flat_margin_min_delta: float = Field(0.01, ge=0, description="rise of eval/rewards/margins that counts")
    length_correlation: float = Field(0.5, gt=0, le=1, description="|corr(margin, length difference)| above this")
    drift_logratio_nats: float = Field(50.0, gt=0, description="mean |log-ratio| above this")


class FiltersConfig(Section):
    drop_near_identical: bool = Field(True, description="drop pairs whose responses differ only in whitespace or case")
    drop_duplicates: bool = Field(True, description="drop repeated (prompt, chosen, rejected) pairs")
    min_confidence: float | None = Field(None, description="drop pairs whose agreement or score margin is below this")
    max_prompt_chars: int | None = Field(None, gt=0, description="drop pairs whose prompt is longer (characters)")
    max_response_chars: int | None = Field(None, gt=0, description="drop pairs with a longer response (characters)")
    exclude_from: list[str] | None = Field(None, description="doctor.jsonl file(s) of `preftune data doctor`: drop the pairs they flag "
                                           "(exclude_flags) or score as suspect (exclude_suspect_above)")
    exclude_flags: list[str] | None = Field(None, description="the doctor's flags that drop a pair (default: exact_duplicate, near_duplicate, "
                                            "identical_responses, empty_response, leaked, likely_mislabeled)")
    exclude_suspect_above: float | None = Field(None, ge=0, le=1, description="also drop pairs whose label-noise `suspect` score is above this")


class DataConfig(Section):
    train: str | list[str] = Field("builtin:arithmetic", description="file(s), save_to_disk folder, dataset name, or builtin:arithmetic")
    eval: str | list[str] | None = Field(None, description="held-out data; when unset, eval_fraction of train is held out")
    split: str | None = Field(None, description="split of a dataset folder or hub dataset")
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="share of train held out when data.eval is unset")
    recipe: str | None = Field(None, description="named mapping for a known schema: pandalm, llmbar, gsm8k_small_edit")
    columns: ColumnMapping | None = Field(None, description="column mapping from a foreign schema")
    format: str = Field("auto", description=f"auto or one of {', '.join(FORMATS)}")
    turn_boundary: str = Field(DEFAULT_TURN_BOUNDARY, description="marker ending an implicit prompt")
    on_error: Literal["fail", "skip"] = Field("fail", description="invalid records: fail (list them) or skip (count them)")
    filters: FiltersConfig = Field(default_factory=FiltersConfig)
    chat_template: Literal["auto", "always", "never"] = Field("auto", description="apply the tokenizer's chat template")
    max_length: int | None = Field(1024, gt=1, description="max tokens of prompt + each response")
    max_prompt_length: int | None = Field(512, gt=0, description="max prompt tokens (the end is kept)")
    num_proc: int = Field(2, ge=1, description="processes for tokenization")
    cache_dir: str | None = Field(None, description="tokenized-data cache (default ~/.cache/preftune/tokenized)")
    builtin_size: int = Field(640, ge=8, description="pairs generated by builtin:arithmetic")
    builtin_seed: int = Field(0, description="seed of builtin:arithmetic")

    def load_settings(self) -> LoadSettings:
        """How records are read, mapped, validated and filtered."""
        f = self.filters
        return LoadSettings(split=self.split, recipe=self.recipe, columns=self.columns, format=self.format, turn_boundary=self.turn_boundary,
                            on_error=self.on_error, builtin_size=self.builtin_size, builtin_seed=self.builtin_seed,
                            filters=FilterSettings(f.drop_near_identical, f.drop_duplicates, f.min_confidence, f.max_prompt_chars, f.max_response_chars,
                                                    tuple(f.exclude_from or ()), None if f.exclude_flags is None else tuple(f.exclude_flags),
                                                    f.exclude_suspect_above))

    def tokenize_settings(self, completion_only: bool = True) -> TokenizeSettings:
        return TokenizeSettings(self.chat_template, self.max_length, self.max_prompt_length, completion_only)

    def settings(self, train: Sources | None = None, eval: Sources | None = None, stage: str = "preference",
                 completion_only: bool = True) -> DataSettings:
        """Everything data preparation needs; `train` / `eval` replace this section's sources (records from Python)."""
        return DataSettings(train=self.train if train is None else train, eval=self.eval if eval is None else eval, load=self.load_settings(),
                            tokenize=self.tokenize_settings(completion_only), eval_fraction=self.eval_fraction, num_proc=self.num_proc,
                            cache_dir=self.cache_dir, stage=stage)

    @field_validator("format")
    @classmethod
    def _known_format(cls, v: str) -> str:
        if v != "auto" and v not in FORMATS:
            raise ValueError(f"must be 'auto' or one of {list(FORMATS)}")
        return v

    @field_validator("recipe")
    @classmethod
    def _known_recipe(cls, v: str | None) -> str | None:
        from .data.recipes import RECIPES

        if v is not None and v not in RECIPES:
            raise ValueError(f"unknown recipe; valid: {sorted(RECIPES)}")
        return v


class LoraConfig(Section):
    enabled: bool = Field(False, description="train a LoRA adapter instead of all weights")
    r: int = Field(8, gt=0, description="rank of the LoRA matrices")
    alpha: int = Field(16, gt=0, description="LoRA scaling numerator: the update is scaled by alpha / r")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: str | list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"], description="module names, or all-linear")
    adapter_path: str | None = Field(None, description="continue training an existing adapter folder")


class ModelConfig(Section):
    name_or_path: str = Field("smollm2-135m-instruct", description="HF folder or hub name, a .gguf file, or smollm2-135m-instruct (embedded)")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field("float32", description="dtype of the weights as loaded (auto: the checkpoint's own)")
    trust_remote_code: bool = Field(False, description="run a model folder's own Python code (transformers' trust_remote_code); off unless you trust it")
    quantize_4bit: bool = Field(False, description="QLoRA: 4-bit base weights (needs bitsandbytes and a GPU)")
    lora: LoraConfig = Field(default_factory=LoraConfig)


class ReferenceConfig(Section):
    strategy: Literal["auto", "separate", "adapter_disabled", "precomputed", "none"] = Field(
        "auto", description="auto: none for reference-free losses, else reference.name_or_path when set, else adapter_disabled with LoRA, else separate")
    name_or_path: str | None = Field(None, description="reference model when strategy is separate (default: the policy's start)")
    cache_dir: str | None = Field(None, description="precomputed reference log-prob cache (default ~/.cache/preftune/reference)")
    precompute: Literal["lazy", "upfront"] = Field(
        "lazy", description="strategy precomputed: a pair's reference log-probs are computed in the step that first needs them (lazy) or "
        "in one pass before the first step over the pairs the run will use (upfront); cached either way, and no run pays for pairs it never uses")
    start_adapter: Literal["frozen", "base"] = Field(
        "frozen", description="continuing an adapter (model.lora.adapter_path, or a peft model passed from Python): the reference is that "
        "adapter as loaded, frozen (the SFT model, as DPO assumes), or base (the base model without it)")


class LossComponent(Section):
    name: str
    weight: float = 1.0
    params: dict[str, Any] = Field(default_factory=dict)


class LossConfig(Section):
    name: str = Field("dpo", description="loss from the registry (preftune losses lists them); kto trains on unpaired or split pairs")
    beta: float | None = Field(None, gt=0, description="β; unset takes the loss's default (0.1, SimPO 2.0; with components, the first "
                               "one's), resolved when the config loads and used by every component")
    params: dict[str, Any] = Field(default_factory=dict, description="the variant's own parameters, e.g. {lambda_: 50}")
    length_normalize: bool = Field(False, description="average log-probs over response tokens instead of summing")
    reference_free: bool = Field(False, description="uniform reference (no reference model)")
    components: list[LossComponent] | None = Field(None, description="weighted sum, e.g. [{name: dpo, weight: 1}, {name: sft, weight: 0.2}]")

    @model_validator(mode="before")
    @classmethod
    def _resolve_beta(cls, data: Any) -> Any:
        """β, once: the given value, else the default of the loss (of the first component, with components)."""
        if not isinstance(data, dict) or data.get("beta") is not None:
            return data
        comps = data.get("components")
        first = comps[0].get("name") if isinstance(comps, list) and comps and isinstance(comps[0], dict) else data.get("name", "dpo")
        return {**data, "beta": default_beta(first)} if isinstance(first, str) and first in NAMES else data

    @model_validator(mode="after")
    def _known_losses(self) -> "LossConfig":
        items = [(c.name, c.params) for c in self.components] if self.components else [(self.name, self.params)]
        for name, params in items:
            if name not in NAMES:
                raise ValueError(f"unknown loss '{name}'; valid names: {', '.join(NAMES)}")
            if self.components and is_unpaired(name):
                raise ValueError(f"{name} is a loss of single completions and cannot be a component of a weighted sum of pair losses; use loss.name: {name} alone")
            loss_params(name, params)
        if is_unpaired(self.name) and not self.components and self.reference_free:
            raise ValueError(f"{self.name} measures rewards against a reference model; loss.reference_free is not available for it")
        if is_unpaired(self.name) and not self.components and self.length_normalize:
            raise ValueError(f"{self.name} sums each completion's log-probs (as TRL's KTOTrainer does); loss.length_normalize is not available for it")
        return self

    def unpaired(self) -> bool:
        """True when the loss trains on single labelled completions (KTO), not pairs."""
        return not self.components and is_unpaired(self.name)

    def uses_reference(self) -> bool:
        names = [c.name for c in self.components] if self.components else [self.name]
        return not self.reference_free and any(uses_reference(n) for n in names)

    def resolved_beta(self) -> float:
        """β as resolved when the config loaded (see `_resolve_beta`)."""
        if self.beta is None:  # only a LossConfig built around validation (model_construct) lacks it
            return default_beta(self.components[0].name if self.components else self.name)
        return self.beta


class TrainConfig(Section):
    batch_size: int = Field(4, ge=1, description="pairs per device per micro-step")
    grad_accum: int = Field(1, ge=1, description="micro-steps accumulated per optimizer step (effective batch = batch_size × grad_accum × processes)")
    learning_rate: float = Field(5e-6, gt=0, description="AdamW peak learning rate (LoRA usually wants 1e-4 to 5e-4)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="share of the steps with a linear warm-up of the learning rate")
    scheduler: Literal["cosine", "linear", "constant"] = Field("cosine", description="learning-rate decay after warm-up")
    max_grad_norm: float | None = Field(1.0, gt=0, description="clip the gradient norm to this (null: no clipping)")
    epochs: float = Field(1.0, gt=0, description="passes over the training pairs (fractions allowed); train.max_steps overrides it")
    max_steps: int | None = Field(None, gt=0, description="optimizer steps; overrides epochs")
    max_time: float | None = Field(None, gt=0, description="wall-time budget in seconds (or a string such as 90s, 15m, 1.5h), counted from "
                                   "the start of the run, set-up included: the run stops after the step that ends past it and saves as at "
                                   "its last step (final model, evaluation, summary); the learning-rate schedule still spans the planned steps")
    seed: int = Field(42, description="seed of data order, initialization and dropout")
    deterministic: bool = Field(False, description="deterministic kernels (bitwise-repeatable runs on CPU; slower on GPU)")
    shuffle: bool = Field(True, description="shuffle the order of batches each epoch")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field("no", description="autocast precision of forward passes (accelerate's mixed_precision)")
    eval_every: int | None = Field(None, gt=0, description="evaluate every N steps (and at the end)")
    log_every: int = Field(1, ge=1, description="write a metrics line every N steps")
    save_every: int | None = Field(None, gt=0, description="write a checkpoint every N steps (null: none; resume_from needs one)")
    save_total_limit: int = Field(2, ge=1, description="checkpoints kept; older ones are deleted")
    early_stopping_patience: int | None = Field(None, ge=1, description="evaluations without eval/rewards/margins rising")
    early_stopping_min_delta: float = Field(0.0, ge=0, description="rise of eval/rewards/margins that counts as improvement")
    layout: Literal["auto", "padded", "prefix_shared", "packed"] = Field(
        "auto", description="batch layout: padded, prefix_shared (prompt computed once), packed (several pairs a row); auto = packed")
    pack_tokens: int = Field(512, ge=16, description="most tokens per row in the packed layout (a longer pair gets its own row); longer rows compute more masked attention")
    logits_chunk: int = Field(1024, ge=1, description="response tokens per LM-head chunk")
    gradient_checkpointing: bool | Literal["selective"] = Field(
        False, description="recompute activations in the backward pass: true recomputes each decoder layer whole (the least memory, "
        "the most recomputation); selective keeps the matrix products and attention outputs and recomputes the cheap elementwise and norm ops")
    fused_mlp: bool | Literal["auto"] = Field(
        "auto", description="gated (SwiGLU) MLPs keep only their gate and up projections for the backward pass and recompute the SiLU "
        "there: one intermediate-sized tensor less per layer and token, same gradients; auto: on when training on CPU, off on GPUs")
    fused_norm: bool | Literal["auto"] = Field(
        False, description="RMSNorm layers keep their input and its per-token scale for the backward pass and recompute the normalized "
        "input there: when the norm weights train (full fine-tuning), one hidden-sized tensor less per norm and token, same gradients; "
        "auto: on when training on CPU, off on GPUs")
    host_mmap_threshold_kib: int | None = Field(None, ge=4, description="Linux/glibc: CPU tensors above this size (KiB) get their own memory "
                                                "mapping, returned to the system when freed (glibc otherwise keeps freed activations in its "
                                                "heap): a lower peak RSS at the cost of a page fault on every large tensor; null: glibc's default")
    optimizer_impl: Literal["auto", "fused", "foreach"] = Field(
        "auto", description="AdamW kernel: fused (one kernel over all parameters), foreach, or auto (fused where torch has it for the parameters)")
    merge_adapter: bool = Field(False, description="also save merged weights at the end (LoRA)")
    on_nonfinite: Literal["stop", "skip"] = Field(
        "stop", description="NaN/inf loss or gradient: stop (keeping the last checkpoint) or skip the step (counted, batch named)")
    max_skipped_steps: int = Field(10, ge=0, description="with on_nonfinite: skip, stop after this many skipped steps")

    @field_validator("max_time", mode="before")
    @classmethod
    def _seconds(cls, v: Any) -> Any:
        return parse_seconds(v)

    def fuses(self, option: Literal["fused_mlp", "fused_norm"], device_type: str) -> bool:
        """Whether a fused-module option applies on this device: `auto` turns it on for CPU training only, where it was measured."""
        value = getattr(self, option)
        return device_type == "cpu" if value == "auto" else bool(value)

    def resolved_layout(self) -> str:
        """The batch layout `auto` stands for: packed."""
        return "packed" if self.layout == "auto" else self.layout


class ExperimentalConfig(Section):
    """Options that have not won where they were measured, or have not run on the hardware they are for; off by default."""

    attention: Literal["sdpa", "segments", "flex"] = Field(
        "sdpa", description="attention kernel: sdpa (PyTorch SDPA with the layout's masks), segments (SDPA per pair segment, no attention "
        "between pairs packed in a row) or flex (FlexAttention with block-sparse masks, CUDA only); segments and flex need train.layout "
        "packed or prefix_shared")
    compile: bool = Field(False, description="torch.compile each decoder layer (policy and reference); pays a compile time once per run")
    static_shapes: bool = Field(False, description="packed rows padded to a multiple of train.pack_tokens, so batches come in a handful "
                                "of shapes and experimental.compile compiles each once (the padding is logged as padding_share)")
    compile_backend: str = Field("inductor", description="torch.compile backend with experimental.compile (inductor; aot_eager to debug)")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = Field(
        "default", description="torch.compile mode with experimental.compile; reduce-overhead captures CUDA graphs on a GPU (needs "
        "experimental.static_shapes, so each shape is captured once)")


MOVED_KEYS = {"model.attention": "experimental.attention", "train.compile": "experimental.compile",
              "train.static_shapes": "experimental.static_shapes", "train.compile_backend": "experimental.compile_backend",
              "train.compile_mode": "experimental.compile_mode"}


class GenerationConfig(Section):
    max_new_tokens: int = Field(128, gt=0, description="tokens generated per response at most")
    do_sample: bool = Field(True, description="sample (true) or greedy decoding (false)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature (1.0 keeps the KL estimate unbiased)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    top_k: int = Field(0, ge=0, description="sample from the k most likely tokens (0: all)")
    num_samples: int = Field(1, ge=1, description="responses per prompt")
    batch_size: int = Field(16, ge=1, description="prompts per generation batch")
    max_prompts: int | None = Field(None, gt=0, description="generate for the first N held-out prompts only")
    seed: int = Field(0, description="sampling seed")
    drop_finished: bool = Field(True, description="decode only the rows still generating: an answer that ends leaves the batch, KV "
                                "cache rows and all, instead of being padded until the batch's longest ends (false: transformers' generate)")


class JudgeConfig(Section):
    name: str = Field("preftune.judges:arithmetic_exact_match", description="module:function scoring one response (prompt, response) -> float "
                      "or comparing two (prompt, a, b) -> 0 | 1 | 0.5")
    kind: Literal["auto", "reward", "pairwise"] = Field("auto", description="auto: from the number of required arguments (2 reward, 3 pairwise)")
    args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments passed on every call, e.g. {max_words: 50}")


class IterateConfig(Section):
    rounds: int = Field(3, ge=1, description="on-policy rounds: sample, judge, pair, train, evaluate")
    round_type: Literal["preference", "rejection_sft"] = Field("preference", description="preference: train the loss on pairs of samples; "
                                                                "rejection_sft: supervised fine-tuning on the correct samples (the baseline)")
    prompts: str = Field("builtin:arithmetic", description="prompts to sample on: builtin:arithmetic, or a JSONL/data file with a prompt field")
    eval_prompts: str | None = Field(None, description="held-out prompts for the greedy evaluation (builtin:arithmetic draws new questions)")
    prompts_per_round: int = Field(64, ge=1, description="prompts sampled each round (taken in turn from `prompts`)")
    num_eval_prompts: int = Field(300, ge=1, description="held-out prompts scored with greedy decoding after each round")
    samples_per_prompt: int = Field(4, ge=2, description="K responses sampled per prompt at first")
    max_samples_per_prompt: int | None = Field(None, ge=2, description="adaptive K: a prompt whose samples give no pair (rejection_sft: no "
                                               "correct sample) is sampled again, K more at a time, up to this many in all; null: 4 × K")
    pair_strategies: list[Literal["best_worst", "correct_incorrect"]] = Field(
        default_factory=lambda: ["best_worst"], min_length=1,
        description="tried in order for each prompt, the first that finds a pair is used: best_worst (the best sample against the worst), "
                    "correct_incorrect (each correct sample against an incorrect one, up to max_pairs_per_prompt)")
    max_pairs_per_prompt: int = Field(4, ge=1, description="pairs per prompt at most (rejection_sft: correct samples kept per prompt)")
    correct_score: float = Field(1.0, description="a sample counts as correct when its judge score is at least this")
    resample_all_correct: bool = Field(False, description="preference rounds: sample again a prompt whose samples are all correct and "
                                       "give no pair (an incorrect one may yet come); false: such a prompt counts as learned and is not resampled")
    reference: Literal["previous", "original"] = Field("previous", description="each round's reference: the previous round's model or the start model")
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    eval_judge: JudgeConfig | None = Field(None, description="judge of the greedy evaluation; null: the sampling judge")
    kl_prompts: int = Field(64, ge=0, description="held-out prompts answered once by sampling (temperature 1) after each round to "
                            "estimate KL(round model ‖ start model); 0: none")
    seed: int = Field(0, description="seed of prompt order and builtin questions")

    def sample_cap(self) -> int:
        """The most samples a prompt gets (adaptive K)."""
        return self.max_samples_per_prompt if self.max_samples_per_prompt is not None else 4 * self.samples_per_prompt

    @model_validator(mode="after")
    def _cap_covers_k(self) -> "IterateConfig":
        if self.sample_cap() < self.samples_per_prompt:
            raise ValueError(f"iterate.max_samples_per_prompt {self.max_samples_per_prompt} is below samples_per_prompt {self.samples_per_prompt}. "
                             "Fix: raise it, or set it equal to samples_per_prompt to sample K only")
        return self


class SFTConfig(Section):
    completion_only_loss: bool = Field(True, description="loss on completion tokens only (false: on every token after the first, prompt included)")
    samples: int = Field(4, ge=0, description="held-out prompts answered (greedy, generation.max_new_tokens) before and after training, "
                         "kept in samples.jsonl and shown in the report; 0: none")


class RunConfig(Section):
    stage: Literal["preference", "sft"] = Field("preference", description="preference (DPO and its family) or sft; `preftune sft` sets sft")
    sft: SFTConfig = Field(default_factory=SFTConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    diagnostics: DiagnosticsConfig = Field(default_factory=DiagnosticsConfig)
    reference: ReferenceConfig = Field(default_factory=ReferenceConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    output_dir: str | None = Field("runs/preftune", description="where the run writes; null trains in memory (no files, no checkpoints)")
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(default_factory=list, description="experiment trackers that also get the metrics")
    resume_from: str | None = Field(None, description="auto (latest checkpoint in output_dir) or a checkpoint folder")
    report: bool = Field(True, description="write OUTPUT/report.html (and plots/*.png) at the end and at each checkpoint")
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    iterate: IterateConfig = Field(default_factory=IterateConfig)
    experimental: ExperimentalConfig = Field(default_factory=ExperimentalConfig)

    def data_settings(self, train: Sources | None = None, eval: Sources | None = None) -> DataSettings:
        """The data section's settings for this run's stage (`unpaired` for KTO)."""
        if self.stage == "sft":
            return self.data.settings(train, eval, "sft", self.sft.completion_only_loss)
        return self.data.settings(train, eval, "unpaired" if self.loss.unpaired() else "preference")

    @model_validator(mode="after")
    def _compile_mode_fits_shapes(self) -> "RunConfig":
        x = self.experimental
        if x.compile_mode == "reduce-overhead" and not (x.compile and x.static_shapes):
            raise ValueError("experimental.compile_mode reduce-overhead (CUDA graphs) needs experimental.compile: true and experimental.static_shapes: true "
                             "(a graph is captured per shape). Fix: set both, or compile_mode: default")
        return self

    @model_validator(mode="after")
    def _attention_fits_layout(self) -> "RunConfig":
        if self.experimental.attention == "segments" and self.train.resolved_layout() == "padded":
            raise ValueError("experimental.attention segments runs attention per pair segment of the packed or prefix_shared layout; "
                             "train.layout padded has none. Fix: train.layout: packed, or experimental.attention: sdpa")
        return self

    @model_validator(mode="after")
    def _reference_fits_loss(self) -> "RunConfig":
        if self.stage == "sft":
            return self  # SFT has no reference and no preference loss
        if self.reference.strategy == "adapter_disabled" and not self.model.lora.enabled:
            raise ValueError("reference.strategy adapter_disabled needs model.lora.enabled: true")
        if self.loss.unpaired() and self.train.batch_size < 2:
            raise ValueError(f"{self.loss.name} estimates its KL reference point from the other examples of a batch: train.batch_size must be at "
                             f"least 2 (it is {self.train.batch_size})")
        if self.reference.strategy == "none" and self.loss.uses_reference():
            raise ValueError(f"reference.strategy none needs a reference-free loss (simpo, orpo) or loss.reference_free: true, not {self.loss.name}")
        return self


def config_warnings(beta: float, learning_rate: float) -> list[str]:
    """Settings known to destabilize DPO, flagged when the config is loaded."""
    if beta < 0.05 and learning_rate > 5e-5:
        return [f"loss.beta = {beta} with train.learning_rate = {learning_rate}: a small β and a high learning rate let the policy "
                "drift far from the reference and often diverge. Try β ≥ 0.1 or a learning rate ≤ 5e-6 (1e-4 with LoRA)."]
    return []


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (['a','b','c'], value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected key=value, e.g. train.max_steps=5")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


Overrides = list[str] | dict[str, Any]


def apply_overrides(data: dict[str, Any], overrides: Overrides) -> dict[str, Any]:
    """Set each `a.b.c=value` string (value parsed as YAML) or each `{"a.b.c": value}` item (value as given)."""
    items = [(k.strip().split("."), v, f"{k}={v!r}") for k, v in overrides.items()] if isinstance(overrides, dict) else \
        [(*parse_override(text), text) for text in overrides]
    for keys, value, text in items:
        node = data
        for k in keys[:-1]:
            child = node.setdefault(k, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override '{text}': '{k}' is a value, not a section")
            node = child
        node[keys[-1]] = value
    return data


def load_config(path: str | Path | dict[str, Any] | RunConfig | None, overrides: Overrides | None = None) -> RunConfig:
    """Read, override and validate a run configuration: a YAML path, a nested dict with the YAML's keys, or a
    `RunConfig`; `overrides` are `key=value` strings or a flat dict such as {"train.max_steps": 5}."""
    data: dict[str, Any] = {}
    where = "command line"
    if isinstance(path, RunConfig):
        data, where = path.model_dump(mode="json"), "config"
    elif isinstance(path, dict):
        data, where = copy.deepcopy(path), "config dict"
    elif path is not None:
        where = str(path)
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"{path}: config file not found.")
        if p.is_dir():
            raise ConfigError(f"{path}: a folder, not a config file. Fix: give a YAML file such as examples/quickstart.yaml.")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f":{mark.line + 1}" if mark else ""
            raise ConfigError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', e)}). Fix the syntax.") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text. Fix: save the config as UTF-8.") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot be read ({e.strerror or e}). Fix: check the file's permissions, or give another config.") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections (model, data, loss, train, ...), found a {type(loaded).__name__}.")
        data = loaded
    data = apply_overrides(data, overrides or [])
    moved_keys(data, where)
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, where, data)) from None
    for warning in config_warnings(cfg.loss.resolved_beta(), cfg.train.learning_rate):
        logging.getLogger("preftune.diagnostics").warning("%s: %s", where, warning)
    return cfg


def moved_keys(data: dict[str, Any], where: str) -> None:
    """ConfigError naming each key that now lives under `experimental` and where to write it."""
    found = [(old, new) for old, new in MOVED_KEYS.items()
             if isinstance(data.get(old.split(".")[0]), dict) and old.split(".")[1] in data[old.split(".")[0]]]
    if found:
        lines = [f"  - {old} is now {new}. Fix: write {new}: {data[old.split('.')[0]][old.split('.')[1]]!r}" for old, new in found]
        raise ConfigError(f"{where}: options moved to the experimental section:\n" + "\n".join(lines))


def format_validation_error(e: ValidationError, where: str, data: dict[str, Any]) -> str:
    lines = [f"{where}: invalid configuration:"]
    for err in e.errors():
        key = ".".join(str(p) for p in err["loc"])
        value = _lookup(data, err["loc"])
        if err["type"] == "extra_forbidden":
            parent = _section_for(err["loc"][:-1])
            allowed = f"; allowed keys: {', '.join(parent.model_fields)}" if parent else ""
            lines.append(f"  - {key}: unknown key{allowed}")
        else:
            lines.append(f"  - {key or '(top level)'} = {value!r}: {err['msg']}")
    lines.append("Run `preftune train --help` for every key with its default.")
    return "\n".join(lines)


def _lookup(data: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return None
    return data


def _section_for(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = RunConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        nxt = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nxt is None:
            return None
        model = nxt
    return model


COMMON_KEYS = ("model.name_or_path", "model.lora.enabled", "model.lora.r", "model.lora.target_modules", "data.train", "data.eval",
               "loss.name", "loss.beta", "loss.params", "train.max_steps", "train.epochs", "train.max_time", "train.learning_rate",
               "train.batch_size", "train.grad_accum", "train.eval_every", "train.save_every", "output_dir", "resume_from")
"""The keys users set most, shown first by `preftune train --help` and the configuration reference."""


def help_text() -> str:
    """`preftune train --help`'s key listing: the keys set most, then every key grouped by section (experimental last)."""
    lines = describe_keys()
    by_key = {line.split(" = ", 1)[0]: line for line in lines}
    out = ["The keys set most:", *("  " + by_key[k] for k in COMMON_KEYS), "", "Every key, by section:"]
    section = None
    for line in lines:
        key = line.split(" = ", 1)[0]
        here = key.rsplit(".", 1)[0] if "." in key else "(top level)"
        if here != section:
            out.append(f"[{here}]")
            section = here
        out.append("  " + line)
    return "\n".join(out)


def describe_keys(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[str]:
    """Every key with its default and description, in definition order."""
    out: list[str] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = field.annotation
        sub = next((c for c in [ann, *getattr(ann, "__args__", ())] if isinstance(c, type) and issubclass(c, BaseModel) and c is not ColumnMapping), None)
        if sub is not None and field.default_factory is not None:
            out.extend(describe_keys(sub, key + "."))
            continue
        default = field.default_factory() if field.default_factory is not None else field.default
        desc = f"  # {field.description}" if field.description else ""
        out.append(f"{key} = {default!r}{desc}")
    return out
