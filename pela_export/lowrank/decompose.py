"""Decomposition methods: W (out×in) → U (out×r), V (r×in).

A registry so weighted variants (Fisher, activation-aware, whitening) plug in
beside plain SVD and the CLI's ``--method`` choices come from one place.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from .._registry import Registry


@dataclass
class Factors:
    """U (out×r) and V (r×in) with U·V ≈ W, plus the full spectrum used to pick them."""

    u: torch.Tensor
    v: torch.Tensor
    singular_values: torch.Tensor


class Decomposition(Protocol):
    def __call__(self, weight: torch.Tensor, rank: int) -> Factors: ...


DECOMPOSITIONS: Registry[Decomposition] = Registry("decomposition method", flag="--method")


@DECOMPOSITIONS.register("svd")
def truncated_svd(weight: torch.Tensor, rank: int) -> Factors:
    """Plain truncated SVD with √Σ split into both factors (PELA's initialisation).

    Splitting √Σ keeps U and V at similar scales, which matters for FP16/INT8
    later and for training the factors. Computed in float64 for accuracy.
    """
    w = weight.detach().to(torch.float64)
    left, s, right_t = torch.linalg.svd(w, full_matrices=False)
    root = s[:rank].sqrt()
    u = left[:, :rank] * root
    v = root[:, None] * right_t[:rank]
    return Factors(u=u.to(weight.dtype), v=v.to(weight.dtype), singular_values=s.to(weight.dtype))


def relative_error(weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> float:
    """‖W − U·V‖_F / ‖W‖_F, computed in float64."""
    w = weight.detach().to(torch.float64)
    approx = u.detach().to(torch.float64) @ v.detach().to(torch.float64)
    denom = torch.linalg.norm(w)
    if float(denom) == 0.0:
        return 0.0 if float(torch.linalg.norm(approx)) == 0.0 else float("inf")
    return float(torch.linalg.norm(w - approx) / denom)
