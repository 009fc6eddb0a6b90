"""Small statistics: nearest-rank percentiles and median with spread."""

import math
import statistics
from dataclasses import dataclass


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile (the smallest value with at least `fraction` of the values at or below it)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass(frozen=True)
class Spread:
    """Median of the repetitions and their range."""

    median: float
    low: float
    high: float
    n: int


def spread(values: list[float | None]) -> Spread | None:
    present = [value for value in values if value is not None]
    if not present:
        return None
    return Spread(statistics.median(present), min(present), max(present), len(present))
