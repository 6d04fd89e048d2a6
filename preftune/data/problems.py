"""Problems found in input records, and the `on_error` policy that decides whether they stop the run."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from ..errors import DataError

logger = logging.getLogger("preftune.data")

OnError = Literal["fail", "skip"]
MAX_LISTED = 10


@dataclass(frozen=True)
class Problem:
    """One invalid record: where it is, which field, what was found and what to do about it."""

    kind: str
    source: str
    line: int | None
    field: str | None
    found: str
    fix: str
    unit: str = "line"

    def __str__(self) -> str:
        if self.line is None:
            where = self.source
        elif self.unit == "line":
            where = f"{self.source}:{self.line}"
        else:
            where = f"{self.source} {self.unit} {self.line}"
        what = f" field '{self.field}'" if self.field else ""
        return f"{where}:{what} {self.kind}: {self.found}. Fix: {self.fix}"


@dataclass
class ProblemLog:
    """Collects problems across files; `finish` applies the policy: raise on `fail`, log counts on `skip`."""

    on_error: OnError = "fail"
    problems: list[Problem] = field(default_factory=list)

    def add(self, problem: Problem) -> None:
        self.problems.append(problem)

    def counts(self) -> dict[str, int]:
        return dict(Counter(p.kind for p in self.problems))

    def finish(self) -> None:
        if not self.problems:
            return
        counts = ", ".join(f"{kind}: {n}" for kind, n in sorted(self.counts().items()))
        if self.on_error == "fail":
            listed = "\n".join(f"  - {p}" for p in self.problems[:MAX_LISTED])
            more = len(self.problems) - MAX_LISTED
            tail = f"\n  ... and {more} more" if more > 0 else ""
            raise DataError(
                f"{len(self.problems)} invalid record(s) ({counts}):\n{listed}{tail}\n"
                "Fix the records, or set data.on_error: skip to drop them (their count is logged)."
            )
        logger.warning("skipped %d invalid record(s) (%s); first: %s", len(self.problems), counts, self.problems[0])
