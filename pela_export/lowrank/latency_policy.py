"""``latency`` rank policy: the least damage within a measured latency budget (or the fastest model within a
loss budget), keeping a layer dense where factorizing it does not pay on this runtime.

Per layer the candidates are "keep dense" plus the grid ranks of its latency table (:mod:`.latency_table`);
a candidate costs its measured ms and a loss proxy: the sensitivity probe's measured calibration-loss increase
when ``--calib-data`` is given, else the truncated SVD's relative weight error ‖W−W_r‖/‖W‖ (plain weight
error is what predicted damage on the pretrained benchmark). A multiple-choice knapsack (dynamic programming
over cost) picks one candidate per layer. The model's latency is predicted as
``dense model ms − Σ dense layer ms + Σ chosen ms``; the whole compressed model is then measured, and when
it misses the budget — or lands more than :data:`SLACK` under it — the target becomes budget ×
predicted/measured and is solved again (at most twice); the least-loss attempt measured within the budget is kept,
else the fastest.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import OptionError
from ..runtime.latency_table import LatencyTable, LayerOp, RuntimeEnv, rank_grid
from .ranks import AllocationInputs, LayerShape, max_saving_rank, register_rank_policy
from .sensitivity import monotone

MAX_CORRECTIONS = 2
#: A measured model this far under its budget (fraction of the budget) is re-solved with a looser target: the sum
#: model overestimated, and the slack is accuracy left unused (deit_small, ORT CPU: 0.631 measured at budget 0.653).
SLACK = 0.03
BINS = 20000  # cost resolution of the knapsack (ms are rounded up, so the prediction never exceeds the target)
OPTIONS_FIX = ("pass exactly one of --latency-budget F (0 < F <= 1: fraction of the dense model's measured "
               "latency, e.g. 0.7) or --max-drop P (allowed predicted loss increase, e.g. 0.05)")


def check_latency_options(latency_budget: float | None, max_drop: float | None) -> None:
    """Exactly one budget, each in range (OptionError naming the flags otherwise)."""
    if (latency_budget is None) == (max_drop is None):
        given = "both --latency-budget and --max-drop were given" if latency_budget is not None else \
            "neither --latency-budget nor --max-drop was given"
        raise OptionError(f"--rank-policy latency needs one budget: {given}", fix=OPTIONS_FIX)
    if latency_budget is not None and (isinstance(latency_budget, bool) or not isinstance(latency_budget, (int, float))
                                       or not 0.0 < latency_budget <= 1.0):
        raise OptionError(f"--latency-budget must be in (0, 1], got {latency_budget!r}",
                          fix="pass --latency-budget 0.7 (the compressed model may take 70% of the dense model's time)")
    if max_drop is not None and (isinstance(max_drop, bool) or not isinstance(max_drop, (int, float))
                                 or not math.isfinite(max_drop) or max_drop < 0):
        raise OptionError(f"--max-drop must be a finite number >= 0, got {max_drop!r}",
                          fix="pass --max-drop 0.05 (allowed predicted loss increase)")


@dataclass
class LatencyModel:
    """Measured costs for the policy: per-layer ops and their table entries, the dense model's ms, and a
    ``measure_model(ranks) -> ms`` that times the whole model at given ranks (None: not measured)."""

    env: RuntimeEnv
    table: LatencyTable
    ops: dict[str, LayerOp]  # layer name -> its op (layers without one have no timing and stay dense)
    dense_model_ms: float
    measure_model: Callable[[Mapping[str, int]], float] | None = None
    align: int | None = None
    report: dict[str, Any] = field(default_factory=dict)  # filled by the policy (recorded in lowrank.json)

    def candidates(self, layer: LayerShape) -> list[int]:
        return rank_grid(max_saving_rank(layer), self.align)

    def layer_ms(self, name: str, rank: int | None) -> tuple[float, str]:
        """(ms, how) of layer ``name`` dense (rank None/< 1) or at ``rank`` (interpolated off the grid, said so)."""
        entry = self.table.get(self.env, self.ops[name])
        if entry is None:
            raise OptionError(f"the latency table has no entry for layer {name!r} ({self.ops[name].key}) on "
                              f"{self.env.key}", fix="re-run without --skip compress so the table is measured")
        return entry.ms_at(rank)

    def predict(self, ranks: Mapping[str, int]) -> tuple[float, list[str]]:
        """Predicted model ms at ``ranks`` (rank < 1: dense) and a note per interpolated layer."""
        total, notes = self.dense_model_ms, []
        for name, rank in ranks.items():
            if name in self.ops and rank >= 1:
                ms, how = self.layer_ms(name, rank)
                total += ms - self.layer_ms(name, None)[0]
                if how != "measured":
                    notes.append(f"{name} rank {rank}: {how}")
        return total, notes


def weight_error_curve(singular_values: torch.Tensor, ranks: Sequence[int]) -> dict[int, float]:
    """‖W − W_r‖_F / ‖W‖_F of the truncated SVD at each rank, from the spectrum."""
    power = singular_values.detach().to(torch.float64).cpu().pow(2)
    total = float(power.sum())
    tail = torch.flip(torch.cumsum(torch.flip(power, [0]), 0), [0]).tolist() + [0.0]
    return {r: math.sqrt(max(tail[min(r, len(tail) - 1)], 0.0) / total) if total > 0 else 0.0 for r in ranks}


def solve(options: Sequence[Sequence[tuple[float, float]]], *, max_cost: float | None = None,
          max_loss: float | None = None, bins: int = BINS) -> list[int] | None:
    """One candidate index per layer from ``options[i] = [(ms, loss), ...]``.

    ``max_cost``: least summed loss with Σms ≤ max_cost (ties: the cheaper); ``max_loss``: least Σms with
    Σloss ≤ max_loss. Dynamic programming over ms in ``bins`` steps, each ms rounded up (a solution's real
    Σms is never above the bound it was found under). None when nothing fits.
    """
    top = max_cost if max_cost is not None else sum(max(c for c, _ in opts) for opts in options)
    if top <= 0:
        return None
    unit = top / bins
    dp = np.full(bins + 1, np.inf)
    dp[0] = 0.0
    steps: list[list[int]] = []
    picks: list[np.ndarray] = []
    for opts in options:
        new, arg = np.full(bins + 1, np.inf), np.full(bins + 1, -1, dtype=np.int32)
        step = [math.ceil(c / unit - 1e-9) for c, _ in opts]
        for j, ((_, loss), s) in enumerate(zip(opts, step)):
            if s > bins:
                continue
            cand = np.full(bins + 1, np.inf)
            cand[s:] = dp[:bins + 1 - s] + loss
            better = cand < new
            new[better], arg[better] = cand[better], j
        dp = new
        steps.append(step)
        picks.append(arg)
    if max_loss is not None:
        ok = np.flatnonzero(dp <= max_loss + 1e-12)
    else:
        finite = dp[np.isfinite(dp)]
        ok = np.flatnonzero(dp <= finite.min() + 1e-12) if finite.size else finite.astype(int)
    if ok.size == 0:
        return None
    b = int(ok[0])  # the cheapest among the fitting (or equally good) solutions
    chosen: list[int] = []
    for step, arg in zip(reversed(steps), reversed(picks)):
        j = int(arg[b])
        chosen.append(j)
        b -= step[j]
    return chosen[::-1]


def _check_inputs(inputs: AllocationInputs | None) -> tuple[LatencyModel, AllocationInputs]:
    if inputs is None or inputs.latency is None:
        raise OptionError("--rank-policy latency needs a measured latency table",
                          fix="run it through `pela-export compress`/`run` (they measure the table), or pass "
                              "latency=LatencyModel(...) to factorize_model")
    check_latency_options(inputs.latency_budget, inputs.max_drop)
    return inputs.latency, inputs


@register_rank_policy(
    "latency", summary="it picks per-layer ranks, or keeps layers dense, by measured latency within "
    "--latency-budget (or the fastest within --max-drop)",
    options={"latency_budget", "max_drop", "sensitivity_loss", "latency_table"},
    needs={"spectrum", "latency", "optional-probe"})
def latency_allocator(layers: list[LayerShape], ratio: float, inputs: AllocationInputs | None = None) -> dict[str, int]:
    """Ranks minimising the loss proxy within the latency budget (or ms within the loss budget); 0 = dense."""
    model, inputs = _check_inputs(inputs)
    evaluate = inputs.evaluate
    ranks: dict[str, int] = {}
    why: dict[str, str] = {}
    table: dict[str, list[tuple[int, float, float]]] = {}  # name -> [(rank, ms, loss)], rank 0 = dense
    for layer in layers:
        grid = model.candidates(layer)
        if layer.name not in model.ops or not grid:
            ranks[layer.name] = 0
            why[layer.name] = ("kept dense: no latency measurement (not reached by the forward pass at the bench's "
                               "input, or a layer that stays dense anyway)" if layer.name not in model.ops else
                               "kept dense: no rank saves parameters")
            continue
        if evaluate is not None:
            curve = monotone({r: float(evaluate(layer.name, r)) for r in grid})
        else:
            if layer.singular_values is None:
                raise ValueError(f"layer {layer.name!r}: the latency policy needs LayerShape.singular_values")
            curve = weight_error_curve(layer.singular_values, grid)
        table[layer.name] = [(0, model.layer_ms(layer.name, None)[0], 0.0)] + \
            [(r, model.layer_ms(layer.name, r)[0], curve[r]) for r in grid]
    names = list(table)
    options = [[(ms, loss) for _, ms, loss in table[n]] for n in names]
    dense_layers_ms = sum(table[n][0][1] for n in names)
    other_ms = model.dense_model_ms - dense_layers_ms  # everything the candidates do not touch
    mode = "latency-budget" if inputs.latency_budget is not None else "max-drop"
    budget_ms = float(inputs.latency_budget) * model.dense_model_ms if inputs.latency_budget is not None else None
    attempts: list[dict[str, Any]] = []
    target = budget_ms
    tried: list[list[int]] = []
    for attempt in range(MAX_CORRECTIONS + 1):
        if mode == "max-drop":
            picked = solve(options, max_loss=float(inputs.max_drop) * (1 if evaluate is not None else len(names)))
        else:
            picked = solve(options, max_cost=target - other_ms) if target is not None else None
        if picked is None:  # only a latency target can be out of reach: take the fastest, and say so
            picked = [min(range(len(o)), key=lambda j, o=o: o[j][0]) for o in options]
            fastest = other_ms + sum(options[i][j][0] for i, j in enumerate(picked))
            attempts.append({"note": f"target {target:.4f} ms is below the fastest configuration's predicted "
                                     f"{fastest:.4f} ms ({fastest / model.dense_model_ms:.2f} of the dense model): "
                                     "took the fastest"})
        if picked in tried:
            break  # the same configuration again: nothing new to measure
        tried.append(picked)
        predicted = other_ms + sum(options[i][j][0] for i, j in enumerate(picked))
        choice = {n: table[n][j][0] for n, j in zip(names, picked)}
        measured = model.measure_model({**ranks, **choice}) if model.measure_model is not None else None
        attempts.append({"target_ms": target, "predicted_ms": predicted, "measured_ms": measured,
                         "predicted_loss": sum(options[i][j][1] for i, j in enumerate(picked)),
                         "layers_factorized": sum(1 for r in choice.values() if r >= 1)})
        if mode == "max-drop" or measured is None or budget_ms is None:
            break
        if budget_ms * (1 - SLACK) <= measured <= budget_ms:
            break  # within the budget and close to it
        if attempt < MAX_CORRECTIONS:  # over budget: tighten; well under: loosen (accuracy left unused)
            # the sum model was off by measured/predicted at this configuration: aim the prediction at the budget
            # scaled by it (anchored on the budget, not on the last target, so a loosened target is tightened back)
            target = budget_ms * predicted / measured
    measured_attempts = [a for a in attempts if "predicted_ms" in a]
    best = _best(measured_attempts, budget_ms)
    chosen = tried[best]
    for n, j in zip(names, chosen):
        ranks[n] = table[n][j][0]
        why[n] = _why(table[n], j, mode)
    last = measured_attempts[best]
    model.report.update({
        "mode": mode, "latency_budget": inputs.latency_budget, "max_drop": inputs.max_drop,
        "loss_proxy": "calibration-loss increase per layer (sensitivity probe, summed)" if evaluate is not None
        else "relative weight error of the truncated SVD, ‖W−W_r‖/‖W‖ (summed over layers; --max-drop is its mean)",
        "runtime": model.env.runtime, "runtime_version": model.env.version, "device": model.env.device,
        "threads": model.env.threads, "dense_model_ms": model.dense_model_ms, "budget_ms": budget_ms,
        "dense_layers_ms": dense_layers_ms, "predicted_ms": last.get("predicted_ms"),
        "measured_ms": last.get("measured_ms"), "corrections": len(measured_attempts) - 1, "chosen_attempt": best,
        "met": None if budget_ms is None or last.get("measured_ms") is None else last["measured_ms"] <= budget_ms,
        "attempts": attempts,
        "decisions": _decisions(ranks, why, table, dict(zip(names, chosen))),
    })
    return ranks


def _best(attempts: list[dict[str, Any]], budget_ms: float | None) -> int:
    """The attempt to keep: the least predicted loss among those measured within the budget (ties: the faster),
    else the fastest measured; without a measured budget, the last one."""
    if budget_ms is None or any(a["measured_ms"] is None for a in attempts):
        return len(attempts) - 1
    met = [i for i, a in enumerate(attempts) if a["measured_ms"] <= budget_ms]
    if met:
        return min(met, key=lambda i: (attempts[i]["predicted_loss"], attempts[i]["measured_ms"]))
    return min(range(len(attempts)), key=lambda i: attempts[i]["measured_ms"])


def _decisions(ranks: Mapping[str, int], why: Mapping[str, str], table: Mapping[str, list[tuple[int, float, float]]],
               chosen: Mapping[str, int]) -> dict[str, dict[str, Any]]:
    """Per layer: the rank (None: dense), why, and the ms / loss proxy it was chosen on."""
    out: dict[str, dict[str, Any]] = {}
    for n, rank in ranks.items():
        out[n] = {"rank": rank if rank >= 1 else None, "why": why[n]}
        if n in table:
            _, ms, loss = table[n][chosen[n]]
            out[n].update(ms=ms, dense_ms=table[n][0][1], loss=loss)
    return out


def _why(cands: list[tuple[int, float, float]], j: int, mode: str) -> str:
    """One line saying why a layer got its candidate."""
    dense_ms = cands[0][1]
    rank, ms, loss = cands[j]
    fastest = min(cands[1:], key=lambda c: c[1])
    if rank >= 1:
        return f"rank {rank}: {ms:.4f} ms vs {dense_ms:.4f} ms dense (loss proxy {loss:.4g})"
    if fastest[1] >= dense_ms:
        return (f"kept dense: factorizing is slower at every grid rank (dense {dense_ms:.4f} ms, fastest factorized "
                f"{fastest[1]:.4f} ms at rank {fastest[0]})")
    budget = "the latency budget is met" if mode == "latency-budget" else "the --max-drop loss budget is spent"
    return (f"kept dense: {budget} with it dense (rank {fastest[0]} would save {dense_ms - fastest[1]:.4f} ms "
            f"at loss proxy {fastest[2]:.4g})")


def capture_ops(model: nn.Module, modules: Mapping[str, nn.Module], inputs: Sequence[torch.Tensor],
                conv: str | None = None) -> dict[str, LayerOp]:
    """Each layer's op at its real input shape, from one forward pass on ``inputs`` (eval, no grad).

    Linear: rows = every leading dimension (batch × tokens). Conv2d: the (N, C, H, W) it receives; a grouped
    convolution or non-zero padding mode stays dense whatever the rank, so it gets no op.
    """
    from .conv import DEFAULT_CONV_DECOMPOSITION, conv_skip_reason

    seen: dict[str, tuple[int, ...]] = {}

    def hook(name: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def record(_m: nn.Module, args: tuple[Any, ...]) -> None:  # returns None: the inputs stay as they are
            seen.setdefault(name, tuple(args[0].shape))
        return record

    hooks = [m.register_forward_pre_hook(hook(n)) for n, m in modules.items()]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    ops: dict[str, LayerOp] = {}
    for name, shape in seen.items():
        m = modules[name]
        if isinstance(m, nn.Conv2d):
            if conv_skip_reason(m) is not None:
                continue
            x = shape if len(shape) == 4 else (1, *shape)
            k, s, p, d = (tuple(int(v) for v in a) for a in (m.kernel_size, m.stride, m.padding, m.dilation))
            ops[name] = LayerOp("conv", m.in_channels, m.out_channels, m.bias is not None, input_shape=x,
                                kernel=k, stride=s, padding=p, dilation=d,  # type: ignore[arg-type]
                                decomposition=conv or DEFAULT_CONV_DECOMPOSITION)
        elif isinstance(m, nn.Linear):
            ops[name] = LayerOp("linear", m.in_features, m.out_features, m.bias is not None,
                                rows=int(np.prod(shape[:-1])) if len(shape) > 1 else 1)
    return ops
