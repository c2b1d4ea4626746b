"""Decomposition methods: W (out×in) → U (out×r), V (r×in).

A registry so weighted variants (Fisher, activation-aware, whitening) plug in
beside plain SVD and the CLI's ``--method`` choices come from one place.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

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


DECOMPOSITIONS: Registry[Decomposition] = Registry("decomposition method", flag="--method")


@DECOMPOSITIONS.register("svd")
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
