"""Grid expansion from the registries: defaults, order (original after the first compressed point of its
precision), policies that read --param-budget or nothing, and the errors naming the sweep's flags."""
from __future__ import annotations

import pytest

from pela_export.errors import OptionError
from pela_export.sweep.grid import Grid, SweepPoint, expand


def test_default_grid_is_three_ratios_default_method_fp32_plus_the_original() -> None:
    plan = expand(Grid())
    assert [p.id for p in plan.points] == ["k2-ratio-svd-fp32", "original-fp32", "k3-ratio-svd-fp32",
                                           "k4-ratio-svd-fp32"]
    assert plan.skipped == [] and any("--methods svd" in c for c in plan.choices)


def test_calibration_data_makes_the_data_aware_method_the_default() -> None:
    plan = expand(Grid(ratios=(2,)), calib_data="digits")
    assert plan.points[0].method == "whiten" and "--calib-data" in plan.choices[0]


def test_cross_product_per_precision_and_flags_reproduce_a_point() -> None:
    plan = expand(Grid(ratios=(2, 3), policies=("ratio",), methods=("svd", "whiten"), precisions=("fp32", "int8")))
    ids = [p.id for p in plan.points]
    assert len(ids) == 2 * (1 + 2 * 2) and len(set(ids)) == len(ids)
    assert ids[:2] == ["k2-ratio-svd-fp32", "original-fp32"] and ids[5:7] == ["k2-ratio-svd-int8", "original-int8"]
    point = next(p for p in plan.points if p.id == "k3-ratio-whiten-int8")
    assert point.flags() == ["--ratio", "3", "--rank-policy", "ratio", "--method", "whiten", "--precision", "int8"]
    assert SweepPoint.from_dict(point.to_dict()) == point


def test_budget_policy_is_swept_at_one_over_k_and_said_so() -> None:
    plan = expand(Grid(ratios=(2, 4), policies=("budget",)))
    budget = [p for p in plan.points if p.policy == "budget"]
    assert [p.compress_kwargs()["param_budget"] for p in budget] == [0.5, 0.25]
    assert budget[0].flags()[:2] == ["--param-budget", "0.5"] and budget[0].id == "b0.5-budget-svd-fp32"
    assert any("1/k" in c for c in plan.choices)


def test_latency_policy_is_swept_over_the_latency_budgets() -> None:
    plan = expand(Grid(ratios=(2,), policies=("ratio", "latency"), latency_budgets=(0.6, 0.8, 0.6)))
    latency = [p for p in plan.points if p.policy == "latency"]
    assert [p.id for p in latency] == ["L0.6-latency-svd-fp32", "L0.8-latency-svd-fp32"] and plan.skipped == []
    assert latency[0].compress_kwargs() == {"rank_policy": "latency", "method": "svd", "latency_budget": 0.6}
    assert latency[1].flags()[:2] == ["--latency-budget", "0.8"]
    for bad in ((0.0,), (1.5,), ()):
        with pytest.raises(OptionError, match="--latency-budgets"):
            expand(Grid(policies=("latency",), latency_budgets=bad))


def test_policy_without_ratio_or_budget_is_skipped_with_the_reason() -> None:
    plan = expand(Grid(ratios=(2,), policies=("ratio", "energy")))
    assert [p.policy for p in plan.points if p.policy] == ["ratio"]
    (what, why), = plan.skipped
    assert what == "policy energy" and "--energy" in why


def test_only_unsweepable_policies_is_an_error() -> None:
    with pytest.raises(OptionError, match="no rank policy") as info:
        expand(Grid(policies=("energy",)))
    assert "--policies" in str(info.value.fix)


@pytest.mark.parametrize(("grid", "flag"), [
    (Grid(ratios=(1.0, 2.0)), "--ratios"),
    (Grid(ratios=()), "--ratios"),
    (Grid(policies=("nope",)), "--policies"),
    (Grid(methods=("qr",)), "--methods"),
    (Grid(precisions=("fp8x",)), "--precisions"),
    (Grid(precisions=()), "--precisions"),
])
def test_bad_names_and_values_name_the_sweep_flag(grid: Grid, flag: str) -> None:
    with pytest.raises(OptionError) as info:
        expand(grid)
    assert flag in str(info.value)


def test_newly_registered_policy_is_picked_up() -> None:
    from pela_export.lowrank import RANK_ALLOCATORS, register_rank_policy

    register_rank_policy("sweeptest", summary="test", options={"ratio"})(lambda layers, ratio, inputs=None: {})
    try:
        plan = expand(Grid(ratios=(2,), policies=("sweeptest",)))
        assert plan.points[0].id == "k2-sweeptest-svd-fp32"
    finally:
        RANK_ALLOCATORS.unregister("sweeptest")
