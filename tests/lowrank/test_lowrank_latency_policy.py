"""``--rank-policy latency`` on toy models whose per-layer costs are injected (no timing in these tests)."""
import itertools
import random

import pytest
import torch
from torch import nn

from pela_export.errors import OptionError
from pela_export.lowrank import RANK_ALLOCATORS, AllocationInputs, LayerShape, factorize_model
from pela_export.lowrank.latency_policy import LatencyModel, solve, weight_error_curve
from pela_export.runtime.latency_table import LatencyTable, LayerOp, RuntimeEnv

ENV = RuntimeEnv("onnxruntime-cpu", "1.0", "test-cpu", 2)
D = 64


def _costs(slow: set[str] = frozenset()):
    """dense 1 ms per layer; factorized 0.1 + 0.02·r ms, or 2 + r ms (always slower) for layers in ``slow``."""
    def measure(op, rank, env):
        if rank is None:
            return 1.0
        return 2.0 + rank if op.bias else 0.1 + 0.02 * rank  # "slow" layers are the biased ones
    return measure


def _shapes(n: int = 4, seed: int = 0) -> list[LayerShape]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        s = torch.linalg.svdvals(torch.randn(D, D, generator=g)) * torch.logspace(0, -i, D)  # later ones more low-rank
        out.append(LayerShape(f"l{i}", D, D, False, s))
    return out


def _model(names, *, slow=(), other_ms=1.0, measure_model=None) -> LatencyModel:
    ops = {n: LayerOp("linear", D, D, n in slow, rows=10) for n in names}
    table = LatencyTable()
    table.ensure(ops.values(), ENV, _costs(), batch=1)
    return LatencyModel(ENV, table, ops, other_ms + len(names) * 1.0, measure_model)


def _allocate(layers, model, **kw):
    return RANK_ALLOCATORS.get("latency")(layers, None, AllocationInputs(latency=model, **kw))


def test_meets_the_latency_budget_with_the_least_loss():
    layers = _shapes()
    model = _model([s.name for s in layers], measure_model=lambda ranks: model.predict(ranks)[0])
    ranks = _allocate(layers, model, latency_budget=0.7)
    rep = model.report
    assert rep["budget_ms"] == pytest.approx(0.7 * 5.0)
    assert rep["predicted_ms"] <= rep["budget_ms"] + 1e-9 and rep["measured_ms"] == pytest.approx(rep["predicted_ms"])
    assert rep["corrections"] == 0 and rep["met"] is True
    assert any(r >= 1 for r in ranks.values())
    # the more low-rank layers (larger index) are the cheaper ones to factorize: they get factorized first
    errors = {s.name: weight_error_curve(s.singular_values, [ranks[s.name]])[ranks[s.name]] if ranks[s.name] >= 1
              else 0.0 for s in layers}
    assert rep["attempts"][0]["predicted_loss"] == pytest.approx(sum(errors.values()))
    # no single-layer change that stays within the budget lowers the summed loss
    for s in layers:
        for r in [0, *model.candidates(s)]:
            trial = {**ranks, s.name: r}
            if model.predict(trial)[0] <= rep["budget_ms"] + 1e-9:
                loss = sum(weight_error_curve(x.singular_values, [trial[x.name]])[trial[x.name]]
                           if trial[x.name] >= 1 else 0.0 for x in layers)
                assert loss >= rep["attempts"][0]["predicted_loss"] - 1e-9


def test_keeps_a_layer_dense_where_factorizing_is_slower():
    layers = _shapes()
    model = _model([s.name for s in layers], slow={"l3"})
    ranks = _allocate(layers, model, latency_budget=0.9)
    assert ranks["l3"] == 0  # the most compressible layer, but every rank is slower than dense
    why = model.report["decisions"]["l3"]["why"]
    assert "kept dense" in why and "slower at every grid rank" in why
    assert model.report["decisions"]["l3"]["rank"] is None
    assert sum(r >= 1 for r in ranks.values()) >= 1


def test_max_drop_picks_the_fastest_within_the_loss_budget():
    layers = _shapes()
    model = _model([s.name for s in layers])
    assert all(r == 0 for r in _allocate(layers, model, max_drop=0.0).values())  # no loss allowed: all dense
    ranks = _allocate(layers, _model([s.name for s in layers]), max_drop=1.0)
    m = _model([s.name for s in layers])
    assert all(r == min(m.candidates(s)) for s, r in zip(layers, ranks.values()))  # anything goes: the fastest
    mid = _model([s.name for s in layers])
    ranks = _allocate(layers, mid, max_drop=0.3)
    assert mid.report["mode"] == "max-drop" and mid.report["budget_ms"] is None
    assert mid.report["attempts"][0]["predicted_loss"] <= 0.3 * len(layers) + 1e-9
    assert 0 < sum(r >= 1 for r in ranks.values())


def test_correction_when_the_whole_model_is_slower_than_predicted():
    layers = _shapes()
    calls = []

    def measure(ranks):
        calls.append(dict(ranks))
        return 1.3 * model.predict(ranks)[0]  # the sum model underestimates by 30 %

    model = _model([s.name for s in layers], measure_model=measure)
    _allocate(layers, model, latency_budget=0.8)
    rep = model.report
    assert rep["corrections"] == 1 and rep["met"] is True and len(calls) == 2
    first, second = rep["attempts"]
    assert second["target_ms"] == pytest.approx(rep["budget_ms"] * first["predicted_ms"] / first["measured_ms"])
    assert rep["measured_ms"] <= rep["budget_ms"]


def test_loosens_when_the_whole_model_is_well_under_budget():
    """The sum model overestimates by 25 %: the first choice lands far under budget, so the target is loosened and
    the lower-loss configuration that still measures within the budget is kept."""
    layers = _shapes()
    model = _model([s.name for s in layers], measure_model=lambda ranks: 0.75 * model.predict(ranks)[0])
    ranks = _allocate(layers, model, latency_budget=0.7)
    rep = model.report
    first, second = rep["attempts"][:2]
    assert first["measured_ms"] < 0.97 * rep["budget_ms"]
    assert second["target_ms"] == pytest.approx(rep["budget_ms"] * first["predicted_ms"] / first["measured_ms"])
    assert second["predicted_loss"] < first["predicted_loss"] and rep["chosen_attempt"] >= 1
    assert rep["met"] is True and rep["measured_ms"] <= rep["budget_ms"]
    assert model.predict(ranks)[0] == pytest.approx(rep["predicted_ms"])


def test_a_loosened_choice_over_budget_is_dropped_for_the_one_that_met():
    layers = _shapes()
    calls = []

    def measure(ranks):  # first far under the prediction, then far over it
        calls.append(dict(ranks))
        return (0.75 if len(calls) == 1 else 1.5) * model.predict(ranks)[0]

    model = _model([s.name for s in layers], measure_model=measure)
    ranks = _allocate(layers, model, latency_budget=0.7)
    rep = model.report
    assert len(calls) >= 2 and rep["chosen_attempt"] == 0 and ranks == calls[0] and rep["met"] is True


def test_a_loosened_target_that_overshoots_is_tightened_back_towards_the_budget():
    """Measured 0.75x the prediction, then 0.95x: the loosened choice runs over budget, and the next target is the
    budget x predicted/measured of that choice (below the loosened target), not a further loosening."""
    layers = _shapes()
    factors = iter([0.75, 0.95, 0.95])
    model = _model([s.name for s in layers], measure_model=lambda ranks: next(factors) * model.predict(ranks)[0])
    _allocate(layers, model, latency_budget=0.7)
    rep = model.report
    a = [x for x in rep["attempts"] if "predicted_ms" in x]
    assert len(a) == 3 and a[1]["measured_ms"] > rep["budget_ms"]
    assert a[2]["target_ms"] == pytest.approx(rep["budget_ms"] * a[1]["predicted_ms"] / a[1]["measured_ms"])
    assert a[2]["target_ms"] < a[1]["target_ms"] and a[2]["measured_ms"] <= rep["budget_ms"]
    assert rep["chosen_attempt"] == 2 and rep["met"] is True  # the least loss within the budget


def test_at_most_two_corrections_then_the_fastest_measured_is_kept():
    layers = _shapes()
    calls = []

    def measure(ranks):  # the sum model is ever more off: 2x, 4x, 8x the prediction
        calls.append(dict(ranks))
        return 2.0 ** len(calls) * model.predict(ranks)[0]

    model = _model([s.name for s in layers], measure_model=measure)
    ranks = _allocate(layers, model, latency_budget=0.95)
    rep = model.report
    assert rep["corrections"] == 2 and len(calls) == 3 and rep["met"] is False
    measured = [a["measured_ms"] for a in rep["attempts"] if "measured_ms" in a]
    assert rep["measured_ms"] == min(measured) and calls[rep["chosen_attempt"]] == ranks
    assert any("took the fastest" in a.get("note", "") for a in rep["attempts"])


def test_the_probe_loss_is_used_when_given():
    layers = _shapes()
    model = _model([s.name for s in layers])
    # l3 is the most compressible by weight error, but the probe says it matters most
    ranks = _allocate(layers, model, latency_budget=0.85,
                      evaluate=lambda name, r: (10.0 if name == "l3" else 0.01) / r)
    assert ranks["l3"] == 0 and "probe" in model.report["loss_proxy"]


def test_an_unreachable_budget_takes_the_fastest_and_says_so():
    layers = _shapes(2)
    model = _model([s.name for s in layers], other_ms=10.0, measure_model=lambda ranks: model.predict(ranks)[0])
    ranks = _allocate(layers, model, latency_budget=0.1)
    assert all(r == min(model.candidates(s)) for s, r in zip(layers, ranks.values()))
    assert model.report["met"] is False and "below the fastest configuration" in model.report["attempts"][0]["note"]


@pytest.mark.parametrize("kw, flag", [({}, "--max-drop"), ({"latency_budget": 0.5, "max_drop": 0.1}, "--max-drop"),
                                      ({"latency_budget": 0.0}, "--latency-budget"),
                                      ({"max_drop": -1.0}, "--max-drop")])
def test_budget_options_are_checked(kw, flag):
    layers = _shapes(1)
    with pytest.raises(OptionError, match=flag):
        _allocate(layers, _model(["l0"]), **kw)


def test_without_a_latency_table_it_says_how_to_get_one():
    with pytest.raises(OptionError, match="latency table"):
        RANK_ALLOCATORS.get("latency")(_shapes(1), None, AllocationInputs(latency_budget=0.5))


def test_solve_matches_brute_force():
    rng = random.Random(0)
    for _ in range(30):
        opts = [[(1.0, 0.0)] + [(rng.uniform(0.1, 1.5), rng.uniform(0.0, 1.0)) for _ in range(3)] for _ in range(3)]
        cap = rng.uniform(1.0, 3.5)
        fits = [sum(opts[i][j][1] for i, j in enumerate(c)) for c in itertools.product(range(4), repeat=3)
                if sum(opts[i][j][0] for i, j in enumerate(c)) <= cap - 1e-4]  # margin: ms are rounded up
        got = solve(opts, max_cost=cap, bins=200000)
        if not fits:
            continue
        assert got is not None
        assert sum(opts[i][j][0] for i, j in enumerate(got)) <= cap + 1e-9
        assert sum(opts[i][j][1] for i, j in enumerate(got)) <= min(fits) + 1e-6


def test_factorize_model_records_the_decisions():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(D, D, bias=False), nn.ReLU(), nn.Linear(D, D), nn.ReLU(), nn.Linear(D, D, bias=False))
    lat = _model(["0", "2", "4"], slow={"2"})  # biased layer "2": factorizing it is always slower
    result = factorize_model(model, rank_policy="latency", include=["*"], exclude=[], latency=lat, latency_budget=0.9)
    rows = {r.name: r for r in result.layers}
    assert rows["2"].status == "skipped" and "slower at every grid rank" in rows["2"].reason
    assert any(r.status == "factorized" and r.reason.startswith("rank ") for r in result.layers)
    assert result.ratio is None and result.policy_inputs["latency_budget"] == 0.9
    assert result.policy_inputs["latency"]["decisions"]["2"]["rank"] is None
