"""``sensitivity`` rank policy: measured, not guessed.

Spectra say how much of W a rank keeps, not how much the *task* cares. This
policy factorizes one layer at a time at a few candidate ranks, measures the
calibration-loss increase of each (everything else dense), and then picks one
rank per layer so the summed increase is smallest within the parameter count
the uniform ``--ratio`` would use (or ``--param-budget`` when given).

Per-layer increases are treated as additive (the usual first-order assumption) to
search; the final choice is then checked on the jointly factorized model and is never
worse than the uniform ratio on that measured calibration loss.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import nn

from ..errors import OptionError
from .allocators import check_budget, resolve_budget
from .decompose import Decomposition
from .kinds import factorized, layer_matrix
from .ranks import (AllocationInputs, LayerShape, layer_params, max_saving_rank, ratio_allocator,
                    register_rank_policy)
from .select import set_submodule
from .stats import LayerStats

DEFAULT_FRACTIONS: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)  # of the uniform ratio's rank
CANDIDATES_FIX = "pass --candidate-ranks as positive integers, e.g. 8,16,32,64 (or omit it)"


class LossProbe:
    """``evaluate(name, rank)``: loss increase with only ``name`` factorized at ``rank``; memoised in ``curves``."""

    def __init__(self, model: nn.Module, linears: Mapping[str, nn.Module], decompose: Decomposition,
                 stats: Mapping[str, LayerStats] | None, loss_fn: Callable[[nn.Module], float],
                 conv: str | None = None) -> None:
        self.model, self.linears, self.decompose, self.conv = model, linears, decompose, conv
        self.stats, self.loss_fn = stats or {}, loss_fn
        self.baseline = self._loss("the dense model")
        self.curves: dict[str, dict[int, float]] = {}
        self.joint_results: list[dict[str, object]] = []

    def _loss(self, what: str) -> float:
        with torch.no_grad():
            value = float(self.loss_fn(self.model))
        if not math.isfinite(value):
            raise OptionError(f"the calibration loss of {what} is {value}", fix="check --calib-data and the model's loss")
        return value

    def _swapped_loss(self, ranks: Mapping[str, int], what: str) -> float:
        """Loss increase with the layers in ``ranks`` factorized; the dense layers are always put back."""
        swapped: dict[str, nn.Module] = {}
        try:
            for name, rank in ranks.items():
                if rank < 1 or name not in self.linears:
                    continue
                linear = self.linears[name]
                f = self.decompose(layer_matrix(linear, self.conv), rank, self.stats.get(name))
                set_submodule(self.model, name, factorized(linear, f.u, f.v, self.conv))
                swapped[name] = linear
            return self._loss(what) - self.baseline
        finally:
            for name, linear in swapped.items():
                set_submodule(self.model, name, linear)

    def __call__(self, name: str, rank: int) -> float:
        curve = self.curves.setdefault(name, {})
        if rank not in curve:
            curve[rank] = self._swapped_loss({name: rank}, f"{name} at rank {rank}")
        return curve[rank]

    def joint(self, ranks: Mapping[str, int]) -> float:
        """Loss increase with every layer in ``ranks`` factorized at once.

        Per-layer increases do not simply add up (on Fashion-MNIST at k=3 the additive
        choice lost 8 points against the uniform ratio), so the final choice is checked
        against the real joint loss. Results are kept in ``joint_results``.
        """
        value = self._swapped_loss(ranks, "the jointly factorized model")
        self.joint_results.append({"ranks": dict(ranks), "loss_increase": value})
        return value


def monotone(curve: Mapping[int, float]) -> dict[int, float]:
    """Loss increase cannot grow with rank; measurement noise otherwise stalls the greedy (gains < 0)."""
    out: dict[int, float] = {}
    floor = -math.inf
    for rank in sorted(curve, reverse=True):
        floor = max(floor, curve[rank])
        out[rank] = floor
    return out


def candidates_for(layer: LayerShape, uniform_rank: int, candidate_ranks: tuple[int, ...] | None) -> list[int]:
    """Ranks to measure: given ones, else fractions of the uniform rank; clipped to ranks that save."""
    top = max_saving_rank(layer)
    if top < 1:
        return []
    raw = candidate_ranks or tuple(round(f * uniform_rank) for f in DEFAULT_FRACTIONS)
    return sorted({min(max(int(r), 1), top) for r in raw})


def _check_candidates(candidate_ranks: tuple[int, ...] | None) -> None:
    if candidate_ranks is None:
        return
    if not candidate_ranks or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in candidate_ranks):
        raise OptionError(f"candidate ranks must be positive integers, got {list(candidate_ranks)!r}", fix=CANDIDATES_FIX)


def choose_ranks(curves: Mapping[str, Mapping[int, float]], shapes: Mapping[str, LayerShape], budget: int) -> dict[str, int]:
    """Greedy over the measured curves: from each layer's cheapest candidate, repeatedly take the
    upgrade with the largest loss decrease per extra parameter that still fits ``budget``."""
    curves = {name: monotone(curve) for name, curve in curves.items()}
    chosen = {name: min(curve) for name, curve in curves.items()}
    remaining = budget - sum(layer_params(shapes[n], r) for n, r in chosen.items())
    while True:
        best: tuple[float, str, int, int] | None = None
        for name, curve in curves.items():
            now, shape = chosen[name], shapes[name]
            for rank, loss in curve.items():
                extra = layer_params(shape, rank) - layer_params(shape, now)
                gain = curve[now] - loss
                if rank > now and 0 < extra <= remaining and gain >= 0 and (best is None or gain / extra > best[0]):
                    best = (gain / extra, name, rank, extra)
        if best is None:
            return chosen
        _, name, rank, extra = best
        chosen[name] = rank
        remaining -= extra


@register_rank_policy(
    "sensitivity", summary="it measures each layer's calibration-loss increase within the --ratio's (or "
    "--param-budget's) parameter count", options={"ratio", "param_budget", "candidate_ranks", "sensitivity_loss"},
    needs={"calibration", "probe"})
def sensitivity_allocator(layers: list[LayerShape], ratio: float, inputs: AllocationInputs | None = None) -> dict[str, int]:
    """Ranks minimising the summed measured loss increase at the uniform ratio's parameter count."""
    evaluate = inputs.evaluate if inputs else None
    if evaluate is None:
        raise OptionError("--rank-policy sensitivity needs a calibration loss to measure each layer's sensitivity",
                          fix="give --calib-data (the loss is measured on it), or use --rank-policy ratio/energy/budget")
    candidate_ranks = inputs.candidate_ranks if inputs else None
    _check_candidates(candidate_ranks)
    uniform = ratio_allocator(layers, ratio)
    if inputs is not None and inputs.param_budget is not None:
        budget = resolve_budget(inputs.param_budget, layers, "sensitivity")
        check_budget(budget, layers, inputs.param_budget)
    else:
        budget = sum(layer_params(s, uniform[s.name]) for s in layers)
    shapes = {s.name: s for s in layers}
    fixed = {s.name: uniform[s.name] for s in layers if max_saving_rank(s) < 1}  # can never save: stays dense
    curves = {s.name: {r: evaluate(s.name, r) for r in candidates_for(s, uniform[s.name], candidate_ranks)}
              for s in layers if s.name not in fixed}
    room = budget - sum(layer_params(shapes[n], r) for n, r in fixed.items())
    cheapest = sum(layer_params(shapes[n], min(c)) for n, c in curves.items())
    if cheapest > room:
        raise OptionError(f"the smallest candidate ranks need {cheapest + budget - room:,} parameters, "
                          f"over the budget of {budget:,}", fix=f"{CANDIDATES_FIX}; include smaller ranks or raise the budget")
    chosen = choose_ranks(curves, shapes, room)
    uniform_fits = sum(layer_params(shapes[n], uniform[n]) for n in curves) <= room
    joint = getattr(evaluate, "joint", None)
    if uniform_fits and joint is not None:  # the real joint loss decides, not the additive estimate
        if joint({n: uniform[n] for n in curves}) < joint(chosen):
            chosen = {n: uniform[n] for n in curves}
    elif uniform_fits and all(uniform[n] in c for n, c in curves.items()) and \
            sum(c[uniform[n]] for n, c in curves.items()) < sum(c[chosen[n]] for n, c in curves.items()):
        chosen = {n: uniform[n] for n in curves}
    return {**fixed, **chosen}

