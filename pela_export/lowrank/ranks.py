"""Rank allocation: how many singular directions each layer keeps.

Allocators are registered so later policies (energy, parameter budget,
sensitivity) sit beside PELA's global ratio and share alignment and the
"skip when it would not save parameters" rule.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from .._registry import Registry
from ..errors import OptionError
from .layer import dense_params, lowrank_params


@dataclass(frozen=True)
class LayerShape:
    """What an allocator knows about one eligible layer."""

    name: str
    in_features: int
    out_features: int
    bias: bool
    singular_values: torch.Tensor | None = None


@dataclass(frozen=True)
class AllocationInputs:
    """Policy inputs beyond the ratio; each policy checks the ones it needs and names the flag.

    ``evaluate(name, rank)`` returns the calibration-loss increase with only layer
    ``name`` factorized at ``rank`` (factorize_model builds it from ``loss_fn``).
    """

    energy: float | None = None
    param_budget: float | None = None
    candidate_ranks: tuple[int, ...] | None = None
    evaluate: Callable[[str, int], float] | None = None


class RankAllocator(Protocol):
    """``(layers, ratio, inputs)`` → rank per layer name; rank < 1 means "keep dense"."""

    def __call__(self, layers: list[LayerShape], ratio: float, inputs: AllocationInputs | None = None) -> dict[str, int]: ...


RANK_ALLOCATORS: Registry[RankAllocator] = Registry("rank allocator", flag="--rank-policy")
# What factorize_model must prepare for a policy: "spectrum" (LayerShape.singular_values)
# and/or "evaluate" (AllocationInputs.evaluate, needs loss_fn). Filled in by each policy's module.
ALLOCATOR_NEEDS: dict[str, frozenset[str]] = {}


def check_ratio(ratio: float) -> float:
    """PELA's k must be > 1: k ≤ 1 asks for at least the full parameter count."""
    if not isinstance(ratio, (int, float)) or not ratio > 1:
        raise OptionError(
            f"compression ratio must be > 1, got {ratio!r}",
            fix="pass --ratio with a value above 1 (PELA uses 2 or 3)",
        )
    return float(ratio)


def pela_rank(in_features: int, out_features: int, ratio: float) -> int:
    """PELA's rank for compression ratio k: r = in·out // (k·(in+out))."""
    check_ratio(ratio)
    return int((in_features * out_features) // (ratio * (in_features + out_features)))


def align_rank(rank: int, multiple: int | None) -> int:
    """Round down to a multiple (tensor-core friendly) but never below one multiple.

    Rounding down keeps the parameter budget the ratio promised; the floor of one
    multiple keeps tiny layers usable (they are skipped later if that no longer saves).
    """
    if not multiple or multiple <= 1:
        return rank
    return max(multiple, (rank // multiple) * multiple)


def max_saving_rank(shape: LayerShape) -> int:
    """Largest rank that still stores fewer parameters than dense: r·(in+out) < in·out (bias cancels)."""
    return (shape.in_features * shape.out_features - 1) // (shape.in_features + shape.out_features)


def layer_params(shape: LayerShape, rank: int) -> int:
    """Parameters the layer will hold at ``rank`` (dense when that would not save)."""
    if saves_params(shape, rank):
        return lowrank_params(shape.in_features, shape.out_features, rank, shape.bias)
    return dense_params(shape.in_features, shape.out_features, shape.bias)


def saves_params(shape: LayerShape, rank: int) -> bool:
    """True when factorizing at ``rank`` stores strictly fewer parameters than the dense layer."""
    return rank >= 1 and lowrank_params(shape.in_features, shape.out_features, rank, shape.bias) < dense_params(
        shape.in_features, shape.out_features, shape.bias
    )


@RANK_ALLOCATORS.register("ratio")
def ratio_allocator(layers: list[LayerShape], ratio: float, inputs: AllocationInputs | None = None) -> dict[str, int]:
    """PELA's uniform rule: the same compression ratio k for every layer."""
    return {layer.name: pela_rank(layer.in_features, layer.out_features, ratio) for layer in layers}
