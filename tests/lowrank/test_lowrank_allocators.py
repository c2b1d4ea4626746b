import math

import pytest
import torch
from torch import nn

from pela_export.errors import OptionError
from pela_export.lowrank import (AllocationInputs, LayerShape, LowRankLinear, energy_rank, factorize_model,
                                 load_compressed, save_compressed)
from pela_export.lowrank.allocators import budget_allocator, energy_allocator, minimum_params
from pela_export.lowrank.ranks import layer_params, ratio_allocator
from pela_export.lowrank.sensitivity import sensitivity_allocator


def _with_spectrum(out_f, in_f, sigma, seed=0):
    """A weight with exactly the singular values ``sigma``."""
    g = torch.Generator().manual_seed(seed)
    q1, _ = torch.linalg.qr(torch.randn(out_f, out_f, generator=g, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(in_f, in_f, generator=g, dtype=torch.float64))
    k = min(out_f, in_f)
    s = torch.zeros(k, dtype=torch.float64)
    s[: len(sigma)] = torch.tensor(sigma, dtype=torch.float64)
    return q1[:, :k] @ torch.diag(s) @ q2[:, :k].T


class Two(nn.Module):
    def __init__(self, d=32):
        super().__init__()
        self.mlp = nn.Module()
        self.mlp.a = nn.Linear(d, d)
        self.mlp.b = nn.Linear(d, d)

    def forward(self, x):
        return self.mlp.b(torch.relu(self.mlp.a(x)))


# --- energy ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tau,expected", [(0.5, 1), (0.8, 2), (0.81, 3), (0.95, 3), (0.96, 4), (1.0, 4)])
def test_energy_rank_hand_computed(tau, expected):
    # σ² = 50, 30, 15, 5 (total 100): cumulative 0.50, 0.80, 0.95, 1.00
    sigma = torch.tensor([50.0, 30.0, 15.0, 5.0]).sqrt()
    assert energy_rank(sigma, tau) == expected


def test_energy_policy_in_factorize_uses_the_spectrum():
    torch.manual_seed(0)
    model = Two()
    sigma = [10.0, 6.0, 3.0, 2.0, 1.0, 0.5]  # σ² = 100, 36, 9, 4, 1, .25 (total 150.25)
    with torch.no_grad():
        model.mlp.a.weight.copy_(_with_spectrum(32, 32, sigma).float())
    res = factorize_model(model, rank_policy="energy", energy=0.9)
    ranks = {r.name: r.rank for r in res.layers}
    assert ranks["mlp.a"] == 2  # 136/150.25 = 0.905 ≥ 0.9, 100/150.25 < 0.9
    assert res.to_dict()["policy_inputs"]["energy"] == 0.9
    aligned = factorize_model(model, rank_policy="energy", energy=0.9, align=4)
    assert {r.name: r.rank for r in aligned.layers}["mlp.a"] == 4, "alignment still applies after allocation"


def test_energy_errors():
    with pytest.raises(OptionError, match="--energy"):
        factorize_model(Two(), rank_policy="energy")
    with pytest.raises(OptionError, match="--energy"):
        factorize_model(Two(), rank_policy="energy", energy=1.5)


def test_energy_too_flat_layer_is_kept_dense():
    res = factorize_model(Two(), rank_policy="energy", energy=1.0)  # random 32x32: needs full rank
    assert all(r.status == "skipped" for r in res.layers)


# --- budget ---------------------------------------------------------------------------------------------------

def _shape(name, i, o, sigma):
    return LayerShape(name, i, o, True, torch.tensor(sigma, dtype=torch.float64))


def test_budget_respects_budget_and_prefers_energy_per_parameter():
    flat = [1.0] * 16
    steep = [8.0, 6.0, 4.0, 3.0, 2.0] + [0.5] * 11
    layers = [_shape("flat", 16, 16, flat), _shape("steep", 16, 16, steep)]
    budget = 12 * 32 + 2 * 16  # 12 rank units in all (+ both biases)
    ranks = budget_allocator(layers, 2.0, AllocationInputs(param_budget=budget))
    spent = sum(layer_params(s, ranks[s.name]) for s in layers)
    assert spent <= budget
    assert ranks["steep"] == 5 + 0 and ranks["flat"] == 7  # 8,6,4,3,2 (σ² ≥ 4) beat 1.0; then flat 1.0 beats 0.25
    # equal spectra, different cost: the cheaper layer gets more rank per parameter
    cheap, dear = _shape("cheap", 16, 16, [2.0] * 16), _shape("dear", 64, 64, [2.0] * 64)
    r = budget_allocator([cheap, dear], 2.0, AllocationInputs(param_budget=10 * 32 + 128 + 16 + 64))
    assert r["cheap"] > r["dear"] == 1


def test_budget_as_fraction_of_dense():
    layers = [_shape("a", 16, 16, [float(16 - i) for i in range(16)])]
    dense = 16 * 16 + 16
    ranks = budget_allocator(layers, 2.0, AllocationInputs(param_budget=0.5))
    assert layer_params(layers[0], ranks["a"]) <= dense // 2
    assert layer_params(layers[0], ranks["a"] + 1) > dense // 2


def test_budget_below_minimum_is_a_clear_error():
    layers = [_shape("a", 16, 16, [1.0] * 16), _shape("b", 16, 16, [1.0] * 16)]
    assert minimum_params(layers) == 2 * (32 + 16)
    with pytest.raises(OptionError, match="--param-budget") as err:
        budget_allocator(layers, 2.0, AllocationInputs(param_budget=50))
    assert "96" in str(err.value)
    with pytest.raises(OptionError, match="--param-budget"):
        budget_allocator(layers, 2.0, AllocationInputs())
    with pytest.raises(OptionError, match="--param-budget"):
        budget_allocator(layers, 2.0, AllocationInputs(param_budget=-3))


def test_budget_policy_in_factorize():
    torch.manual_seed(0)
    model = Two()
    with torch.no_grad():
        model.mlp.a.weight.copy_(_with_spectrum(32, 32, [10.0 - 0.3 * i for i in range(32)]).float())
        model.mlp.b.weight.copy_(_with_spectrum(32, 32, [10.0 * 0.5 ** i for i in range(32)], seed=1).float())
    budget = 20 * 64 + 64
    res = factorize_model(model, rank_policy="budget", param_budget=budget)
    assert sum(r.params_after for r in res.layers) <= budget
    ranks = {r.name: r.rank for r in res.layers}
    assert ranks["mlp.a"] > ranks["mlp.b"]  # flat spectrum needs the rank; steep one is done early
    assert res.to_dict()["policy_inputs"]["param_budget"] == budget


# --- sensitivity ----------------------------------------------------------------------------------------------

def _synthetic_loss(reference, weights):
    """Loss = Σ c_layer · ‖W_eff − W‖²/‖W‖²: layer "a" is 50x more sensitive than "b"."""
    def loss_fn(model):
        total = 0.0
        for name, c in weights.items():
            m = model.get_submodule(name)
            eff = (m.weight_product if isinstance(m, LowRankLinear) else m.weight).detach()
            w = reference[name]
            total += c * float((eff - w).pow(2).sum() / w.pow(2).sum())
        return total
    return loss_fn


def test_sensitivity_gives_rank_to_sensitive_layer_within_ratio_budget():
    torch.manual_seed(0)
    model = Two()
    ref = {n: model.get_submodule(n).weight.detach().clone() for n in ("mlp.a", "mlp.b")}
    loss_fn = _synthetic_loss(ref, {"mlp.a": 50.0, "mlp.b": 1.0})
    uniform = factorize_model(model, ratio=2)
    res = factorize_model(model, ratio=2, rank_policy="sensitivity", loss_fn=loss_fn)
    ranks = {r.name: r.rank for r in res.layers}
    r_uniform = {r.name: r.rank for r in uniform.layers}
    assert r_uniform == {"mlp.a": 8, "mlp.b": 8}
    assert ranks["mlp.a"] > 8 > ranks["mlp.b"]
    assert sum(r.params_after for r in res.layers) <= sum(r.params_after for r in uniform.layers)
    assert loss_fn(res.model) < loss_fn(uniform.model)
    policy = res.to_dict()["policy_inputs"]
    assert policy["baseline_loss"] == 0.0 and set(policy["sensitivity"]) == {"mlp.a", "mlp.b"}
    assert isinstance(model.mlp.a, nn.Linear), "probing leaves the caller's model untouched"


def test_sensitivity_candidate_ranks_and_budget():
    torch.manual_seed(0)
    model = Two()
    ref = {n: model.get_submodule(n).weight.detach().clone() for n in ("mlp.a", "mlp.b")}
    loss_fn = _synthetic_loss(ref, {"mlp.a": 1.0, "mlp.b": 50.0})
    res = factorize_model(model, rank_policy="sensitivity", loss_fn=loss_fn, candidate_ranks=[2, 4, 12],
                          param_budget=16 * 64 + 64)
    ranks = {r.name: r.rank for r in res.layers}
    assert ranks == {"mlp.a": 4, "mlp.b": 12}
    assert res.to_dict()["policy_inputs"]["candidate_ranks"] == [2, 4, 12]
    assert set(res.policy_inputs["sensitivity"]["mlp.a"]) == {"2", "4", "12"}


def test_sensitivity_never_worse_than_uniform_on_measured_sum():
    layers = [LayerShape("a", 32, 32, True), LayerShape("b", 32, 32, True)]
    ranks = sensitivity_allocator(layers, 2.0, AllocationInputs(evaluate=lambda name, r: 1.0 / r))
    assert sum(layer_params(s, ranks[s.name]) for s in layers) <= 2 * layer_params(layers[0], 8)
    assert sum(1.0 / ranks[n] for n in ranks) <= 2 / 8 + 1e-12


def test_sensitivity_errors():
    with pytest.raises(OptionError, match="--calib-data"):
        factorize_model(Two(), rank_policy="sensitivity")
    with pytest.raises(OptionError, match="--candidate-ranks"):
        factorize_model(Two(), rank_policy="sensitivity", loss_fn=lambda m: 0.0, candidate_ranks=[0, 4])
    with pytest.raises(OptionError, match="loss"):
        factorize_model(Two(), rank_policy="sensitivity", loss_fn=lambda m: math.nan)


def test_ratio_allocator_unchanged_with_inputs():
    layers = [LayerShape("x", 384, 1536, True)]
    assert ratio_allocator(layers, 2.0) == ratio_allocator(layers, 2.0, AllocationInputs(energy=0.5)) == {"x": 153}


def test_energy_allocator_needs_spectrum():
    with pytest.raises(ValueError, match="singular_values"):
        energy_allocator([LayerShape("x", 4, 4, True)], 2.0, AllocationInputs(energy=0.9))


def test_policy_inputs_round_trip(tmp_path):
    torch.manual_seed(0)
    res = factorize_model(Two(), rank_policy="energy", energy=0.8)
    save_compressed(res, tmp_path / "c.pt", tmp_path / "c.json")
    rebuilt, spec = load_compressed(Two(), tmp_path / "c.pt", tmp_path / "c.json")
    assert spec["rank_policy"] == "energy" and spec["policy_inputs"]["energy"] == 0.8
    x = torch.randn(3, 32)
    assert torch.equal(rebuilt(x), res.model.eval()(x))


def test_monotone_curve_never_rises_with_rank():
    from pela_export.lowrank.sensitivity import monotone

    noisy = {4: 0.5, 8: -0.01, 16: 0.02, 32: 0.0}
    assert monotone(noisy) == {32: 0.0, 16: 0.02, 8: 0.02, 4: 0.5}


def test_sensitivity_final_choice_checked_on_joint_loss():
    """When the additive estimate misleads, the joint measurement keeps the uniform ranks."""
    from pela_export.lowrank.ranks import AllocationInputs, LayerShape
    from pela_export.lowrank.sensitivity import sensitivity_allocator

    layers = [LayerShape("a", 64, 64, True), LayerShape("b", 64, 64, True)]

    class Probe:
        def __call__(self, name, rank):  # additive view: "a" barely matters, so starve it
            return (0.001 if name == "a" else 1.0) / rank

        def joint(self, ranks):  # jointly, starving "a" is a disaster
            return 10.0 if ranks["a"] < 16 else 0.1

    ranks = sensitivity_allocator(layers, 2.0, AllocationInputs(evaluate=Probe()))
    assert ranks == {"a": 16, "b": 16}  # the uniform PELA ranks at k=2
