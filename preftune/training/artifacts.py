"""What a run writes into its folder (data summary, held-out pairs); the file names and the atomic writers are
`preftune.run_files`'."""

from __future__ import annotations

from typing import Any

from ..data.prepare import TokenizedSplit
from ..data.records import as_text
from ..stats import length_stats

TEXT_LIMIT = 4000  # characters of each text kept in eval_pairs.jsonl


def data_summary(train: TokenizedSplit, eval_split: TokenizedSplit | None, loaded: Any) -> dict[str, Any]:
    """Counts, removals, truncation and token-length statistics of the data a run trains on."""
    pairs = train.pairs
    longer = sum(len(p.chosen) > len(p.rejected) for p in pairs) / max(1, len(pairs))
    return {"train_pairs": len(pairs), "eval_pairs": len(eval_split.pairs) if eval_split else 0, "format": loaded.format,
            "errors": loaded.errors, "removed": loaded.removed, "truncation": train.counts,
            "tokens": {"prompt": length_stats([len(p.prompt) for p in pairs]), "chosen": length_stats([len(p.chosen) for p in pairs]),
                       "rejected": length_stats([len(p.rejected) for p in pairs])},
            "chosen_longer_share": longer}


def eval_pair_records(split: TokenizedSplit, per_pair: dict[str, list[float]], step: int) -> list[dict[str, Any]]:
    """One record per held-out pair evaluated: its text (clipped), source, margin and rewards at `step`."""
    records = []
    for j, index in enumerate(per_pair.get("index", [])):
        i = int(index)
        ex = split.examples[i]
        records.append({"step": step, "index": i, "source": ex.source, "id": ex.id,
                        "prompt": as_text(ex.prompt)[:TEXT_LIMIT],
                        "chosen": as_text(getattr(ex, "chosen", ""))[:TEXT_LIMIT],
                        "rejected": as_text(getattr(ex, "rejected", ""))[:TEXT_LIMIT],
                        "margin": per_pair["rewards/margins"][j], "chosen_reward": per_pair["rewards/chosen"][j],
                        "rejected_reward": per_pair["rewards/rejected"][j],
                        "length_diff": per_pair["lengths/chosen_minus_rejected"][j]})
    return records
