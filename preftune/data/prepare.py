"""From the `data` config section and a tokenizer to tokenized train and held-out splits."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import DataError
from .cache import tokenize_examples
from .filters import Example
from .formats import SFT_FORMATS
from .records import PreferencePair, UnpairedExample
from .pipeline import LoadedData, LoadSettings, Sources, load_examples
from .tokenize import TokenizedPair, TokenizeSettings
from .unpaired import split_pairs

logger = logging.getLogger("preftune.data")


@dataclass
class TokenizedSplit:
    """Tokenized pairs with the examples they came from (`examples[i]` is the source of `pairs[i]`)."""

    pairs: list[TokenizedPair]
    examples: list[Example]
    counts: dict[str, int]


@dataclass(frozen=True)
class DataSettings:
    """What `prepare_data` needs: the sources, how to read and tokenize them, how much to hold out, and the cache.
    Built by `DataConfig.settings`, which holds every default."""

    train: Sources
    eval: Sources | None
    load: LoadSettings
    tokenize: TokenizeSettings
    eval_fraction: float
    num_proc: int
    cache_dir: str | None
    stage: str = "preference"  # "sft": every example becomes one desirable completion (a pair's chosen response);
    # "unpaired" (KTO): labelled completions, pairs split into a desirable and an undesirable one


def for_stage(loaded: LoadedData, stage: str, sources: Sources) -> LoadedData:
    """The examples a stage trains on: preference pairs for DPO and its family (unpaired or SFT data refused, naming
    the fix); for KTO (`unpaired`), labelled completions, pairs split in two; for SFT, desirable completions: a pair's
    chosen response, an unpaired example labelled true."""
    if stage == "preference":
        if loaded.format in ("unpaired", *SFT_FORMATS):
            fix = "`preftune sft`, or with loss.name: kto" if loaded.format == "unpaired" else "`preftune sft`"
            raise DataError(f"{sources}: {loaded.format} data holds single completions, not preference pairs. Fix: train on it with "
                            f"{fix}, or give pairs with prompt, chosen and rejected.")
        return loaded
    if stage == "unpaired":
        if loaded.format in SFT_FORMATS:
            raise DataError(f"{sources}: {loaded.format} data has no desirable/undesirable labels, which KTO needs. Fix: give TRL's "
                            "unpaired format (prompt, completion, label) or preference pairs (prompt, chosen, rejected).")
        return loaded  # pairs are split after the held-out share is drawn (`prepare_data`), so a pair stays on one side
    kept: list[Example] = []
    undesirable = 0
    for ex in loaded.examples:
        if isinstance(ex, PreferencePair):
            kept.append(UnpairedExample(ex.prompt, ex.chosen, True, ex.source, ex.id, ex.weight))
        elif ex.label:
            kept.append(ex)
        else:
            undesirable += 1
    if undesirable:
        logger.info("data: %d completion(s) labelled undesirable are not used by SFT", undesirable)
    if not kept:
        raise DataError(f"{sources}: no desirable completions to train on. Fix: give SFT data (text, messages, prompt/completion) or preference pairs.")
    return replace(loaded, examples=kept, removed={**loaded.removed, **({"undesirable (SFT)": undesirable} if undesirable else {})})


def split_examples(loaded: LoadedData, eval_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """A held-out share of the examples, drawn with `seed` (at least one example each side when both are wanted)."""
    examples = list(loaded.examples)
    if eval_fraction <= 0:
        return examples, []
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(examples) * eval_fraction))
    if n_eval >= len(examples):
        raise DataError(f"only {len(examples)} example(s): too few to hold out {eval_fraction:.0%} for evaluation. Fix: add data, set data.eval, or data.eval_fraction: 0.")
    held = set(order[:n_eval])
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]


def tokenize_split(examples: list[Example], tokenizer: Any, settings: DataSettings) -> TokenizedSplit:
    """Tokenized pairs of `examples` (cached), with the examples they came from and the truncation counts."""
    cache = Path(settings.cache_dir) if settings.cache_dir else None
    pairs, index, counts = tokenize_examples(examples, tokenizer, settings.tokenize, settings.num_proc, cache)
    for reason, n in counts.items():
        logger.info("data: %d pair(s): %s", n, reason)
    if not pairs:
        raise DataError("no pairs left after tokenization and truncation. Fix: raise data.max_length / data.max_prompt_length.")
    return TokenizedSplit(pairs, [examples[i] for i in index], counts)


def prepare_data(settings: DataSettings, tokenizer: Any, seed: int) -> tuple[TokenizedSplit, TokenizedSplit | None, LoadedData]:
    """Load, hold out (when no eval data is named) and tokenize; returns (train, eval or None, train load report)."""
    loaded = for_stage(load_examples(settings.train, settings.load), settings.stage, settings.train)
    if settings.eval is not None:
        train_ex = loaded.examples
        eval_ex = for_stage(load_examples(settings.eval, settings.load), settings.stage, settings.eval).examples
    else:
        train_ex, eval_ex = split_examples(loaded, settings.eval_fraction, seed)
        if eval_ex:
            logger.info("data: held out %d of %d example(s) for evaluation (data.eval_fraction=%s)", len(eval_ex), len(loaded.examples),
                        settings.eval_fraction)
    if settings.stage == "unpaired":
        train_ex, eval_ex = split_pairs(train_ex), split_pairs(eval_ex)
    train = tokenize_split(train_ex, tokenizer, settings)
    held = tokenize_split(eval_ex, tokenizer, settings) if eval_ex else None
    return train, held, loaded
