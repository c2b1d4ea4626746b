"""The Pareto front over (latency ↓, score ↑): dominated points drop out, ties stay, one point is its own front."""
from __future__ import annotations

import math

from pela_export.sweep.pareto import dominates, pareto_front


def test_single_point_is_the_front() -> None:
    assert pareto_front([(1.0, 90.0)]) == [0]


def test_empty_input_has_no_front() -> None:
    assert pareto_front([]) == []


def test_dominated_points_are_dropped_and_front_is_ordered_by_latency() -> None:
    pts = [(3.0, 99.0),   # slowest, most accurate: front
           (2.0, 98.0),   # front
           (2.5, 97.0),   # dominated by (2.0, 98.0): slower and less accurate
           (1.0, 90.0),   # fastest: front
           (1.5, 90.0)]   # same score as (1.0, 90.0) but slower: dominated
    assert pareto_front(pts) == [3, 1, 0]


def test_equal_latency_higher_score_dominates() -> None:
    assert pareto_front([(1.0, 90.0), (1.0, 91.0)]) == [1]
    assert dominates((1.0, 91.0), (1.0, 90.0)) and not dominates((1.0, 90.0), (1.0, 91.0))


def test_identical_points_both_stay_on_the_front() -> None:
    assert pareto_front([(1.0, 90.0), (1.0, 90.0), (2.0, 80.0)]) == [0, 1]
    assert not dominates((1.0, 90.0), (1.0, 90.0))


def test_points_missing_a_number_are_never_on_the_front() -> None:
    assert pareto_front([(None, 99.0), (1.0, None), (2.0, math.nan), (5.0, 50.0)]) == [3]
