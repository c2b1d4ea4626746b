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
from .conv import CONV_DECOMPOSITIONS, DEFAULT_CONV_DECOMPOSITION
from .direct import CONSTANT_INPUT_REASON, DirectRead, probe_layers
from .kinds import factorized, layer_kind, layer_matrix, matrix_shape, param_count
from .layer import dense_params, lowrank_params
from .ranks import (DEFAULT_RATIO, RANK_ALLOCATORS, AllocationInputs, LayerShape, align_rank, check_ratio,
                    max_saving_rank, saves_params)
from .risk import output_error, svd_risk
from .select import select_layers, selection_rule, set_submodule
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
    kind: str = "linear"  # "linear" or "conv-<decomposition>" (in/out are then the factorized matrix's)

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
    conv_decomposition: str | None = None  # None: the default (channel) for any convolution

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
            "conv_decomposition": self.conv_decomposition,
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
    conv_decomposition: str | None = None,
    trial: Callable[[nn.Module], object] | None = None,
    latency_budget: float | None = None,
    max_drop: float | None = None,
    latency: Any = None,
) -> CompressionResult:
    """Replace every eligible ``nn.Linear``/``nn.Conv2d`` with two factors initialised by ``method``.

    A layer whose factorization would not store fewer parameters is kept dense
    and listed as skipped with the reason, so the table accounts for every layer.
    ``stats`` (per layer name, from :mod:`.stats`) feed the weighted methods and
    the risk score; ``energy``/``param_budget``/``loss_fn``/``candidate_ranks``
    feed the rank policies that need them (each names its flag when missing);
    ``loss_fn(model) -> float`` is the calibration loss the sensitivity policy probes.
    ``ratio`` None is :data:`~.ranks.DEFAULT_RATIO` for a policy that reads a ratio; a policy
    that does not records ``ratio=None`` (the result never claims a k it did not use).
    ``conv_decomposition`` (``channel`` default, ``spatial``) says how a convolution becomes a matrix.
    ``trial(model)`` runs one forward pass (on different inputs each call; it is called twice): layers whose
    ``.weight`` the model reads directly, or whose input does not change with the model's, stay dense with the
    reason (see :mod:`.direct`).
    ``latency`` (a :class:`.latency_policy.LatencyModel`) with ``latency_budget``/``max_drop`` feed
    ``--rank-policy latency``; its decisions are recorded in ``policy_inputs["latency"]``.
    """
    conv = CONV_DECOMPOSITIONS.get(conv_decomposition).name if conv_decomposition is not None else None
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
    selected = select_layers(target, inc, exc)
    order = {n: i for i, (n, _) in enumerate(selected)}
    direct, constant = _trial_findings(target, selected, trial)
    dense = {n: r.reason() for n, r in direct.items() if not r.served} | dict.fromkeys(constant, CONSTANT_INPUT_REASON)
    selected = [(n, m) for n, m in selected if n not in dense]
    shapes = [LayerShape(n, *matrix_shape(m, conv)[::-1], m.bias is not None) for n, m in selected]
    if DECOMPOSITIONS.get(method).data_aware:  # fail before any SVD, naming the first layer without statistics
        for (name, _), shape in zip(selected, shapes):
            if max_saving_rank(shape) >= 1:
                require_stats(method, stats.get(name), where=name)
    if "spectrum" in needs:  # the spectrum the chosen method truncates
        shapes = [LayerShape(s.name, s.in_features, s.out_features, s.bias,
                             decompose(layer_matrix(m, conv), 1, stats.get(n)).singular_values
                             if max_saving_rank(s) >= 1 else torch.linalg.svdvals(layer_matrix(m, conv).detach().double()))
                  for (n, m), s in zip(selected, shapes)]
    probe = LossProbe(target, dict(selected), decompose, stats, loss_fn, conv=conv) \
        if needs & {"probe", "optional-probe"} and loss_fn is not None else None
    cands = tuple(candidate_ranks) if candidate_ranks is not None else None
    ranks = policy(shapes, ratio, AllocationInputs(energy, param_budget, cands, probe, latency_budget, max_drop,
                                                   latency))
    decided = latency.report.get("decisions", {}) if latency is not None else {}  # the latency policy's reasons

    has_conv = any(isinstance(m, nn.Conv2d) for _, m in selected)
    result = CompressionResult(target, ratio, method, rank_policy, align, inc, exc,
                               conv_decomposition=(conv or DEFAULT_CONV_DECOMPOSITION) if has_conv else None)
    for name, why in dense.items():
        layer = target.get_submodule(name)
        out_f, in_f = matrix_shape(layer, conv)
        result.layers.append(LayerRecord(name, in_f, out_f, layer.bias is not None, None, param_count(layer),
                                         param_count(layer), None, "skipped", why,
                                         kind=layer_kind(layer, conv)))
    result.policy_inputs = _policy_inputs(method, alpha, energy, param_budget, cands, probe, stats, selected)
    if latency is not None:
        result.policy_inputs.update(latency_budget=latency_budget, max_drop=max_drop, latency=latency.report)
    for (name, layer), shape in zip(selected, shapes):
        raw = ranks[name]
        rank = align_rank(raw, align) if raw >= 1 else raw
        kind = layer_kind(layer, conv)
        before = param_count(layer)
        if not saves_params(shape, rank):
            why = decided[name]["why"] if name in decided and rank < 1 else f"rank {rank} would store {lowrank_params(shape.in_features, shape.out_features, max(rank, 0), shape.bias)} >= {dense_params(shape.in_features, shape.out_features, shape.bias)} dense parameters"
            result.layers.append(LayerRecord(name, shape.in_features, shape.out_features, shape.bias,
                                             None, before, before, None, "skipped", why, kind=kind))
            continue
        layer_stats = stats.get(name)
        weight = layer_matrix(layer, conv)
        factors = decompose(weight, rank, layer_stats)
        replacement = factorized(layer, factors.u, factors.v, conv)
        set_submodule(target, name, replacement)
        gram = layer_stats.gram if layer_stats is not None else None
        result.layers.append(LayerRecord(
            name, shape.in_features, shape.out_features, shape.bias, rank, before, param_count(replacement),
            relative_error(weight, factors.u, factors.v), "factorized",
            "; ".join(x for x in (f"aligned {raw}->{rank}" if rank != raw else "",
                                  direct[name].reason() if name in direct else "",
                                  decided[name]["why"] if name in decided else "") if x),
            weighted_error=output_error(weight, factors.u, factors.v, gram) if gram is not None else None,
            risk=svd_risk(weight, rank, gram) if gram is not None else None, kind=kind,
        ))
    result.layers.sort(key=lambda r: order[r.name])  # module order, with the dense-read layers in place
    return result


def _trial_findings(model: nn.Module, selected: list[tuple[str, nn.Module]],
                    trial: Callable[[nn.Module], object] | None) -> tuple[dict[str, DirectRead], set[str]]:
    """Selected layers whose weight the model reads directly, and those fed a constant input, over two
    trial forwards (eval, no grad)."""
    if trial is None or not selected:
        return {}, set()
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            found = probe_layers(model, [n for n, _ in selected], trial)
            return found.reads, found.constant_input
    finally:
        for m, flag in flags:
            m.training = flag


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
                   selected: list[tuple[str, nn.Module]]) -> dict[str, Any]:
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
