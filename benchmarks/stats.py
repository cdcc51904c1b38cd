"""Small statistics helpers: percentiles and median-with-spread summaries."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float, *, presorted: bool = False) -> float:
    """The ``q``-th percentile (0–100), linear interpolation between closest ranks;
    ``inf`` values sort last and propagate."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    data = values if presorted else sorted(values)
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    a, b = data[lo], data[hi]
    if a == b or pos == lo:
        return float(a)
    if math.isinf(a) or math.isinf(b):
        return float(b)
    return float(a + (b - a) * (pos - lo))


def summary(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """Median, min, max, quartiles and count of repeated measurements (None ignored)."""
    data = sorted(v for v in values if v is not None and not math.isnan(v))
    if not data:
        return {"median": None, "min": None, "max": None, "q1": None, "q3": None, "n": 0}
    return {
        "median": percentile(data, 50, presorted=True),
        "min": float(data[0]),
        "max": float(data[-1]),
        "q1": percentile(data, 25, presorted=True),
        "q3": percentile(data, 75, presorted=True),
        "n": len(data),
    }
