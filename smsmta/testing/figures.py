"""Small pure helpers the benchmarks compute their figures with."""

from __future__ import annotations

from collections.abc import Iterable


def max_in_any_second(times: Iterable[float]) -> int:
    """The most events within any half-open one-second span (t - 1, t]; `times` in seconds."""
    ordered = sorted(times)
    best = start = 0
    for end, stamp in enumerate(ordered):
        while ordered[start] + 1.0 <= stamp:
            start += 1
        best = max(best, end - start + 1)
    return best
