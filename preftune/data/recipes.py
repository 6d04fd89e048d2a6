"""Named recipes that turn a known foreign data set into preference records (see docs/data.md)."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from .formats import RecordError
from .mapping import ColumnMapping, VoteRule
from .readers import RawRecord


@dataclass(frozen=True)
class Recipe:
    """A column mapping, or a function from one raw record to a standard-format record, with a description."""

    description: str
    mapping: ColumnMapping | None = None
    transform: Callable[[RawRecord], RawRecord] | None = None


GSM8K_FINAL = re.compile(r"####\s*(-?[\d,]+(?:\.\d+)?)\s*$")


def gsm8k_small_edit(rec: RawRecord) -> RawRecord:
    """GSM8K problem -> pair whose responses differ only in the final number after `####`.

    The wrong number is the right one plus an offset in {-10, -2, -1, 1, 2, 10}, drawn from a generator
    seeded by the line number, so the pairs are the same on every run.
    """
    question, answer = rec.data.get("question"), rec.data.get("answer")
    if not isinstance(question, str) or not isinstance(answer, str):
        raise RecordError("missing field", "question" if not isinstance(question, str) else "answer", f"keys are {sorted(rec.data)}", "each GSM8K record needs string 'question' and 'answer'")
    match = GSM8K_FINAL.search(answer)
    if not match:
        raise RecordError("wrong type", "answer", "no final '#### N' line", "GSM8K answers end with '#### <number>'")
    right = float(match.group(1).replace(",", ""))
    offset = random.Random(rec.line).choice([-10, -2, -1, 1, 2, 10])
    wrong = right + offset
    wrong_text = str(int(wrong)) if wrong == int(wrong) else f"{wrong:g}"
    rejected = answer[: match.start(1)] + wrong_text + answer[match.end(1):]
    return RawRecord({"prompt": question, "chosen": answer, "rejected": rejected, "id": f"gsm8k-{rec.line}"}, rec.source, rec.line, rec.unit)


RECIPES: dict[str, Recipe] = {
    "pandalm": Recipe(
        "PandaLM test set: instruction+input -> prompt; response1/response2 by majority of annotator1..3 "
        "(0 = tie); agreement -> confidence; pairs without a majority are dropped and counted.",
        mapping=ColumnMapping(prompt=["instruction", "input"], id="idx",
                              vote=VoteRule(a="response1", b="response2", votes=["annotator1", "annotator2", "annotator3"], a_value="1", b_value="2")),
    ),
    "llmbar": Recipe(
        "LLMBar: input -> prompt; output_1/output_2 by the expert label (1 or 2).",
        mapping=ColumnMapping(prompt="input", vote=VoteRule(a="output_1", b="output_2", votes=["label"], a_value="1", b_value="2")),
    ),
    "gsm8k_small_edit": Recipe(
        "GSM8K: question -> prompt; the worked answer -> chosen; the same answer with a wrong final number -> rejected.",
        transform=gsm8k_small_edit,
    ),
}
