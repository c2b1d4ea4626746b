"""Kernelized sparse deltas (SNELL): ΔW_ij = κ(a_j, b_i) from two low-rank matrices
A (in × r) and B (out × r) through a *nonlinear* kernel, kept sparse by magnitude.

Why a kernel: LoRA's ΔW = B·Aᵀ is the linear kernel on the rows of A and B and has
rank <= r; a nonlinear kernel gives a high-rank ΔW from the same (in+out)·r
parameters, which is what a sparse update needs (its surviving entries must be free).

What is implemented (Shen et al., "Expanding Sparse Tuning for Low Memory Usage",
NeurIPS 2024, arXiv:2411.01800; official code github.com/ssfgunner/SNELL,
``model/vision_transformer_timm.py``, class ``SNELL``):

- ``kernel="distance"`` (the method's kernel): r is split into ``heads`` groups (the code
  uses 2) and ``κ(a, b) = Σ_h (-1)^h ‖a_h - b_h‖₂`` — a signed sum of Euclidean distances
  (the code's ``cdist`` with alternating coefficients), so entries take both signs;
- ``kernel="rbf"``: the same signed head sum of ``exp(-γ‖a_h - b_h‖²)`` (γ = 1/(r/heads)
  by default);
- ΔW = s·κ(A, B) with a trainable scalar s initialised to 0. The code instead fixes
  the coefficient at 0.1 with random A, B (ΔW ≠ 0 at start); the zero scale makes the
  layer equal its base at initialisation, as every adapter here does;
- sparsity, recomputed in every forward from the current values (SNELL's
  "competition-based" sparsification: entries survive by magnitude, no stored indexes):
  either the top-``nonzeros`` entries of |ΔW| (the code's quantile ``init_thres`` is
  ``density = 1 - init_thres``) or entries with |ΔW| > ``threshold``. The mask is a 0/1
  mask with a straight-through gradient (pruned entries still receive gradient and can
  re-enter); the code instead multiplies kept entries by their detached magnitude, which
  changes the function — we keep ΔW exactly the masked kernel matrix so deployment is exact.

Deployment: ONNX Runtime has no sparse GEMM kernel used here, so every form stores the
masked ΔW dense; ``structured`` (base + one dense delta MatMul) has no parameter
advantage for SNELL — it exists so a low-rank base stays two GEMMs.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import OptionError
from .adapters_base import Base, DeltaLinear, check_positive_int, layer_where
from .base import register_layer_type

KERNELS: tuple[str, ...] = ("distance", "rbf")
DEFAULT_DENSITY = 0.1


class DenseDelta(nn.Module):
    """x·ΔWᵀ with ΔW stored dense (no bias): one MatMul."""

    def __init__(self, delta: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(delta.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


def _resolve_sparsity(numel: int, nonzeros: int | None, density: float | None, threshold: float | None,
                      where: str) -> tuple[int | None, float | None]:
    given = [k for k, v in (("nonzeros", nonzeros), ("density", density), ("threshold", threshold)) if v is not None]
    if len(given) > 1:
        raise OptionError(f"give one of nonzeros / density / threshold, got {', '.join(given)}",
                          fix="keep exactly one sparsity control (default: density=0.1)", where=where)
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold >= 0:
            raise OptionError(f"threshold must be a number >= 0, got {threshold!r}",
                              fix="pass the magnitude below which ΔW entries are dropped", where=where)
        return None, float(threshold)
    if nonzeros is None:
        d = DEFAULT_DENSITY if density is None else density
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 < d <= 1:
            raise OptionError(f"density must be in (0, 1], got {d!r}", fix="pass e.g. density=0.1", where=where)
        return max(1, round(d * numel)), None
    if isinstance(nonzeros, bool) or not isinstance(nonzeros, int) or not 0 <= nonzeros <= numel:
        raise OptionError(f"nonzeros must be an integer in 0..{numel} (out·in), got {nonzeros!r}",
                          fix=f"pass nonzeros between 0 and {numel}", where=where)
    return nonzeros, None


@register_layer_type("snell")
class SNELLLinear(DeltaLinear):
    """Frozen base + sparse kernelized ΔW (see the module docstring for the exact definition)."""

    def __init__(self, base: Base, rank: int, kernel: str, heads: int, gamma: float,
                 nonzeros: int | None, threshold: float | None, straight_through: bool,
                 *, name: str | None = None) -> None:
        super().__init__(base, name=name)
        self.rank, self.kernel, self.heads, self.gamma = rank, kernel, heads, gamma
        self.nonzeros, self.threshold, self.straight_through = nonzeros, threshold, straight_through
        self.a = nn.Parameter(torch.randn(self.in_features, rank, **self._factory()))
        self.b = nn.Parameter(torch.randn(self.out_features, rank, **self._factory()))
        self.scale = nn.Parameter(torch.zeros((), **self._factory()))

    @classmethod
    def from_base(cls, base: Base, *, rank: int = 8, kernel: str = "distance", heads: int = 2,
                  gamma: float | None = None, nonzeros: int | None = None, density: float | None = None,
                  threshold: float | None = None, straight_through: bool = True,
                  name: str | None = None) -> SNELLLinear:
        """Sparsity: one of ``nonzeros`` (top-k), ``density`` (fraction) or ``threshold`` (|ΔW| >)."""
        where = layer_where(name, "snell")
        check_positive_int(rank, "SNELL rank", where, "pass rank >= 1 (e.g. 8)")
        check_positive_int(heads, "SNELL kernel heads", where, "pass heads >= 1 (SNELL uses 2)")
        if rank % heads:
            raise OptionError(f"SNELL rank {rank} is not a multiple of heads={heads}",
                              fix=f"pass rank as a multiple of {heads} (e.g. {heads * max(1, rank // heads)})",
                              where=where)
        if kernel not in KERNELS:
            raise OptionError(f"unknown SNELL kernel {kernel!r}", fix=f"choose one of: {', '.join(KERNELS)}",
                              where=where)
        gamma = float(heads / rank) if gamma is None else gamma
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma > 0:
            raise OptionError(f"rbf gamma must be > 0, got {gamma!r}", fix="omit gamma (1/(rank/heads))",
                              where=where)
        k, t = _resolve_sparsity(base.in_features * base.out_features, nonzeros, density, threshold, where)
        return cls(base, rank, kernel, heads, float(gamma), k, t, bool(straight_through), name=name)

    def hyper(self) -> dict[str, Any]:
        return {"rank": self.rank, "kernel": self.kernel, "heads": self.heads, "gamma": self.gamma,
                "nonzeros": self.nonzeros, "threshold": self.threshold, "straight_through": self.straight_through}

    # --- ΔW ----------------------------------------------------------------------------------
    def kernel_matrix(self) -> torch.Tensor:
        """κ(a_j, b_i) for every (i, j): ``out × in``, before scale and mask."""
        d = self.rank // self.heads
        total = torch.zeros(self.out_features, self.in_features, device=self.a.device, dtype=self.a.dtype)
        for h in range(self.heads):
            a, b = self.a[:, h * d:(h + 1) * d], self.b[:, h * d:(h + 1) * d]
            if self.kernel == "distance":
                k = torch.cdist(b, a, p=2.0)
            else:
                sq = (b * b).sum(1, keepdim=True) - 2 * b @ a.t() + (a * a).sum(1)[None, :]
                k = torch.exp(-self.gamma * sq.clamp_min(0))
            total = total + k if h % 2 == 0 else total - k
        return total

    def mask(self, kernel: torch.Tensor | None = None) -> torch.Tensor:
        """Which entries survive (bool ``out × in``), recomputed from the current values."""
        with torch.no_grad():
            kmat = self.kernel_matrix() if kernel is None else kernel.detach()
            if self.threshold is not None:
                return (self.scale.abs() * kmat.abs()) > self.threshold
            keep = torch.zeros(kmat.numel(), dtype=torch.bool, device=kmat.device)
            k = min(int(self.nonzeros or 0), kmat.numel())
            if k:  # ranking |ΔW| = |s|·|κ| is ranking |κ|, which is defined even while s = 0
                keep[torch.topk(kmat.abs().flatten(), k, sorted=False).indices] = True
            return keep.reshape(kmat.shape)

    def dense_delta(self) -> torch.Tensor:
        """s·κ(A, B) before sparsification (what the global budget ranks)."""
        return self.scale * self.kernel_matrix()

    def delta_weight(self) -> torch.Tensor:
        kmat = self.kernel_matrix()
        dense = self.scale * kmat
        sparse = dense * self.mask(kmat)
        if self.straight_through:  # forward: masked; backward: identity (pruned entries keep learning)
            return dense + (sparse - dense).detach()
        return sparse

    def delta_forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.delta_weight())

    def delta_nonzeros(self) -> int:
        """Non-zero entries of the current (masked) ΔW — what a sparse format would store."""
        with torch.no_grad():
            return int(torch.count_nonzero(self.delta_weight()))

    def set_nonzeros(self, k: int) -> None:
        """Switch to a top-k budget of ``k`` entries (used by the global allocation)."""
        numel = self.in_features * self.out_features
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= numel:
            raise OptionError(f"nonzeros must be an integer in 0..{numel}, got {k!r}",
                              fix=f"pass a budget between 0 and {numel}", where=self.where)
        self.nonzeros, self.threshold = k, None

    # --- deployment --------------------------------------------------------------------------
    def structured_delta(self, *, allow_dft: bool = False) -> nn.Module:
        """The masked ΔW as one dense MatMul (``allow_dft`` changes nothing)."""
        return DenseDelta(self.delta_weight())

    def lowering_notes(self) -> dict[str, str]:
        n = self.delta_nonzeros()
        dense = self.in_features * self.out_features
        return {"structured": (f"ONNX Runtime has no sparse kernel here: the masked ΔW ({n} of {dense} entries "
                               f"non-zero, {n / max(dense, 1):.1%}) is stored dense beside the base, so this "
                               "form has no parameter advantage over dense")}

    def extra_repr(self) -> str:
        budget = f"nonzeros={self.nonzeros}" if self.threshold is None else f"threshold={self.threshold:g}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
                f"kernel={self.kernel}, heads={self.heads}, {budget}")

