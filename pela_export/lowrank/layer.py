"""``LowRankLinear``: a dense ``nn.Linear`` replaced by two GEMMs, x → V → U.

Kept as two ordinary ``nn.Linear`` children (``first`` = V, ``second`` = U) so
every exporter lowers it to two MatMul/Gemm nodes with their own initializers,
which is what makes the parameter saving survive into ONNX and TensorRT.
"""
from __future__ import annotations

import torch
from torch import nn

from .direct import FactoredWeight


class LowRankLayer(nn.Module):
    """A dense layer as two (``first`` = V, ``second`` = U): what training, export checks and reports look for.

    ``in_features``/``out_features`` are the factorized matrix's (for a convolution, see :mod:`.conv`);
    ``weight_product`` is the dense weight in the original layer's shape.
    """

    in_features: int
    out_features: int
    rank: int
    first: nn.Module
    second: nn.Module

    @property
    def weight_product(self) -> torch.Tensor:
        raise NotImplementedError

    def factor_matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(U out×r, V r×in) as matrices."""
        raise NotImplementedError

    @property
    def dense_shape(self) -> tuple[int, ...]:
        """Shape of the dense weight this layer replaces (what must not reappear in an exported graph)."""
        return (self.out_features, self.in_features)


class LowRankLinear(LowRankLayer):
    """y = U (V x) + b with V: r×in (no bias) and U: out×r (carries the bias)."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True,
                 device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.in_features = in_features
        self.out_features = out_features
        self.rank = rank
        self.first = nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype)
        self.second = nn.Linear(rank, out_features, bias=bias, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))

    @property
    def weight_product(self) -> torch.Tensor:
        """The dense matrix U·V this layer represents (out × in)."""
        return self.second.weight @ self.first.weight

    def factor_matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.second.weight, self.first.weight

    @property
    def weight(self) -> FactoredWeight:
        """For model code that calls ``F.linear(x, layer.weight, b)`` itself: computed with the factors."""
        return FactoredWeight(self)

    @property
    def bias(self) -> torch.Tensor | None:
        return self.second.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, bias={self.second.bias is not None}"

    @classmethod
    def from_factors(cls, u: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> LowRankLinear:
        """Build from U (out×r) and V (r×in); copies the tensors."""
        out_f, r = u.shape
        r2, in_f = v.shape
        if r != r2:
            raise ValueError(f"factor ranks differ: U is {tuple(u.shape)}, V is {tuple(v.shape)}")
        layer = cls(in_f, out_f, r, bias=bias is not None, device=u.device, dtype=u.dtype)
        with torch.no_grad():
            layer.first.weight.copy_(v)
            layer.second.weight.copy_(u)
            if bias is not None:
                layer.second.bias.copy_(bias)
        return layer


def lowrank_from_linear(linear: nn.Linear, u: torch.Tensor, v: torch.Tensor) -> LowRankLinear:
    """The factorized replacement of ``linear``: its bias and its train/eval mode carried over."""
    layer = LowRankLinear.from_factors(u, v, linear.bias.detach() if linear.bias is not None else None)
    layer.train(linear.training)
    return layer


def dense_params(in_features: int, out_features: int, bias: bool) -> int:
    return in_features * out_features + (out_features if bias else 0)


def lowrank_params(in_features: int, out_features: int, rank: int, bias: bool) -> int:
    return rank * (in_features + out_features) + (out_features if bias else 0)
