"""``MPOLinear``: a linear layer stored as a matrix product operator (registered as ``"mpo"``).

``W`` (out × in) with ``out = i_1⋯i_n`` and ``in = j_1⋯j_n`` is held as n small cores
``(d_{k-1}, i_k, j_k, d_k)`` found by sequential SVD with a bond-dimension cap; forward
contracts the input through the cores (one reshape + MatMul each), never forming ``W``.
The central core is the one :mod:`.sharing` shares across blocks; the others are the
per-layer auxiliary cores.

Deployable forms: ``structured`` (the same MatMul chain, reusing the layer's parameters so a
shared core stays one ONNX initializer), ``lowrank`` (the exact merge into two factors at the
cheapest bond, or a truncated SVD of ``W`` at a user rank) and ``dense``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import OptionError
from ..lowrank.decompose import split_svd
from ..lowrank.layer import LowRankLinear
from .base import LoweringUnavailable, StructuredLinear, dense_linear, register_layer_type
from .mpo_math import (balanced_factors, check_cores, check_factors, contract, core_to_matrix, full_bond_dims,
                       matrix_to_core, merge_cores, tt_svd)


def _core_shapes(out_factors: Sequence[int], in_factors: Sequence[int], bonds: Sequence[int]) -> list[tuple[int, ...]]:
    d = [1, *bonds, 1]
    return [(d[k], i, j, d[k + 1]) for k, (i, j) in enumerate(zip(out_factors, in_factors))]


class MPOChain(nn.Module):
    """The deployable MPO: reshapes and MatMuls over stored core matrices, plus the bias.

    Not a registered layer type (``inspect`` should see a lowered form, not a trainable MPO).
    """

    def __init__(self, mats: Sequence[nn.Parameter], out_factors: Sequence[int], in_factors: Sequence[int],
                 bonds: Sequence[int], bias: nn.Parameter | None) -> None:
        super().__init__()
        self.out_factors, self.in_factors, self.bonds = tuple(out_factors), tuple(in_factors), tuple(bonds)
        self.in_features, self.out_features = math.prod(in_factors), math.prod(out_factors)
        self.cores = nn.ParameterList(mats)
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = contract(x, list(self.cores), self.out_factors, self.in_factors, self.bonds)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"out_factors={self.out_factors}, in_factors={self.in_factors}, bonds={self.bonds}"


@register_layer_type("mpo")
class MPOLinear(StructuredLinear):
    """y = x·Wᵀ + b with W held as n MPO cores (stored in MatMul layout, see :mod:`.mpo_math`)."""

    def __init__(self, in_features: int, out_features: int, in_factors: Sequence[int], out_factors: Sequence[int],
                 bond_dims: Sequence[int], bias: bool = True, *, device: torch.device | None = None,
                 dtype: torch.dtype | None = None, name: str | None = None) -> None:
        super().__init__()
        n = check_cores(len(in_factors), where=name)
        self.in_factors = check_factors(in_factors, in_features, n, where=name, what="in_features")
        self.out_factors = check_factors(out_factors, out_features, n, where=name, what="out_features")
        full = full_bond_dims(self.out_factors, self.in_factors)
        bonds = tuple(bond_dims)
        if len(bonds) != n - 1 or not all(isinstance(d, int) and 1 <= d <= f for d, f in zip(bonds, full)):
            raise OptionError(f"bond dimensions {list(bonds)} do not fit {n} cores (expected {n - 1} ints, "
                              f"each between 1 and {full})", fix="rebuild the layer with MPOLinear.from_linear",
                              where=name)
        self.in_features, self.out_features, self.bond_dims = in_features, out_features, bonds
        kw = {"device": device, "dtype": dtype}
        self.cores = nn.ParameterList(nn.Parameter(torch.zeros(i * b, a * j, **kw))
                                      for a, i, j, b in self.core_shapes())
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, **kw))
        else:
            self.register_parameter("bias", None)

    # -- structure ---------------------------------------------------------------------------
    @property
    def num_cores(self) -> int:
        return len(self.in_factors)

    @property
    def center(self) -> int:
        """Index of the central core (``n // 2``: the middle one; for even n the right one of the two middle cores)."""
        return self.num_cores // 2

    def core_shapes(self) -> list[tuple[int, ...]]:
        """4-D shapes ``(d_{k-1}, i_k, j_k, d_k)`` of the cores."""
        return _core_shapes(self.out_factors, self.in_factors, self.bond_dims)

    def core(self, k: int) -> torch.Tensor:
        """Core ``k`` as its 4-D tensor (a view of the stored matrix)."""
        return matrix_to_core(self.cores[k], self.core_shapes()[k])

    def set_cores(self, cores: Sequence[torch.Tensor]) -> None:
        """Copy 4-D cores (any float dtype) into the stored parameters."""
        with torch.no_grad():
            for param, core in zip(self.cores, cores):
                param.copy_(core_to_matrix(core).to(param.dtype))

    # -- computation -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = contract(x, list(self.cores), self.out_factors, self.in_factors, self.bond_dims)
        return y if self.bias is None else y + self.bias

    def effective_weight(self) -> torch.Tensor:
        return merge_cores([self.core(k) for k in range(self.num_cores)]).reshape(self.out_features, self.in_features)

    def config(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features,
                "in_factors": list(self.in_factors), "out_factors": list(self.out_factors),
                "bond_dims": list(self.bond_dims), "bias": self.bias is not None}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MPOLinear:
        try:
            return cls(config["in_features"], config["out_features"], config["in_factors"], config["out_factors"],
                       config["bond_dims"], bias=bool(config.get("bias", True)))
        except (KeyError, TypeError) as exc:
            raise OptionError(f"MPO layer config {config!r} is incomplete or malformed ({exc})",
                              fix="save the layer's own config() (keys: in_features, out_features, in_factors, "
                                  "out_factors, bond_dims, bias)") from None

    @classmethod
    def from_linear(cls, linear: nn.Linear | LowRankLinear, *, cores: int = 3, bond_dim: int | None = None,
                    tol: float | None = None, in_factors: Sequence[int] | None = None,
                    out_factors: Sequence[int] | None = None, name: str | None = None) -> MPOLinear:
        """Decompose a dense (or U·V) layer by TT-SVD; exact when ``bond_dim`` and ``tol`` are None.

        ``bond_dim`` caps every bond; ``tol`` is a relative Frobenius error budget (bonds shrink to
        fit it). Factors default to :func:`~.mpo_math.balanced_factors`.
        """
        if isinstance(linear, LowRankLinear):
            weight, bias = linear.weight_product, linear.bias
        elif isinstance(linear, nn.Linear):
            weight, bias = linear.weight, linear.bias
        else:
            raise OptionError(f"cannot build an MPO from {type(linear).__name__} (expected nn.Linear or "
                              "LowRankLinear)", fix="select only linear layers for --structure mpo", where=name)
        check_cores(cores, where=name)
        if bond_dim is not None and (isinstance(bond_dim, bool) or not isinstance(bond_dim, int) or bond_dim < 1):
            raise OptionError(f"bond dimension {bond_dim!r} is invalid (expected an int >= 1 or None)",
                              fix="pass --structure-opt bond_dim=D with a positive integer, or omit it for exact cores", where=name)
        if tol is not None and not (isinstance(tol, (int, float)) and 0.0 <= tol < 1.0):
            raise OptionError(f"relative truncation tolerance {tol!r} is invalid (expected 0 <= tol < 1)",
                              fix="pass a tolerance such as 0.05, or omit it", where=name)
        out_f, in_f = weight.shape
        fo = (check_factors(out_factors, out_f, cores, where=name, what="out_features") if out_factors is not None
              else balanced_factors(out_f, cores, where=name, what="out_features"))
        fi = (check_factors(in_factors, in_f, cores, where=name, what="in_features") if in_factors is not None
              else balanced_factors(in_f, cores, where=name, what="in_features"))
        core_list = tt_svd(weight, fo, fi, bond_dim=bond_dim, tol=tol, center=cores // 2)
        layer = cls(in_f, out_f, fi, fo, [c.shape[-1] for c in core_list[:-1]], bias=bias is not None,
                    device=weight.device, dtype=weight.dtype, name=name)
        layer.set_cores(core_list)
        if bias is not None:
            with torch.no_grad():
                layer.bias.copy_(bias.detach())
        layer.train(linear.training)
        return layer

    # -- deployment --------------------------------------------------------------------------
    def merge_bond(self) -> int:
        """The bond (1-based, ``d_k``) where the two-factor merge has the fewest parameters."""
        def cost(k: int) -> int:
            left = math.prod(self.out_factors[:k]) * math.prod(self.in_factors[:k])
            right = math.prod(self.out_factors[k:]) * math.prod(self.in_factors[k:])
            return (left + right) * self.bond_dims[k - 1]

        return min(range(1, self.num_cores), key=cost)

    def available_lowerings(self, *, allow_dft: bool = False) -> dict[str, str | None]:
        return {"structured": None, "lowrank": None, "dense": None}

    def lowered(self, form: str, *, rank: int | None = None, allow_dft: bool = False) -> nn.Module:
        """``structured``: MatMul chain sharing this layer's parameters; ``lowrank``: two factors
        (exact central-bond merge, or ``LowRankLinear`` by truncated SVD when ``rank`` is given);
        ``dense``: ``nn.Linear``. ``rank`` only affects ``lowrank``. No form contains a DFT."""
        if form == "dense":
            return dense_linear(self)
        if form == "structured":
            return MPOChain(list(self.cores), self.out_factors, self.in_factors, self.bond_dims, self.bias)
        if form != "lowrank":
            raise LoweringUnavailable(f"unknown lowering {form!r} for an MPO layer",
                                      fix="choose one of: structured, lowrank, dense")
        if rank is not None:
            return self._truncated(rank)
        k = self.merge_bond()
        left = merge_cores([self.core(m) for m in range(k)]).detach()
        right = merge_cores([self.core(m) for m in range(k, self.num_cores)]).detach()
        out_f = (math.prod(self.out_factors[:k]), math.prod(self.out_factors[k:]))
        in_f = (math.prod(self.in_factors[:k]), math.prod(self.in_factors[k:]))
        mats = [nn.Parameter(core_to_matrix(c).clone()) for c in (left, right)]
        bias = None if self.bias is None else nn.Parameter(self.bias.detach().clone())
        return MPOChain(mats, out_f, in_f, (self.bond_dims[k - 1],), bias)

    def _truncated(self, rank: int) -> LowRankLinear:
        """U·V of the effective weight at ``rank`` (exact when ``rank`` >= its numerical rank)."""
        limit = min(self.in_features, self.out_features)
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= limit:
            raise OptionError(f"low-rank lowering rank {rank!r} is invalid for a {self.out_features}×"
                              f"{self.in_features} MPO layer (expected 1..{limit})",
                              fix=f"pass a rank between 1 and {limit}, or none for the exact two-factor merge")
        weight = self.effective_weight().detach()
        u, v, _ = split_svd(weight.to(torch.float64), rank)
        bias = None if self.bias is None else self.bias.detach()
        return LowRankLinear.from_factors(u.to(weight.dtype), v.to(weight.dtype), bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, out_factors={self.out_factors}, "
                f"in_factors={self.in_factors}, bond_dims={self.bond_dims}, bias={self.bias is not None}")
