"""Spectrum-driven rank policies: ``energy`` (per-layer threshold) and ``budget``
(one parameter budget shared by all eligible layers).

Both read ``LayerShape.singular_values``: the spectrum of the matrix the chosen
``--method`` truncates (W for svd, W·L for whiten, ...), so the energy kept is
the quantity that method minimises. A uniform ratio gives every layer the same
share whatever its spectrum; these give rank where the spectrum says it is needed.
"""
from __future__ import annotations

import heapq
import math

import torch

from ..errors import OptionError
from .layer import dense_params, lowrank_params
from .ranks import AllocationInputs, LayerShape, max_saving_rank, register_rank_policy

BUDGET_FIX = ("pass --param-budget as a fraction of the eligible layers' dense parameters (0 < f <= 1, e.g. 0.5) "
              "or as an absolute parameter count (> 1)")


def _spectrum(layer: LayerShape) -> torch.Tensor:
    if layer.singular_values is None:
        raise ValueError(f"layer {layer.name!r}: this rank policy needs LayerShape.singular_values "
                         "(factorize_model fills them in)")
    return layer.singular_values.detach().to(torch.float64).cpu()


def energy_rank(singular_values: torch.Tensor, energy: float) -> int:
    """Smallest r with Σ_{i<r} σ_i² ≥ energy · Σ σ_i² (at least 1), up to the spectrum's own precision
    (float32 singular values are not exact, so a hand-computed 0.8 may come back as 0.7999999)."""
    tol = 16 * torch.finfo(singular_values.dtype).eps if singular_values.is_floating_point() else 0.0
    power = singular_values.detach().to(torch.float64).pow(2)
    total = float(power.sum())
    if total <= 0.0:
        return 1
    kept = torch.cumsum(power, 0) / total
    return min(int((kept < energy - tol).sum()) + 1, power.numel())


@register_rank_policy("energy", summary="it keeps --energy of each layer's spectrum", options={"energy"},
                      needs={"spectrum"})
def energy_allocator(layers: list[LayerShape], ratio: float, inputs: AllocationInputs | None = None) -> dict[str, int]:
    """Per layer, the smallest rank keeping ≥ τ of Σσ² (τ = ``--energy``); ``ratio`` is not used.

    A layer whose spectrum is flat may need more rank than saves parameters; it
    is then kept dense (and listed as skipped), which is the honest outcome.
    """
    energy = inputs.energy if inputs else None
    if energy is None:
        raise OptionError("--rank-policy energy needs an energy threshold", fix="pass --energy 0.9 (fraction of Σσ² kept per layer)")
    if not isinstance(energy, (int, float)) or not 0.0 < energy <= 1.0:
        raise OptionError(f"energy threshold must be in (0, 1], got {energy!r}", fix="pass --energy 0.9")
    return {layer.name: energy_rank(_spectrum(layer), float(energy)) for layer in layers}


def resolve_budget(param_budget: float | None, layers: list[LayerShape], policy: str = "budget") -> int:
    """Absolute parameter budget for the eligible layers: a fraction (≤ 1) of their dense size, or a count (> 1)."""
    if param_budget is None:
        raise OptionError(f"--rank-policy {policy} needs a parameter budget", fix=BUDGET_FIX)
    if isinstance(param_budget, bool) or not isinstance(param_budget, (int, float)) or not math.isfinite(param_budget) \
            or param_budget <= 0:
        raise OptionError(f"parameter budget must be a positive number, got {param_budget!r}", fix=BUDGET_FIX)
    if param_budget <= 1:
        dense = sum(dense_params(s.in_features, s.out_features, s.bias) for s in layers)
        return math.floor(param_budget * dense)
    return int(param_budget)


def minimum_params(layers: list[LayerShape]) -> int:
    """Fewest parameters the eligible layers can hold: rank 1 where that saves, dense elsewhere."""
    return sum(lowrank_params(s.in_features, s.out_features, 1, s.bias) if max_saving_rank(s) >= 1
               else dense_params(s.in_features, s.out_features, s.bias) for s in layers)


def check_budget(budget: int, layers: list[LayerShape], param_budget: float | None) -> int:
    """Error naming ``--param-budget`` and the minimum when ``budget`` cannot be met; returns the minimum."""
    floor = minimum_params(layers)
    if budget < floor:
        dense = sum(dense_params(s.in_features, s.out_features, s.bias) for s in layers)
        raise OptionError(
            f"--param-budget {param_budget!r} allows {budget:,} parameters, below the minimum {floor:,} "
            f"(every eligible layer at rank 1)",
            fix=f"pass --param-budget >= {floor} (or a fraction >= {floor / dense:.4f}), or narrow --include")
    return floor


@register_rank_policy("budget", summary="it fits one --param-budget shared by all eligible layers",
                      options={"param_budget"}, needs={"spectrum"})
def budget_allocator(layers: list[LayerShape], ratio: float, inputs: AllocationInputs | None = None) -> dict[str, int]:
    """Greedy by marginal energy per parameter: start every layer at rank 1, then repeatedly add the
    direction with the largest σ²_{r+1} / (in+out) that still fits the ``--param-budget``.

    σ² is non-increasing in r, so this is the optimal fractional allocation of the
    kept spectral energy; ranks stop below the point where factorizing no longer
    saves (those layers would otherwise turn dense). ``ratio`` is not used.
    """
    param_budget = inputs.param_budget if inputs else None
    budget = resolve_budget(param_budget, layers)
    remaining = budget - check_budget(budget, layers, param_budget)
    ranks: dict[str, int] = {}
    heap: list[tuple[float, int, int]] = []  # (-gain per parameter, layer index, cost)
    spectra: list[torch.Tensor] = []
    for i, layer in enumerate(layers):
        spectra.append(_spectrum(layer))
        ranks[layer.name] = 1 if max_saving_rank(layer) >= 1 else 0
        if ranks[layer.name] == 1:
            _push(heap, layers, spectra, ranks, i)
    while heap:
        neg_gain, i, cost = heapq.heappop(heap)
        if neg_gain >= 0.0:
            break  # nothing left worth parameters
        if cost > remaining:
            continue  # this layer's next step never fits again (remaining only shrinks)
        ranks[layers[i].name] += 1
        remaining -= cost
        _push(heap, layers, spectra, ranks, i)
    return ranks


def _push(heap: list[tuple[float, int, int]], layers: list[LayerShape], spectra: list[torch.Tensor],
          ranks: dict[str, int], i: int) -> None:
    layer, s = layers[i], spectra[i]
    r = ranks[layer.name]
    if r < max_saving_rank(layer) and r < s.numel():
        cost = layer.in_features + layer.out_features
        heapq.heappush(heap, (-float(s[r]) ** 2 / cost, i, cost))

