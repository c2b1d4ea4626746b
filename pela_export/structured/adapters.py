"""Structured unrestricted-rank adapters: a frozen W plus a trainable ΔW that is
circulant, Toeplitz, a Kronecker product or a low-displacement-rank sum.

Unlike LoRA, ΔW here can have full rank with O(n) or O(√n·√n) parameters, which is
why these adapters exist. Each is created with ΔW = 0 (the layer equals its base).
Training applies ΔW the way its structure is defined (FFT convolutions for
circulant / Toeplitz / LDR, two small MatMuls for Kronecker); deployment uses the
DFT-free forms of :mod:`.adapters_ops` unless ``allow_dft`` is given.

Choices for non-square ``out x in`` layers:

- ``circulant``: the standard *block-circulant* construction (CirCNN): a p×q grid of
  b×b circulant blocks, each defined by its own vector; b defaults to gcd(out, in)
  (one circulant for square layers), any common divisor can be passed as ``block``.
- ``toeplitz``: Toeplitz is defined for any shape (out+in-1 values).
- ``kronecker``: ΔW = A⊗B with A ``o1 x i1``, B ``o2 x i2``; (o1, i1) defaults to the most
  balanced factorisation (largest divisor <= √n), or ``factors=(o1, i1)``.
- ``ldr``: ΔW is the top-left ``out x in`` block of an n×n (n = max(out, in)) matrix
  ``Σ_k Circ(g_k)·SkewCirc(h_k)``: inputs zero-padded to n, the first ``out`` outputs kept.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..errors import OptionError
from . import adapters_ops as ops
from .adapters_base import Base, DeltaLinear, check_positive_int, layer_where
from .base import register_layer_type

_INIT_STD = 0.01  # "random small" for the factor that is not zero-initialised


def _balanced_divisor(n: int) -> int:
    """Largest divisor of n that is <= √n (1 for primes)."""
    return max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)


@register_layer_type("circulant")
class CirculantLinear(DeltaLinear):
    """ΔW block-circulant (b×b circulant blocks); trained by FFT, deployed as one Conv."""

    def __init__(self, base: Base, block: int, *, name: str | None = None) -> None:
        super().__init__(base, name=name)
        self.block = block
        p, q = self.out_features // block, self.in_features // block
        self.c = nn.Parameter(torch.zeros(p, q, block, **self._factory()))

    @classmethod
    def from_base(cls, base: Base, *, block: int | None = None, name: str | None = None) -> CirculantLinear:
        """``block`` must divide both in and out features (default: their gcd)."""
        where = layer_where(name, "circulant")
        g = math.gcd(base.in_features, base.out_features)
        if block is None:
            block = g
        check_positive_int(block, "circulant block", where, f"pass a common divisor of in/out features, e.g. {g}")
        if g % block:
            raise OptionError(f"circulant block {block} does not divide both in_features={base.in_features} "
                              f"and out_features={base.out_features}",
                              fix=f"pass block as a divisor of {g} (their gcd), or omit it", where=where)
        return cls(base, block, name=name)

    def hyper(self) -> dict[str, Any]:
        return {"block": self.block}

    def delta_weight(self) -> torch.Tensor:
        return ops.block_circulant_matrix(self.c)

    def delta_forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.block_circulant_fft(self.c, x)

    def structured_delta(self, *, allow_dft: bool = False) -> nn.Module:
        return ops.BlockCirculantFFT(self.c) if allow_dft else ops.BlockCirculantConv(self.c)


@register_layer_type("toeplitz")
class ToeplitzLinear(DeltaLinear):
    """ΔW Toeplitz from out+in-1 values; trained by FFT convolution, deployed as one Conv."""

    def __init__(self, base: Base, *, name: str | None = None) -> None:
        super().__init__(base, name=name)
        self.t = nn.Parameter(torch.zeros(self.out_features + self.in_features - 1, **self._factory()))

    @classmethod
    def from_base(cls, base: Base, *, name: str | None = None) -> ToeplitzLinear:
        return cls(base, name=name)

    def delta_weight(self) -> torch.Tensor:
        return ops.toeplitz_matrix(self.t, self.out_features, self.in_features)

    def delta_forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.toeplitz_fft(self.t, x, self.out_features)

    def structured_delta(self, *, allow_dft: bool = False) -> nn.Module:
        """One Conv; there is no FFT form to deploy (``allow_dft`` changes nothing)."""
        return ops.ToeplitzConv(self.t, self.out_features)


@register_layer_type("kronecker")
class KroneckerLinear(DeltaLinear):
    """ΔW = A⊗B; x·ΔWᵀ = vec(A·X·Bᵀ) (two MatMuls) in training and deployment alike.

    A starts random small and B at zero, so ΔW = 0 but B's gradient is not.
    """

    def __init__(self, base: Base, factors: tuple[int, int], *, name: str | None = None) -> None:
        super().__init__(base, name=name)
        o1, i1 = factors
        self.factors = (o1, i1)
        o2, i2 = self.out_features // o1, self.in_features // i1
        self.a = nn.Parameter(torch.randn(o1, i1, **self._factory()) * _INIT_STD)
        self.b = nn.Parameter(torch.zeros(o2, i2, **self._factory()))

    @classmethod
    def from_base(cls, base: Base, *, factors: tuple[int, int] | list[int] | None = None,
                  name: str | None = None) -> KroneckerLinear:
        """``factors=(o1, i1)`` with o1 | out and i1 | in; default: the most balanced ones."""
        where = layer_where(name, "kronecker")
        dims = (("out_features", base.out_features), ("in_features", base.in_features))
        if factors is None:
            for what, n in dims:
                if n > 1 and _balanced_divisor(n) == 1:
                    raise OptionError(
                        f"{what}={n} is prime: no factorisation n = n1·n2 with both > 1, so A⊗B cannot be "
                        "balanced", fix=f"pass factors=(o1, i1) explicitly (1 or {n} allowed) or use another "
                        "kind (circulant, toeplitz, ldr)", where=where)
            factors = (_balanced_divisor(base.out_features), _balanced_divisor(base.in_features))
        if len(factors) != 2:
            raise OptionError(f"kronecker factors must be (o1, i1), got {factors!r}",
                              fix="pass factors=(o1, i1) with o1 | out_features and i1 | in_features", where=where)
        for f, (what, n) in zip(factors, dims):
            check_positive_int(f, f"kronecker factor for {what}", where, f"pass a divisor of {n}")
            if n % f:
                raise OptionError(f"kronecker factor {f} does not divide {what}={n}",
                                  fix=f"pass a divisor of {n} (e.g. {_balanced_divisor(n)})", where=where)
        return cls(base, (int(factors[0]), int(factors[1])), name=name)

    def hyper(self) -> dict[str, Any]:
        return {"factors": list(self.factors)}

    def delta_weight(self) -> torch.Tensor:
        return torch.kron(self.a, self.b)

    def delta_forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.kronecker_apply(self.a, self.b.t(), x)

    def structured_delta(self, *, allow_dft: bool = False) -> nn.Module:
        """Two MatMuls and reshapes; Kronecker needs no FFT (``allow_dft`` changes nothing)."""
        return ops.KroneckerMatMul(self.a, self.b)


@register_layer_type("ldr")
class LDRLinear(DeltaLinear):
    """ΔW = Σ_{k<r} Circ(g_k)·SkewCirc(h_k) (displacement rank r w.r.t. Z_1, Z_-1).

    g starts random small and h at zero (ΔW = 0). Trained by FFT (real FFTs only),
    deployed as two Convs: r negacyclic convolutions, then r circular ones summed.
    """

    def __init__(self, base: Base, rank: int, *, name: str | None = None) -> None:
        super().__init__(base, name=name)
        self.rank = rank
        self.n = max(self.in_features, self.out_features)
        self.g = nn.Parameter(torch.randn(rank, self.n, **self._factory()) * _INIT_STD)
        self.h = nn.Parameter(torch.zeros(rank, self.n, **self._factory()))

    @classmethod
    def from_base(cls, base: Base, *, rank: int = 2, name: str | None = None) -> LDRLinear:
        where = layer_where(name, "ldr")
        n = max(base.in_features, base.out_features)
        check_positive_int(rank, "LDR displacement rank", where, f"pass rank between 1 and {n}")
        if rank > n:
            raise OptionError(f"LDR displacement rank {rank} exceeds n = max(in, out) = {n}",
                              fix=f"pass rank <= {n} (rank {n} already represents any matrix)", where=where)
        return cls(base, rank, name=name)

    def hyper(self) -> dict[str, Any]:
        return {"rank": self.rank}

    def delta_weight(self) -> torch.Tensor:
        return ops.ldr_matrix(self.g, self.h, self.out_features, self.in_features)

    def delta_forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.ldr_apply_fft(self.g, self.h, x, self.out_features)

    def structured_delta(self, *, allow_dft: bool = False) -> nn.Module:
        cls = ops.LDRFFT if allow_dft else ops.LDRConv
        return cls(self.g, self.h, self.in_features, self.out_features)
