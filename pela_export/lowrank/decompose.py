"""Decomposition methods: W (out×in) → U (out×r), V (r×in).

Each method registers once, with its facts (:class:`DecompositionSpec`): the
statistics it reads, what the pipeline must collect for it, the run options it
uses. ``--method`` choices, the data collected and the "option not used by this
method" checks are all derived from these entries, so a new method is one file.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch

from .._registry import Registry
from .stats import LayerStats


@dataclass
class Factors:
    """U (out×r) and V (r×in) with U·V ≈ W, plus the full spectrum used to pick them."""

    u: torch.Tensor
    v: torch.Tensor
    singular_values: torch.Tensor


class Decomposition(Protocol):
    """``(weight, rank, stats)`` → factors; weighted methods raise if their statistics are missing.

    Methods may take extra keyword-only options (ASVD's ``alpha``) with defaults.
    """

    def __call__(self, weight: torch.Tensor, rank: int, stats: LayerStats | None = None) -> Factors: ...


#: What a method needs beyond the weight: nothing, activation statistics, or Fisher information (labelled data).
DataNeed = Literal["none", "activation stats", "fisher"]


@dataclass(frozen=True)
class DecompositionSpec:
    """One registered method and its facts; calling it runs the method.

    ``requires`` is the :class:`LayerStats` field it cannot run without (None: data-free);
    ``collect`` the activation statistics the pipeline gathers for it; ``fisher`` whether
    Fisher information is gathered per output ``"rows"`` or per ``"elements"`` (needs labels);
    ``options`` maps run options (RunConfig fields) to the method's keyword arguments.
    """

    name: str
    fn: Callable[..., Factors]
    summary: str
    requires: str | None = None
    collect: frozenset[str] = frozenset()
    fisher: Literal["rows", "elements"] | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    missing_fix: str = ""

    @property
    def needs(self) -> DataNeed:
        return "fisher" if self.fisher else "activation stats" if self.requires else "none"

    @property
    def data_aware(self) -> bool:
        return self.requires is not None

    def __call__(self, weight: torch.Tensor, rank: int, stats: LayerStats | None = None, **options: Any) -> Factors:
        return self.fn(weight, rank, stats, **options)


DECOMPOSITIONS: Registry[DecompositionSpec] = Registry("decomposition method", flag="--method")


def register_decomposition(name: str, *, summary: str, requires: str | None = None,
                           collect: frozenset[str] | set[str] = frozenset(),
                           fisher: Literal["rows", "elements"] | None = None,
                           options: Mapping[str, str] | None = None,
                           missing_fix: str = "") -> Callable[[Callable[..., Factors]], Callable[..., Factors]]:
    """Decorator recording ``fn`` and its facts in :data:`DECOMPOSITIONS`; returns ``fn`` unchanged."""

    def deco(fn: Callable[..., Factors]) -> Callable[..., Factors]:
        DECOMPOSITIONS.register(name)(DecompositionSpec(name, fn, summary, requires, frozenset(collect), fisher,
                                                        dict(options or {}), missing_fix))
        return fn

    return deco


@register_decomposition("svd", summary="plain truncated SVD of W, no data")
def truncated_svd(weight: torch.Tensor, rank: int, stats: LayerStats | None = None) -> Factors:
    """Plain truncated SVD with √Σ split into both factors (PELA's initialisation).

    Splitting √Σ keeps U and V at similar scales, which matters for FP16/INT8
    later and for training the factors. Computed in float64 for accuracy.
    ``stats`` is accepted for the common signature and ignored.
    """
    u, v, s = split_svd(weight.detach().to(torch.float64), rank)
    return as_factors(u, v, s, weight.dtype)


def split_svd(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank-``rank`` SVD of a float64 matrix as (U·√Σ, √Σ·Vᵀ, full spectrum); shared by every method."""
    left, s, right_t = torch.linalg.svd(matrix, full_matrices=False)
    root = s[:rank].sqrt()
    return left[:, :rank] * root, root[:, None] * right_t[:rank], s


def as_factors(u: torch.Tensor, v: torch.Tensor, s: torch.Tensor, dtype: torch.dtype) -> Factors:
    return Factors(u=u.to(dtype), v=v.to(dtype), singular_values=s.to(dtype))


def relative_error(weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> float:
    """‖W − U·V‖_F / ‖W‖_F, computed in float64."""
    w = weight.detach().to(torch.float64)
    approx = u.detach().to(torch.float64) @ v.detach().to(torch.float64)
    denom = torch.linalg.norm(w)
    if float(denom) == 0.0:
        return 0.0 if float(torch.linalg.norm(approx)) == 0.0 else float("inf")
    return float(torch.linalg.norm(w - approx) / denom)
