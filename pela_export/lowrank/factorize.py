"""The compression stage: model → factorized model + per-layer rank table."""
from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import OptionError
from .decompose import DECOMPOSITIONS, Decomposition, relative_error
from .layer import dense_params, lowrank_from_linear, lowrank_params
from .ranks import (DEFAULT_RATIO, RANK_ALLOCATORS, AllocationInputs, LayerShape, align_rank, check_ratio,
                    max_saving_rank, saves_params)
from .risk import output_error, svd_risk
from .select import select_linears, selection_rule, set_submodule
from .sensitivity import LossProbe
from .stats import LayerStats
from .weighted import DEFAULT_ALPHA, require_stats


@dataclass
class LayerRecord:
    """One eligible layer: what was decided and what it cost."""

    name: str
    in_features: int
    out_features: int
    bias: bool
    rank: int | None
    params_before: int
    params_after: int
    rel_error: float | None
    status: str  # "factorized" | "skipped"
    reason: str = ""
    weighted_error: float | None = None  # output error on calibration inputs (see risk.py); needs gram stats
    risk: float | None = None  # plain SVD's output error / weight error at this rank (see risk.py)

    @property
    def shape(self) -> str:
        return f"{self.out_features}x{self.in_features}"


@dataclass
class CompressionResult:
    """The factorized model plus everything needed to report, save and reload it."""

    model: nn.Module
    ratio: float | None  # None: the rank policy reads no ratio (so no k is reported)
    method: str
    rank_policy: str
    align: int | None
    include: list[str]
    exclude: list[str]
    layers: list[LayerRecord] = field(default_factory=list)
    policy_inputs: dict[str, Any] = field(default_factory=dict)  # energy/budget/alpha/candidates/curves

    @property
    def factorized(self) -> list[LayerRecord]:
        return [r for r in self.layers if r.status == "factorized"]

    def totals(self) -> dict[str, Any]:
        fac = self.factorized
        before = sum(r.params_before for r in fac)
        after = sum(r.params_after for r in fac)
        return {
            "layers_eligible": len(self.layers),
            "layers_factorized": len(fac),
            "params_before_factorized_layers": before,
            "params_after_factorized_layers": after,
            "reduction_in_factorized_layers": (1 - after / before) if before else 0.0,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "ratio": self.ratio,
            "method": self.method,
            "rank_policy": self.rank_policy,
            "align": self.align,
            "include": self.include,
            "exclude": self.exclude,
            "policy_inputs": self.policy_inputs,
            "layers": [asdict(r) | {"shape": [r.out_features, r.in_features]} for r in self.layers],
            "totals": self.totals(),
        }


def factorize_model(
    model: nn.Module,
    *,
    ratio: float | None = None,
    method: str = "svd",
    rank_policy: str = "ratio",
    align: int | None = None,
    include: list[str] | tuple[str, ...] | None = None,
    exclude: list[str] | tuple[str, ...] | None = None,
    inplace: bool = False,
    stats: Mapping[str, LayerStats] | None = None,
    alpha: float | None = None,
    energy: float | None = None,
    param_budget: float | None = None,
    loss_fn: Callable[[nn.Module], float] | None = None,
    candidate_ranks: Sequence[int] | None = None,
) -> CompressionResult:
    """Replace every eligible ``nn.Linear`` with a :class:`LowRankLinear` initialised by ``method``.

    A layer whose factorization would not store fewer parameters is kept dense
    and listed as skipped with the reason, so the table accounts for every layer.
    ``stats`` (per layer name, from :mod:`.stats`) feed the weighted methods and
    the risk score; ``energy``/``param_budget``/``loss_fn``/``candidate_ranks``
    feed the rank policies that need them (each names its flag when missing);
    ``loss_fn(model) -> float`` is the calibration loss the sensitivity policy probes.
    ``ratio`` None is :data:`~.ranks.DEFAULT_RATIO` for a policy that reads a ratio; a policy
    that does not records ``ratio=None`` (the result never claims a k it did not use).
    """
    policy = RANK_ALLOCATORS.get(rank_policy)
    if policy.uses_ratio:
        ratio = check_ratio(DEFAULT_RATIO if ratio is None else ratio)
    else:
        ratio = None
    if align is not None and align < 1:
        raise OptionError(f"rank alignment must be >= 1, got {align}", fix="pass --align 8 (or omit it)")
    decompose = _decomposition(method, alpha)
    needs = policy.needs
    stats = stats or {}
    target = model if inplace else copy.deepcopy(model)
    inc, exc = selection_rule(include, exclude)
    selected = select_linears(target, inc, exc)
    shapes = [LayerShape(n, m.in_features, m.out_features, m.bias is not None) for n, m in selected]
    if DECOMPOSITIONS.get(method).data_aware:  # fail before any SVD, naming the first layer without statistics
        for (name, _), shape in zip(selected, shapes):
            if max_saving_rank(shape) >= 1:
                require_stats(method, stats.get(name), where=name)
    if "spectrum" in needs:  # the spectrum the chosen method truncates
        shapes = [LayerShape(s.name, s.in_features, s.out_features, s.bias,
                             decompose(m.weight, 1, stats.get(n)).singular_values if max_saving_rank(s) >= 1
                             else torch.linalg.svdvals(m.weight.detach().double()))
                  for (n, m), s in zip(selected, shapes)]
    probe = LossProbe(target, dict(selected), decompose, stats, loss_fn) \
        if "probe" in needs and loss_fn is not None else None
    cands = tuple(candidate_ranks) if candidate_ranks is not None else None
    ranks = policy(shapes, ratio, AllocationInputs(energy, param_budget, cands, probe))

    result = CompressionResult(target, ratio, method, rank_policy, align, inc, exc)
    result.policy_inputs = _policy_inputs(method, alpha, energy, param_budget, cands, probe, stats, selected)
    for (name, linear), shape in zip(selected, shapes):
        raw = ranks[name]
        rank = align_rank(raw, align) if raw >= 1 else raw
        before = dense_params(shape.in_features, shape.out_features, shape.bias)
        if not saves_params(shape, rank):
            why = f"rank {rank} would store {lowrank_params(shape.in_features, shape.out_features, max(rank, 0), shape.bias)} >= {before} dense parameters"
            result.layers.append(LayerRecord(name, shape.in_features, shape.out_features, shape.bias,
                                             None, before, before, None, "skipped", why))
            continue
        layer_stats = stats.get(name)
        factors = decompose(linear.weight, rank, layer_stats)
        set_submodule(target, name, lowrank_from_linear(linear, factors.u, factors.v))
        gram = layer_stats.gram if layer_stats is not None else None
        result.layers.append(LayerRecord(
            name, shape.in_features, shape.out_features, shape.bias, rank, before,
            lowrank_params(shape.in_features, shape.out_features, rank, shape.bias),
            relative_error(linear.weight, factors.u, factors.v), "factorized",
            f"aligned {raw}->{rank}" if rank != raw else "",
            weighted_error=output_error(linear.weight, factors.u, factors.v, gram) if gram is not None else None,
            risk=svd_risk(linear.weight, rank, gram) if gram is not None else None,
        ))
    return result


def _decomposition(method: str, alpha: float | None) -> Decomposition:
    """The registered method, with ASVD's α bound when given and the method's spec takes it."""
    decompose = DECOMPOSITIONS.get(method)
    if alpha is None:
        return decompose
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha < 0:
        raise OptionError(f"ASVD alpha must be a finite number >= 0, got {alpha!r}", fix="pass --asvd-alpha 0.5 (or omit it)")
    keyword = decompose.options.get("asvd_alpha")
    if keyword is None:
        return decompose
    return functools.partial(decompose, **{keyword: float(alpha)})


def _policy_inputs(method: str, alpha: float | None, energy: float | None, param_budget: float | None,
                   cands: tuple[int, ...] | None, probe: LossProbe | None, stats: Mapping[str, LayerStats],
                   selected: list[tuple[str, nn.Linear]]) -> dict[str, Any]:
    """Everything beyond the per-layer ranks that decided them, so a run can be reproduced and audited."""
    seen = [stats[n].n_samples for n, _ in selected if n in stats]
    return {
        "alpha": (DEFAULT_ALPHA if alpha is None else float(alpha))
        if "asvd_alpha" in DECOMPOSITIONS.get(method).options else None,
        "energy": energy,
        "param_budget": param_budget,
        "candidate_ranks": list(cands) if cands is not None else None,
        "calibration": {"layers_with_stats": len(seen), "min_samples": min(seen)} if seen else None,
        "baseline_loss": probe.baseline if probe is not None else None,
        "sensitivity": {n: {str(r): d for r, d in sorted(c.items())} for n, c in probe.curves.items()}
        if probe is not None else None,
        "sensitivity_joint_checks": probe.joint_results if probe is not None else None,
    }


def format_rank_table(result: CompressionResult) -> str:
    """Markdown table of every eligible layer (printed by the CLI, saved as ranks.md).

    With calibration statistics it adds the output error on calibration inputs and
    the risk score (see :mod:`.risk`); without them the table is unchanged.
    """
    data = any(r.weighted_error is not None or r.risk is not None for r in result.layers)
    extra_head, extra_rule = (" out. error | risk |", "---:|---:|") if data else ("", "")
    lines = [
        f"| layer | shape (out x in) | rank | params before | params after | rel. error |{extra_head} note |",
        f"|---|---|---:|---:|---:|---:|{extra_rule}---|",
    ]
    for r in result.layers:
        err = f"{r.rel_error:.4f}" if r.rel_error is not None else "-"
        rank = str(r.rank) if r.rank is not None else "-"
        note = r.reason if r.status == "factorized" else f"skipped: {r.reason}"
        extra = ""
        if data:
            extra = "".join(f" {v:.4f} |" if v is not None else " - |" for v in (r.weighted_error, r.risk))
        lines.append(f"| {r.name} | {r.shape} | {rank} | {r.params_before:,} | {r.params_after:,} | {err} |{extra} {note} |")
    t = result.totals()
    lines.append(
        f"\n{t['layers_factorized']}/{t['layers_eligible']} layers factorized; parameters in factorized layers "
        f"{t['params_before_factorized_layers']:,} -> {t['params_after_factorized_layers']:,} "
        f"({100 * t['reduction_in_factorized_layers']:.1f}% fewer)"
    )
    return "\n".join(lines)
