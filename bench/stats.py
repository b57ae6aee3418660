"""Small statistics and ordering helpers shared by the benchmark sections.

Percentiles interpolate linearly between order statistics (numpy's default), so
a p99 over 20 samples is close to the maximum, not a made-up figure.  Not covered:
confidence intervals; the benchmark repeats and interleaves instead.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) of ``values``, or None when there are none."""
    data = sorted(v for v in values if v is not None and not math.isnan(v))
    if not data:
        return None
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float | None:
    return percentile(values, 50)


def summary(values: Iterable[float], *, scale: float = 1.0, digits: int = 3) -> dict:
    """n, median, p95, p99, min, max of ``values`` times ``scale``, rounded."""
    data = [v * scale for v in values if v is not None]

    def r(v):
        return None if v is None else round(v, digits)

    return {"n": len(data), "median": r(median(data)), "p95": r(percentile(data, 95)),
            "p99": r(percentile(data, 99)), "min": r(min(data) if data else None),
            "max": r(max(data) if data else None)}


def ratio(num: float | None, den: float | None, digits: int = 3) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return round(num / den, digits)


def rotated(items: Sequence, shift: int) -> list:
    """``items`` rotated left by ``shift``: interleaved runs do not always start with the same path."""
    if not items:
        return []
    k = shift % len(items)
    return list(items[k:]) + list(items[:k])
