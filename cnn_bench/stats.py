"""Summaries of repeated measurements, shared by ``seeds``, ``report`` and ``bench``.

``mean_interval``: mean, standard deviation and a 95% Student-t interval, for runs that
differ only in their seed. ``median_range``: median, min and max, for timings on a
shared machine, whose outliers are not normally distributed.
"""

from __future__ import annotations

import math
import statistics
from typing import Any


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (``p`` > 0.5).

    The density is integrated with Simpson's rule and the CDF inverted by bisection;
    accurate to 1e-6, which is all an interval on a handful of seeds needs. Written
    here rather than taken from scipy: one quantile does not justify a 40 MB dependency.
    """
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def density(t: float) -> float:
        return math.exp(log_norm - (df + 1) / 2 * math.log1p(t * t / df))

    def mass(x: float, steps: int = 2000) -> float:  # P(0 <= T <= x)
        h = x / steps
        inner = sum((4 if i % 2 else 2) * density(i * h) for i in range(1, steps))
        return h / 3 * (density(0) + inner + density(x))

    low, high = 0.0, 1.0
    while mass(high) < p - 0.5:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if mass(mid) < p - 0.5 else (low, mid)
    return (low + high) / 2


def mean_interval(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation and 95% t-interval of the mean (None for one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"n": n, "mean": mean, "std": None, "ci95": None}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.975, n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci95": [mean - half, mean + half]}


def median_range(values: list[float]) -> dict[str, float]:
    """Median, min and max: a few repeats on a shared machine have outliers, not a normal spread."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }
