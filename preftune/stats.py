"""Statistics shared by training, evaluation and data inspection: Pearson correlation, length summaries, a mean with
its standard error."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def correlation(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Pearson correlation; NaN with fewer than 3 points or when either side is constant."""
    n = len(xs)
    if n < 3:
        return math.nan
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    return math.nan if sxx == 0 or syy == 0 else sxy / math.sqrt(sxx * syy)


def length_stats(values: Sequence[float], percentiles: Sequence[int] = (95,)) -> dict[str, float]:
    """min, mean, median, each percentile as `pNN` (nearest rank from below) and max of `values`; {} when empty."""
    if not values:
        return {}
    ordered = sorted(values)
    n = len(ordered)
    out = {"min": float(ordered[0]), "mean": statistics.fmean(ordered), "median": float(statistics.median(ordered))}
    out |= {f"p{q}": float(ordered[min(n - 1, int(q / 100 * n))]) for q in percentiles}
    return out | {"max": float(ordered[-1])}


def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    """The mean and its standard error (sample standard deviation / √n); NaN mean when empty, NaN error below 2 values."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) / math.sqrt(n) if n > 1 else math.nan)
