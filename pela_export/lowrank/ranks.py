"""Rank allocation: how many singular directions each layer keeps.

Each policy registers once with its facts (:class:`RankPolicySpec`): the run
options it reads and what ``factorize_model`` must prepare for it. Policies share
alignment and the "skip when it would not save parameters" rule; the CLI choices
and the "option not used by this policy" checks are derived from the entries.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

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
    latency_budget: float | None = None
    max_drop: float | None = None
    latency: Any = None  # a latency_policy.LatencyModel (measured per-layer costs), prepared for "latency"


class RankAllocator(Protocol):
    """``(layers, ratio, inputs)`` → rank per layer name; rank < 1 means "keep dense"."""

    def __call__(self, layers: list[LayerShape], ratio: float, inputs: AllocationInputs | None = None) -> dict[str, int]: ...


#: The run options (RunConfig fields) a policy may read.
PolicyOption = Literal["ratio", "energy", "param_budget", "candidate_ranks", "sensitivity_loss", "latency_budget",
                       "max_drop"]
#: What a policy needs prepared: the truncated spectrum (LayerShape.singular_values), calibration
#: data, and a loss probe (AllocationInputs.evaluate, built from factorize_model's ``loss_fn``);
#: "optional-probe": the probe only when --calib-data is given; "latency": a measured latency table.
PolicyNeed = Literal["spectrum", "calibration", "probe", "optional-probe", "latency"]

#: PELA's k when --ratio is not given, for every policy that reads the ratio (the one place it is defined).
DEFAULT_RATIO = 2.0


@dataclass(frozen=True)
class RankPolicySpec:
    """One registered policy and its facts; calling it allocates ranks.

    ``summary`` says what decides the ranks (it completes "--ratio is not used by
    --rank-policy NAME (…)"); ``options`` are the run options it reads, ``needs`` what
    must be prepared for it.
    """

    name: str
    fn: RankAllocator
    summary: str
    options: frozenset[PolicyOption]
    needs: frozenset[PolicyNeed] = frozenset()

    @property
    def uses_ratio(self) -> bool:
        return "ratio" in self.options

    def __call__(self, layers: list[LayerShape], ratio: float | None, inputs: AllocationInputs | None = None) -> dict[str, int]:
        return self.fn(layers, ratio, inputs)  # type: ignore[arg-type]


RANK_ALLOCATORS: Registry[RankPolicySpec] = Registry("rank allocator", flag="--rank-policy")


def register_rank_policy(name: str, *, summary: str, options: set[PolicyOption] | frozenset[PolicyOption],
                         needs: set[PolicyNeed] | frozenset[PolicyNeed] = frozenset()
                         ) -> Callable[[RankAllocator], RankAllocator]:
    """Decorator recording ``fn`` and its facts in :data:`RANK_ALLOCATORS`; returns ``fn`` unchanged."""

    def deco(fn: RankAllocator) -> RankAllocator:
        RANK_ALLOCATORS.register(name)(RankPolicySpec(name, fn, summary, frozenset(options), frozenset(needs)))
        return fn

    return deco


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


@register_rank_policy("ratio", summary="the same compression ratio k for every layer", options={"ratio"})
def ratio_allocator(layers: list[LayerShape], ratio: float, inputs: AllocationInputs | None = None) -> dict[str, int]:
    """PELA's uniform rule: the same compression ratio k for every layer."""
    return {layer.name: pela_rank(layer.in_features, layer.out_features, ratio) for layer in layers}
