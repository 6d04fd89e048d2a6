"""`preftune data doctor`, its checks of form: what in a preference data set is probably wrong, pair by pair.

Exact duplicates (after squashing whitespace and case) and near duplicates (MinHash / LSH over word shingles, from
datasketch) within the data and between train and eval files (leakage); chosen identical or nearly identical to
rejected; empty responses, and responses cut at `max_length` (with a tokenizer); the share of pairs whose chosen
response is longer and the correlation of preference with length; the prompt repeated inside a response. Each pair
gets a record (its flags and the numbers behind them, and the content key `data.filters.exclude_from` matches on);
the summary counts each flag; `texts` keeps the start of each text for the page. The checks with a model (reference margins, label noise) build on these records."""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .filters import DOCTOR_EXCLUDED, content_key, squash
from .records import PreferencePair, as_text

EXCLUDED = DOCTOR_EXCLUDED  # flags that mark a pair to leave out by default (`data.filters.exclude_from`)
SHINGLE = 5  # words per shingle
NUM_PERM = 128  # MinHash permutations
LSH_MAX_THRESHOLD = 0.9  # datasketch cannot band 128 permutations for a higher one
TEXT_SHOWN = 400  # characters of each text the page shows (the end of a prompt, the start of a response)
PROMPT_ECHO_MIN_CHARS = 20  # shorter prompts are too common inside answers to mean anything


@dataclass(frozen=True)
class DoctorSettings:
    """Thresholds of the form checks: `near` the estimated Jaccard similarity of word shingles above which two pairs
    (or a chosen and its rejected response) count as nearly the same."""

    near: float = 0.8
    max_length: int | None = None


def shingles(text: str, k: int = SHINGLE) -> set[str]:
    """The set of k-word shingles of the text's words, in lower case without punctuation (the whole text when it has
    fewer words)."""
    words = re.findall(r"\w+", text.lower())
    if len(words) <= k:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + k]) for i in range(len(words) - k + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    """|a ∩ b| / |a ∪ b| (1 for two empty sets)."""
    return len(a & b) / len(a | b) if a or b else 1.0


def minhash(items: set[str]) -> Any:
    from datasketch import MinHash

    m = MinHash(num_perm=NUM_PERM, seed=1)
    for s in items:
        m.update(s.encode("utf-8"))
    return m


def _pair_text(p: PreferencePair) -> str:
    return "\n".join((as_text(p.prompt), as_text(p.chosen), as_text(p.rejected)))


def _closest(fields: tuple[set[str], ...], candidates: list[tuple[str, tuple[set[str], ...]]], near: float) -> tuple[float, str] | None:
    """The candidate pair most like this one, with its similarity (the least of the prompts', chosen and rejected
    responses' Jaccard similarities), when that is at least `near`: the same prompt with other answers is not a
    duplicate."""
    scored = [(min(jaccard(a, b) for a, b in zip(fields, other)), name) for name, other in candidates]
    scored = [x for x in scored if x[0] >= near]
    return max(scored, key=lambda x: (x[0], -int(x[1].split(":")[1]))) if scored else None  # the most alike, then the earliest


def point_biserial(lengths_chosen: Sequence[float], lengths_rejected: Sequence[float]) -> float | None:
    """The correlation between being the chosen response (1) or the rejected one (0) and length, over every response:
    > 0 when preferred answers tend to be longer; None without spread."""
    xs = [1.0] * len(lengths_chosen) + [0.0] * len(lengths_rejected)
    ys = [float(v) for v in [*lengths_chosen, *lengths_rejected]]
    if len(ys) < 3 or statistics.pstdev(ys) == 0 or statistics.pstdev(xs) == 0:
        return None
    return statistics.correlation(xs, ys)


def share_with_interval(k: int, n: int, z: float = 1.96) -> dict[str, float]:
    """k / n with its Wilson 95% interval."""
    if n == 0:
        return {"share": math.nan, "low": math.nan, "high": math.nan}
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return {"share": p, "low": max(0.0, centre - half), "high": min(1.0, centre + half)}


def examine(train: Sequence[PreferencePair], eval_pairs: Sequence[PreferencePair] = (), settings: DoctorSettings = DoctorSettings(),
            token_lengths: dict[str, list[tuple[int, int, int]]] | None = None) -> dict[str, Any]:
    """The form checks of `train` (and `eval_pairs`, checked the same way and for leakage from train). `token_lengths`
    gives (prompt, chosen, rejected) token counts per split ("train", "eval") for the truncation and length checks;
    without it, lengths are characters and truncation is not checked. Returns {"records": [...], "summary": {...}}."""
    from datasketch import MinHashLSH

    splits = {"train": list(train), "eval": list(eval_pairs)}
    records: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"settings": {"near": settings.near, "max_length": settings.max_length, "shingle_words": SHINGLE,
                                            "num_perm": NUM_PERM}}
    candidates = min(settings.near, LSH_MAX_THRESHOLD)  # LSH finds candidates; each is then checked exactly against `near`
    train_lsh = MinHashLSH(threshold=candidates, num_perm=NUM_PERM)
    train_sets: dict[str, tuple[set[str], ...]] = {}
    for split, pairs in splits.items():
        lsh = train_lsh if split == "train" else MinHashLSH(threshold=candidates, num_perm=NUM_PERM)
        sets: dict[str, tuple[set[str], ...]] = train_sets if split == "train" else {}
        exact: dict[str, int] = {}
        lengths = (token_lengths or {}).get(split)
        for i, p in enumerate(pairs):
            flags: list[str] = []
            rec: dict[str, Any] = {"split": split, "index": i, "id": p.id, "source": p.source, "key": content_key(p)}
            text = squash(_pair_text(p))
            if text in exact:
                flags.append("exact_duplicate")
                rec["duplicate_of"] = exact[text]
            else:
                exact[text] = i
            fields = tuple(shingles(as_text(t)) for t in (p.prompt, p.chosen, p.rejected))
            m = minhash(set().union(*fields))  # candidates from the whole pair's text; each field is then compared
            name = f"{split}:{i}"
            if "exact_duplicate" not in flags:
                close = _closest(fields, [(o, sets[o]) for o in lsh.query(m)], settings.near)
                if close is not None:
                    flags.append("near_duplicate")
                    rec["duplicate_of"], rec["similarity"] = int(close[1].split(":")[1]), round(close[0], 4)
            if split == "eval" and train_sets:
                leak = _closest(fields, [(o, train_sets[o]) for o in train_lsh.query(m)], settings.near)
                if leak is not None:
                    flags.append("leaked")
                    rec["leaked_from"], rec["leak_similarity"] = int(leak[1].split(":")[1]), round(leak[0], 4)
            if "exact_duplicate" not in flags:  # an exact copy adds nothing to match against: its original is there
                lsh.insert(name, m)
                sets[name] = fields
            chosen, rejected = as_text(p.chosen), as_text(p.rejected)
            if squash(chosen) == squash(rejected):
                flags.append("identical_responses")
            else:
                sim = jaccard(fields[1], fields[2])  # the chosen and rejected shingles made above
                rec["responses_similarity"] = round(sim, 4)
                if sim >= settings.near:
                    flags.append("near_identical_responses")
            for side, t in (("chosen", chosen), ("rejected", rejected)):
                if not t.strip():
                    flags.append("empty_response")
                    rec.setdefault("empty", []).append(side)
            prompt = squash(as_text(p.prompt))
            if len(prompt) >= PROMPT_ECHO_MIN_CHARS:
                echoed = [side for side, t in (("chosen", chosen), ("rejected", rejected)) if prompt in squash(t)]
                if echoed:
                    flags.append("prompt_in_response")
                    rec["prompt_in"] = echoed
            if lengths is not None:
                lp, lc, lr = lengths[i]
                rec["tokens"] = {"prompt": lp, "chosen": lc, "rejected": lr}
                if settings.max_length is not None:
                    cut = [side for side, n in (("chosen", lc), ("rejected", lr)) if lp + n > settings.max_length]
                    if cut:
                        flags.append("truncated")
                        rec["truncated"] = cut
            else:
                rec["chars"] = {"prompt": len(as_text(p.prompt)), "chosen": len(chosen), "rejected": len(rejected)}
            rec["flags"] = flags
            rec["exclude"] = any(f in EXCLUDED for f in flags)
            records.append(rec)
        summary[split] = split_summary([r for r in records if r["split"] == split], lengths is not None)
    if not splits["eval"]:
        del summary["eval"]
    texts = {split: {i: {"prompt": as_text(p.prompt)[-TEXT_SHOWN:], "chosen": as_text(p.chosen)[:TEXT_SHOWN],
                         "rejected": as_text(p.rejected)[:TEXT_SHOWN]} for i, p in enumerate(pairs)} for split, pairs in splits.items()}
    return {"records": records, "summary": summary, "texts": texts}


def split_summary(records: list[dict[str, Any]], tokens: bool) -> dict[str, Any]:
    """Counts of each flag, the truncated share per side, and how preference goes with length, for one split."""
    n = len(records)
    counts: dict[str, int] = {}
    for r in records:
        for f in r["flags"]:
            counts[f] = counts.get(f, 0) + 1
    unit = "tokens" if tokens else "chars"
    lc = [r[unit]["chosen"] for r in records]
    lr = [r[unit]["rejected"] for r in records]
    out: dict[str, Any] = {"pairs": n, "flags": dict(sorted(counts.items())), "excluded": sum(r["exclude"] for r in records),
                           "length_unit": "tokens" if tokens else "characters"}
    longer = sum(c > r for c, r in zip(lc, lr))
    out["chosen_longer"] = share_with_interval(longer, n)
    corr = point_biserial(lc, lr)
    out["length_preference_correlation"] = None if corr is None else round(corr, 4)
    if tokens:
        out["truncated_share"] = {side: sum(side in r.get("truncated", []) for r in records) / n if n else math.nan
                                  for side in ("chosen", "rejected")}
    return out


def render_summary(report: dict[str, Any]) -> str:
    """The doctor's findings as text for a person."""
    lines = []
    for split in ("train", "eval"):
        s = report["summary"].get(split)
        if s is None:
            continue
        lines.append(f"{split}: {s['pairs']} pairs, {s['excluded']} marked to exclude")
        if s.get("unreadable_records"):
            lines.append("  unreadable records (not checked; `preftune data inspect` lists them): "
                         + ", ".join(f"{k}: {n}" for k, n in s["unreadable_records"].items()))
        for flag, n in s["flags"].items():
            lines.append(f"  {flag:26s} {n:6d}  ({n / s['pairs']:.1%})" + ("  [excluded]" if flag in EXCLUDED else ""))
        c = s["chosen_longer"]
        lines.append(f"  chosen longer in {c['share']:.1%} of pairs (95% interval {c['low']:.1%} – {c['high']:.1%}); "
                     f"correlation of preference with length ({s['length_unit']}): {s['length_preference_correlation']}")
        if "truncated_share" in s:
            t = s["truncated_share"]
            lines.append(f"  cut at max_length: chosen {t['chosen']:.1%}, rejected {t['rejected']:.1%}")
        noise = s.get("label_noise")
        if noise:
            if noise["learned"]:
                lines.append(f"  label noise ({noise['folds']} folds of {noise['steps_per_fold']} steps): mean suspect {noise['mean_suspect']:.3f}; "
                             f"likely_mislabeled when suspect ≥ {noise['threshold']:.3f} (the mean probability of the labels as given)")
            else:
                lines.append(f"  label noise: the fold runs learned no preference (mean probability of the labels {noise['threshold']}); "
                             "no pair flagged. Fix: more --steps, or --set train.learning_rate=...")
    return "\n".join(lines)


def load_pairs(sources: Any, settings: Any) -> tuple[list[PreferencePair], dict[str, int]]:
    """Every readable pair of `sources`, with no filter applied (the doctor reports what the filters would drop), and the
    count of unreadable records by kind (empty text, wrong type, ...: `data inspect` lists them)."""
    from dataclasses import replace

    from .pipeline import load_examples

    load = replace(settings.load, on_error="skip", filters=replace(settings.load.filters, drop_near_identical=False, drop_duplicates=False,
                                                                  min_confidence=None, max_prompt_chars=None, max_response_chars=None,
                                                                  exclude_from=()))
    loaded = load_examples(sources, load, require_records=False)
    return [e for e in loaded.examples if isinstance(e, PreferencePair)], dict(loaded.errors)


def token_counts(pairs: Sequence[PreferencePair], tokenizer: Any, settings: Any) -> list[tuple[int, int, int]]:
    """(prompt, chosen, rejected) token counts of each pair as training tokenizes it, before any truncation (a pair
    the tokenizer cannot take counts zeros)."""
    from dataclasses import replace

    from .cache import tokenize_examples

    untruncated = replace(settings.tokenize, max_length=None, max_prompt_length=None)
    tokenized, kept, _ = tokenize_examples(list(pairs), tokenizer, untruncated, settings.num_proc)
    out = [(0, 0, 0)] * len(pairs)
    for t, i in zip(tokenized, kept):
        out[i] = (len(t.prompt), len(t.chosen), len(t.rejected))
    return out


def diagnose(settings: Any, tokenizer: Any | None = None, near: float = 0.8) -> dict[str, Any]:
    """The form checks of a data section's train (and eval) sources (`DataSettings`): see `examine`."""
    train, train_errors = load_pairs(settings.train, settings)
    eval_pairs, eval_errors = load_pairs(settings.eval, settings) if settings.eval is not None else ([], {})
    lengths = None
    if tokenizer is not None:
        lengths = {"train": token_counts(train, tokenizer, settings), "eval": token_counts(eval_pairs, tokenizer, settings) if eval_pairs else []}
    max_length = settings.tokenize.max_length if tokenizer is not None else None
    report = examine(train, eval_pairs, DoctorSettings(near=near, max_length=max_length), lengths)
    sources = (lambda s: [str(x) for x in s] if isinstance(s, (list, tuple)) else [str(s)])
    report["summary"]["train"]["unreadable_records"] = train_errors
    if "eval" in report["summary"]:
        report["summary"]["eval"]["unreadable_records"] = eval_errors
    report["summary"]["sources"] = {"train": sources(settings.train), **({"eval": sources(settings.eval)} if settings.eval is not None else {})}
    return report
