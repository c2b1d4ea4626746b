"""A global sparsity budget for SNELL layers: layers compete for non-zero entries.

Why global: a fixed per-layer density spends the same budget on layers that need
little and layers that need much. Here every candidate entry of every layer is
scored ``|ΔW_ij| · importance[layer]`` (ΔW before masking; importance defaults to 1
and may come from a loss-sensitivity probe), and the ``total_nonzeros`` best
entries win — a layer's budget is how many of its entries won (SNELL's magnitude
competition, made cross-layer as in SNELLA's bi-level allocation). The result sums
to the budget exactly.

Entries that score 0 (ΔW = 0 at initialisation, or importance 0) cannot be ranked;
the part of the budget they receive is split in proportion to
(zero-scored entries × importance) by largest remainder, so an untrained model still
gets a deterministic allocation that favours important layers.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from ..errors import OptionError
from .snell import SNELLLinear

_FIX = "pass total_nonzeros between 0 and the summed out·in of the SNELL layers"


def snell_layers(model: nn.Module) -> dict[str, SNELLLinear]:
    """Qualified name → SNELL layer, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, SNELLLinear)}


def _check_importance(importance: Mapping[str, float] | None, names: list[str]) -> dict[str, float]:
    imp = dict(importance or {})
    unknown = sorted(set(imp) - set(names))
    if unknown:
        raise OptionError(f"importance names unknown layers: {', '.join(unknown)}",
                          fix=f"use SNELL layer names: {', '.join(names)}")
    for name, value in imp.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise OptionError(f"importance of {name!r} must be a finite number >= 0, got {value!r}",
                              fix="pass non-negative layer importances (e.g. loss sensitivities)",
                              where=f"layer {name!r} (snell)")
    return {n: float(imp.get(n, 1.0)) for n in names}


def _share(budget: int, caps: list[int], weights: list[float]) -> list[int]:
    """Split ``budget`` in proportion to ``weights`` without exceeding ``caps`` (largest remainder)."""
    out = [0] * len(caps)
    remaining = budget
    while remaining > 0:
        active = [i for i, c in enumerate(caps) if out[i] < c]
        if not active:  # callers guarantee sum(caps) >= budget
            break
        w = [weights[i] for i in active]
        if sum(w) <= 0:
            w = [float(caps[i] - out[i]) for i in active]
        quota = [remaining * wi / sum(w) for wi in w]
        given = 0
        for i, q in zip(active, quota):
            take = min(caps[i] - out[i], math.floor(q))
            out[i] += take
            given += take
        remaining -= given
        if given == 0:
            order = sorted(zip(active, quota), key=lambda t: (-(t[1] - math.floor(t[1])), t[0]))
            for i, _ in order[:remaining]:
                out[i] += 1
            remaining -= min(remaining, len(order))
    return out


def allocate_sparsity(model: nn.Module, total_nonzeros: int, *,
                      importance: Mapping[str, float] | None = None) -> dict[str, int]:
    """Layer name → number of ΔW entries it keeps; the values sum to ``total_nonzeros``."""
    layers = snell_layers(model)
    if not layers:
        raise OptionError("the model has no SNELL layers to share a sparsity budget",
                          fix="apply the 'snell' layer type first")
    names = list(layers)
    capacity = sum(m.in_features * m.out_features for m in layers.values())
    if isinstance(total_nonzeros, bool) or not isinstance(total_nonzeros, int):
        raise OptionError(f"total_nonzeros must be an integer, got {total_nonzeros!r}", fix=_FIX)
    if not 0 <= total_nonzeros <= capacity:
        raise OptionError(f"total_nonzeros={total_nonzeros} is outside 0..{capacity} (all SNELL ΔW entries)",
                          fix=_FIX)
    imp = _check_importance(importance, names)
    with torch.no_grad():
        scores = [(layers[n].dense_delta().abs() * imp[n]).flatten().double().cpu() for n in names]
    sizes = [s.numel() for s in scores]
    positive = [int((s > 0).sum()) for s in scores]
    flat = torch.cat(scores)
    if total_nonzeros <= sum(positive):
        win = torch.sort(flat, descending=True, stable=True).indices[:total_nonzeros]
        bounds = torch.tensor([0, *torch.tensor(sizes).cumsum(0).tolist()])
        counts = torch.bucketize(win, bounds[1:], right=True).bincount(minlength=len(names)).tolist()
        return {n: int(c) for n, c in zip(names, counts)}
    zeros = [size - p for size, p in zip(sizes, positive)]
    extra = _share(total_nonzeros - sum(positive), zeros, [z * imp[n] for z, n in zip(zeros, names)])
    return {n: p + e for n, p, e in zip(names, positive, extra)}


def apply_sparsity(model: nn.Module, allocation: Mapping[str, int]) -> None:
    """Give each named SNELL layer its top-k budget (call between training steps to re-compete)."""
    layers = snell_layers(model)
    unknown = sorted(set(allocation) - set(layers))
    if unknown:
        raise OptionError(f"allocation names unknown SNELL layers: {', '.join(unknown)}",
                          fix="pass the dict returned by allocate_sparsity for this model")
    for name, k in allocation.items():
        layers[name].set_nonzeros(k)


def rebalance_sparsity(model: nn.Module, total_nonzeros: int, *,
                       importance: Mapping[str, float] | None = None) -> dict[str, int]:
    """``allocate_sparsity`` then ``apply_sparsity``; returns the allocation."""
    allocation = allocate_sparsity(model, total_nonzeros, importance=importance)
    apply_sparsity(model, allocation)
    return allocation
