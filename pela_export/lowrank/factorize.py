"""The compression stage: model → factorized model + per-layer rank table."""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from ..errors import OptionError
from .decompose import DECOMPOSITIONS, relative_error
from .layer import LowRankLinear, dense_params, lowrank_params
from .ranks import RANK_ALLOCATORS, LayerShape, align_rank, check_ratio, saves_params
from .select import DEFAULT_EXCLUDE, DEFAULT_INCLUDE, select_linears, set_submodule


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

    @property
    def shape(self) -> str:
        return f"{self.out_features}x{self.in_features}"


@dataclass
class CompressionResult:
    """The factorized model plus everything needed to report, save and reload it."""

    model: nn.Module
    ratio: float
    method: str
    rank_policy: str
    align: int | None
    include: list[str]
    exclude: list[str]
    layers: list[LayerRecord] = field(default_factory=list)

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
            "layers": [asdict(r) | {"shape": [r.out_features, r.in_features]} for r in self.layers],
            "totals": self.totals(),
        }


def factorize_model(
    model: nn.Module,
    *,
    ratio: float = 2.0,
    method: str = "svd",
    rank_policy: str = "ratio",
    align: int | None = None,
    include: list[str] | tuple[str, ...] | None = None,
    exclude: list[str] | tuple[str, ...] | None = None,
    inplace: bool = False,
) -> CompressionResult:
    """Replace every eligible ``nn.Linear`` with a :class:`LowRankLinear` initialised by ``method``.

    A layer whose factorization would not store fewer parameters is kept dense
    and listed as skipped with the reason, so the table accounts for every layer.
    """
    check_ratio(ratio)
    if align is not None and align < 1:
        raise OptionError(f"rank alignment must be >= 1, got {align}", fix="pass --align 8 (or omit it)")
    decompose = DECOMPOSITIONS.get(method)
    allocate = RANK_ALLOCATORS.get(rank_policy)
    target = model if inplace else copy.deepcopy(model)
    inc = list(include) if include else list(DEFAULT_INCLUDE)
    exc = list(exclude) if exclude is not None else list(DEFAULT_EXCLUDE)
    selected = select_linears(target, inc, exc)
    shapes = [LayerShape(n, m.in_features, m.out_features, m.bias is not None) for n, m in selected]
    ranks = allocate(shapes, ratio)

    result = CompressionResult(target, float(ratio), method, rank_policy, align, inc, exc)
    for (name, linear), shape in zip(selected, shapes):
        raw = ranks[name]
        rank = align_rank(raw, align) if raw >= 1 else raw
        before = dense_params(shape.in_features, shape.out_features, shape.bias)
        if not saves_params(shape, rank):
            why = f"rank {rank} would store {lowrank_params(shape.in_features, shape.out_features, max(rank, 0), shape.bias)} >= {before} dense parameters"
            result.layers.append(LayerRecord(name, shape.in_features, shape.out_features, shape.bias,
                                             None, before, before, None, "skipped", why))
            continue
        factors = decompose(linear.weight, rank)
        bias = linear.bias.detach() if linear.bias is not None else None
        new = LowRankLinear.from_factors(factors.u, factors.v, bias)
        new.train(linear.training)
        set_submodule(target, name, new)
        result.layers.append(LayerRecord(
            name, shape.in_features, shape.out_features, shape.bias, rank, before,
            lowrank_params(shape.in_features, shape.out_features, rank, shape.bias),
            relative_error(linear.weight, factors.u, factors.v), "factorized",
            f"aligned {raw}->{rank}" if rank != raw else "",
        ))
    return result


def format_rank_table(result: CompressionResult) -> str:
    """Markdown table of every eligible layer (printed by the CLI, saved as ranks.md)."""
    lines = [
        "| layer | shape (out x in) | rank | params before | params after | rel. error | note |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in result.layers:
        err = f"{r.rel_error:.4f}" if r.rel_error is not None else "-"
        rank = str(r.rank) if r.rank is not None else "-"
        note = r.reason if r.status == "factorized" else f"skipped: {r.reason}"
        lines.append(f"| {r.name} | {r.shape} | {rank} | {r.params_before:,} | {r.params_after:,} | {err} | {note} |")
    t = result.totals()
    lines.append(
        f"\n{t['layers_factorized']}/{t['layers_eligible']} layers factorized; parameters in factorized layers "
        f"{t['params_before_factorized_layers']:,} -> {t['params_after_factorized_layers']:,} "
        f"({100 * t['reduction_in_factorized_layers']:.1f}% fewer)"
    )
    return "\n".join(lines)
