"""The Pareto front of measured points over (latency ↓, score ↑). Pure: no I/O, no numpy.

A point is on the front when no other point is at least as good on both and strictly better on one.
Two points with identical latency and score do not dominate each other, so both stay on the front;
a point missing either number cannot be compared and is never on it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence


def _valid(x: float | None) -> bool:
    return x is not None and not math.isnan(x)


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """``a`` (latency, score) is at least as good as ``b`` on both and strictly better on one."""
    return a[0] <= b[0] and a[1] >= b[1] and (a[0] < b[0] or a[1] > b[1])


def pareto_front(points: Sequence[tuple[float | None, float | None]]) -> list[int]:
    """Indices of the non-dominated (latency, score) points, ordered by latency (then index)."""
    valid = [i for i, (lat, score) in enumerate(points) if _valid(lat) and _valid(score)]
    front = [i for i in valid
             if not any(dominates((points[j][0], points[j][1]), (points[i][0], points[i][1]))  # type: ignore[arg-type]
                        for j in valid if j != i)]
    return sorted(front, key=lambda i: (points[i][0], i))
