"""The layers factorization applies to, each seen as a matrix W (out×in) and rebuilt from its factors.

``nn.Linear`` is its own weight; ``nn.Conv2d`` is viewed through the run's convolution decomposition
(:mod:`.conv`). Everything downstream (methods, rank policies, statistics, records) works on the matrix,
so a new layer type is one branch here.
"""
from __future__ import annotations

import torch
from torch import nn

from .conv import CONV_DECOMPOSITIONS, DEFAULT_CONV_DECOMPOSITION, LowRankConv2d, conv_matrix_shape, conv_skip_reason
from .layer import LowRankLayer, lowrank_from_linear


def is_candidate(module: nn.Module) -> bool:
    """Exact ``nn.Linear`` or ``nn.Conv2d`` (subclasses may change forward, so they are not touched)."""
    return type(module) in (nn.Linear, nn.Conv2d)


def layer_kind(module: nn.Module, conv: str | None = None) -> str:
    """``linear``, or ``conv-<decomposition>`` for a convolution."""
    return f"conv-{conv or DEFAULT_CONV_DECOMPOSITION}" if isinstance(module, nn.Conv2d) else "linear"


def skip_reason(module: nn.Module) -> str | None:
    """Why a candidate stays dense whatever its rank (None: it can be factorized)."""
    return conv_skip_reason(module) if isinstance(module, nn.Conv2d) else None


def matrix_shape(module: nn.Module, conv: str | None = None) -> tuple[int, int]:
    if isinstance(module, nn.Conv2d):
        return conv_matrix_shape(module, conv or DEFAULT_CONV_DECOMPOSITION)
    return module.out_features, module.in_features  # type: ignore[return-value]


def as_matrix(module: nn.Module, tensor: torch.Tensor, conv: str | None = None) -> torch.Tensor:
    """``tensor`` shaped like the layer's weight (the weight, or its gradient) as the factorized matrix."""
    if isinstance(module, nn.Conv2d):
        return CONV_DECOMPOSITIONS.get(conv or DEFAULT_CONV_DECOMPOSITION).matrix(tensor)
    return tensor


def layer_matrix(module: nn.Module, conv: str | None = None) -> torch.Tensor:
    return as_matrix(module, module.weight, conv)  # type: ignore[arg-type]


def input_rows(module: nn.Module, x: torch.Tensor, conv: str | None = None) -> torch.Tensor:
    """The rows (n, in) the matrix multiplies: a Linear's inputs, a convolution's unfolded patches."""
    if isinstance(module, nn.Conv2d):
        return CONV_DECOMPOSITIONS.get(conv or DEFAULT_CONV_DECOMPOSITION).patches(module, x)
    return x.reshape(-1, x.shape[-1])


def factorized(module: nn.Module, u: torch.Tensor, v: torch.Tensor, conv: str | None = None) -> LowRankLayer:
    """The replacement of ``module`` computing with U (out×r) and V (r×in)."""
    if isinstance(module, nn.Conv2d):
        return LowRankConv2d.from_conv(module, u, v, conv or DEFAULT_CONV_DECOMPOSITION)
    return lowrank_from_linear(module, u, v)  # type: ignore[arg-type]


def empty_factorized(module: nn.Module, rank: int, conv: str | None = None) -> LowRankLayer:
    """An uninitialised replacement (weights come from a checkpoint)."""
    from .layer import LowRankLinear

    if isinstance(module, nn.Conv2d):
        return LowRankConv2d(module, rank, conv or DEFAULT_CONV_DECOMPOSITION)
    return LowRankLinear(module.in_features, module.out_features, rank,  # type: ignore[arg-type]
                         bias=module.bias is not None)


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
