"""Low-rank convolutions: a ``nn.Conv2d`` replaced by two convolutions, as AIMET's spatial/channel SVD.

Both decompositions view the kernel W (O×C×kh×kw) as a matrix, so every registered ``--method`` and rank
policy applies unchanged (:data:`CONV_DECOMPOSITIONS`, flag ``--conv-decomposition``):

* ``channel``: W → (O, C·kh·kw). First a kh×kw conv with r output channels (the layer's stride, padding,
  dilation), then a 1×1 conv r → O carrying the bias. Inputs for the weighted methods are the layer's
  unfolded patches, so ``whiten``/``asvd``/``fwsvd`` weigh exactly what the first conv sees.
* ``spatial``: W → (O·kw, C·kh). First a kh×1 conv (vertical stride/padding/dilation), then a 1×kw conv
  (horizontal ones). Exact for zero padding. Weighted methods see the vertical kh×1 patches, a proxy: the
  horizontal sum of the second conv is not in their objective.

Grouped convolutions, non-zero padding modes and string padding are left dense with the reason.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .._registry import Registry
from .layer import LowRankLayer


@dataclass(frozen=True)
class ConvDecompositionSpec:
    """How a kernel becomes a matrix, how factors become two convolutions, and what the weighted methods see."""

    name: str
    summary: str
    matrix: Callable[[torch.Tensor], torch.Tensor]  # W (O,C,kh,kw) -> (out, in); linear in W (Fisher uses it too)
    first_conv: Callable[[nn.Conv2d, int], nn.Conv2d]
    second_conv: Callable[[nn.Conv2d, int], nn.Conv2d]
    first_weight: Callable[[nn.Conv2d, torch.Tensor], torch.Tensor]  # V (r, in) -> first conv's weight
    second_weight: Callable[[nn.Conv2d, torch.Tensor], torch.Tensor]  # U (out, r) -> second conv's weight
    patches: Callable[[nn.Conv2d, torch.Tensor], torch.Tensor]  # input x -> rows (n, in) for activation stats


CONV_DECOMPOSITIONS: Registry[ConvDecompositionSpec] = Registry("convolution decomposition",
                                                                flag="--conv-decomposition")
DEFAULT_CONV_DECOMPOSITION = "channel"


def register_conv_decomposition(spec: ConvDecompositionSpec) -> ConvDecompositionSpec:
    return CONV_DECOMPOSITIONS.register(spec.name)(spec)


def _conv(conv: nn.Conv2d, cin: int, cout: int, kernel: tuple[int, int], stride: tuple[int, int],
          padding: tuple[int, int], dilation: tuple[int, int], bias: bool) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, bias=bias,
                     device=conv.weight.device, dtype=conv.weight.dtype)


def _pair(conv: nn.Conv2d) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
    k, s, p, d = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    return (k[0], k[1]), (s[0], s[1]), (int(p[0]), int(p[1])), (d[0], d[1])  # type: ignore[index]


def _rows(cols: torch.Tensor) -> torch.Tensor:
    """(N, features, L) from ``F.unfold`` → (N·L, features)."""
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


register_conv_decomposition(ConvDecompositionSpec(
    "channel", "kh×kw conv to r channels, then 1×1 conv (AIMET channel SVD)",
    matrix=lambda w: w.reshape(w.shape[0], -1),
    first_conv=lambda c, r: _conv(c, c.in_channels, r, *_pair(c), bias=False),
    second_conv=lambda c, r: _conv(c, r, c.out_channels, (1, 1), (1, 1), (0, 0), (1, 1), c.bias is not None),
    first_weight=lambda c, v: v.reshape(v.shape[0], c.in_channels, *c.kernel_size),
    second_weight=lambda c, u: u.reshape(u.shape[0], u.shape[1], 1, 1),
    patches=lambda c, x: _rows(F.unfold(x, c.kernel_size, dilation=c.dilation, padding=c.padding,  # type: ignore[arg-type]
                                        stride=c.stride)),
))


def _spatial_first(c: nn.Conv2d, r: int) -> nn.Conv2d:
    (kh, _), (sh, _), (ph, _), (dh, _) = _pair(c)
    return _conv(c, c.in_channels, r, (kh, 1), (sh, 1), (ph, 0), (dh, 1), bias=False)


def _spatial_second(c: nn.Conv2d, r: int) -> nn.Conv2d:
    (_, kw), (_, sw), (_, pw), (_, dw) = _pair(c)
    return _conv(c, r, c.out_channels, (1, kw), (1, sw), (0, pw), (1, dw), c.bias is not None)


def _spatial_patches(c: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    (kh, _), (sh, _), (ph, _), (dh, _) = _pair(c)
    return _rows(F.unfold(x, (kh, 1), dilation=(dh, 1), padding=(ph, 0), stride=(sh, 1)))


register_conv_decomposition(ConvDecompositionSpec(
    "spatial", "kh×1 conv to r channels, then 1×kw conv (AIMET spatial SVD)",
    # rows (o, j) and columns (c, i): W[o, c, i, j] = Σ_r U[(o, j), r] V[r, (c, i)]
    matrix=lambda w: w.permute(0, 3, 1, 2).reshape(w.shape[0] * w.shape[3], w.shape[1] * w.shape[2]),
    first_conv=_spatial_first,
    second_conv=_spatial_second,
    first_weight=lambda c, v: v.reshape(v.shape[0], c.in_channels, c.kernel_size[0], 1),
    second_weight=lambda c, u: u.reshape(c.out_channels, c.kernel_size[1], u.shape[1]).permute(0, 2, 1).unsqueeze(2),
    patches=_spatial_patches,
))


def conv_skip_reason(conv: nn.Conv2d) -> str | None:
    """Why ``conv`` stays dense whatever the rank (None: it can be factorized)."""
    if conv.groups != 1:
        return (f"grouped convolution (groups={conv.groups}): each group is already a small matrix"
                + (" (depthwise)" if conv.groups == conv.in_channels else ""))
    if conv.padding_mode != "zeros":
        return f"padding_mode={conv.padding_mode!r}: the two factor convolutions are exact only for zero padding"
    if isinstance(conv.padding, str):
        return f"padding={conv.padding!r} (string padding): give explicit padding to factorize it"
    return None


def conv_matrix_shape(conv: nn.Conv2d, decomposition: str) -> tuple[int, int]:
    """(out, in) of the matrix ``decomposition`` factorizes."""
    o, c, kh, kw = conv.weight.shape
    return (o, c * kh * kw) if decomposition == "channel" else (o * kw, c * kh)


class LowRankConv2d(LowRankLayer):
    """A Conv2d as two convolutions (``first`` to ``rank`` channels, ``second`` back to ``out_channels``)."""

    def __init__(self, conv: nn.Conv2d, rank: int, decomposition: str = DEFAULT_CONV_DECOMPOSITION) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        spec = CONV_DECOMPOSITIONS.get(decomposition)
        self.decomposition = decomposition
        self.out_features, self.in_features = conv_matrix_shape(conv, decomposition)
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size = tuple(conv.kernel_size)
        self.rank = rank
        self.first = spec.first_conv(conv, rank)
        self.second = spec.second_conv(conv, rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))

    @property
    def weight_product(self) -> torch.Tensor:
        """The dense kernel (O×C×kh×kw) this layer represents."""
        u, v = self.factor_matrices()
        m = u @ v
        o, c, (kh, kw) = self.out_channels, self.in_channels, self.kernel_size
        if self.decomposition == "channel":
            return m.reshape(o, c, kh, kw)
        return m.reshape(o, kw, c, kh).permute(0, 2, 3, 1)

    def factor_matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(U, V) as the matrices of :func:`conv_matrix_shape` (the inverse of loading them)."""
        v = self.first.weight.reshape(self.rank, -1)
        w2 = self.second.weight  # (O, r, 1, kw) or (O, r, 1, 1)
        u = w2.squeeze(2).permute(0, 2, 1).reshape(-1, self.rank)
        return u, v

    @property
    def bias(self) -> torch.Tensor | None:
        return self.second.bias

    @property
    def dense_shape(self) -> tuple[int, ...]:
        return (self.out_channels, self.in_channels, *self.kernel_size)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, rank={self.rank}, "
                f"decomposition={self.decomposition}")

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, u: torch.Tensor, v: torch.Tensor,
                  decomposition: str = DEFAULT_CONV_DECOMPOSITION) -> LowRankConv2d:
        """The factorized replacement of ``conv`` from U (out×r) and V (r×in); bias and train/eval mode kept."""
        spec = CONV_DECOMPOSITIONS.get(decomposition)
        layer = cls(conv, u.shape[1], decomposition)
        with torch.no_grad():
            layer.first.weight.copy_(spec.first_weight(conv, v))
            layer.second.weight.copy_(spec.second_weight(conv, u))
            if conv.bias is not None:
                layer.second.bias.copy_(conv.bias.detach())  # type: ignore[union-attr]
        layer.train(conv.training)
        return layer
