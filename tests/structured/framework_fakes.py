"""Tiny StructuredLinear types and a tiny block model for the framework tests, so they
do not depend on the real MPO/adapter/SNELL modules (written in parallel)."""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pela_export.lowrank.layer import LowRankLinear
from pela_export.structured.base import LoweringUnavailable, StructuredLinear, register_layer_type


@register_layer_type("test-chain")
class ChainLinear(StructuredLinear):
    """W = U·C·V with a square core C that several layers may share (a 3-core MPO in miniature)."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.u = nn.Parameter(torch.empty(out_features, rank))
        self.core = nn.Parameter(torch.eye(rank))
        self.v = nn.Parameter(torch.empty(rank, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(F.linear(x, self.v), self.core), self.u, self.bias)

    def effective_weight(self) -> torch.Tensor:
        return self.u @ self.core @ self.v

    def config(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features, "rank": self.rank,
                "bias": self.bias is not None}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ChainLinear:
        return cls(**config)

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, rank: int) -> ChainLinear:
        if rank > min(linear.in_features, linear.out_features):
            raise ValueError(f"rank {rank} exceeds min(in, out)")
        u, s, vh = torch.linalg.svd(linear.weight.detach().double(), full_matrices=False)
        layer = cls(linear.in_features, linear.out_features, rank, bias=linear.bias is not None)
        with torch.no_grad():
            layer.u.copy_((u[:, :rank] * s[:rank]).float())
            layer.v.copy_(vh[:rank].float())
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def available_lowerings(self, *, allow_dft: bool = False) -> dict[str, str | None]:
        return {"structured": None, "lowrank": None, "dense": None}

    def lowered(self, form: str, *, rank: int | None = None, allow_dft: bool = False) -> nn.Module:
        if form == "lowrank":
            w = (self.u @ self.core).detach()
            if rank is not None:
                full = (w @ self.v).detach().double()
                u, s, vh = torch.linalg.svd(full, full_matrices=False)
                return LowRankLinear.from_factors((u[:, :rank] * s[:rank]).float(), vh[:rank].float(),
                                                  None if self.bias is None else self.bias.detach())
            return LowRankLinear.from_factors(w, self.v.detach(), None if self.bias is None else self.bias.detach())
        if form == "structured":
            v = nn.Linear(self.in_features, self.rank, bias=False)
            c = nn.Linear(self.rank, self.rank, bias=False)
            u = nn.Linear(self.rank, self.out_features, bias=self.bias is not None)
            v.weight, c.weight, u.weight = self.v, self.core, self.u  # share, so a shared core deploys once
            if self.bias is not None:
                u.bias = self.bias
            return nn.Sequential(v, c, u)
        return super().lowered(form, rank=rank, allow_dft=allow_dft)


class _RankOneDelta(nn.Module):
    def __init__(self, base: nn.Module, a: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.base = base
        self.b = nn.Linear(b.numel(), 1, bias=False)
        self.a = nn.Linear(1, a.numel(), bias=False)
        with torch.no_grad():
            self.b.weight.copy_(b[None])
            self.a.weight.copy_(a[:, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.a(self.b(x))


@register_layer_type("test-adapter")
class RankOneAdapter(StructuredLinear):
    """Frozen base (dense or low-rank) + a·bᵀ with ``a`` zero-initialised (ΔW = 0 at init)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, base_rank: int | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.base = (nn.Linear(in_features, out_features, bias=bias) if base_rank is None
                     else LowRankLinear(in_features, out_features, base_rank, bias=bias))
        self.base.requires_grad_(False)
        self.a = nn.Parameter(torch.zeros(out_features))
        self.b = nn.Parameter(torch.randn(in_features) / math.sqrt(in_features))

    @property
    def effective_bias(self) -> torch.Tensor | None:
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.b)[..., None] * self.a

    def effective_weight(self) -> torch.Tensor:
        w = self.base.weight_product if isinstance(self.base, LowRankLinear) else self.base.weight
        return w + torch.outer(self.a, self.b)

    def config(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.base.bias is not None,
                "base_rank": self.base.rank if isinstance(self.base, LowRankLinear) else None}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RankOneAdapter:
        return cls(**config)

    @classmethod
    def from_base(cls, base: nn.Module, *, seed: int = 0) -> RankOneAdapter:
        layer = cls(base.in_features, base.out_features, bias=base.bias is not None,
                    base_rank=base.rank if isinstance(base, LowRankLinear) else None)
        layer.base = base
        base.requires_grad_(False)
        with torch.no_grad():
            layer.b.copy_(torch.randn(base.in_features, generator=torch.Generator().manual_seed(seed)))
        return layer

    def available_lowerings(self, *, allow_dft: bool = False) -> dict[str, str | None]:
        return {"structured": None, "lowrank": "base + a rank-one delta is not exactly two small factors",
                "dense": None}

    def lowered(self, form: str, *, rank: int | None = None, allow_dft: bool = False) -> nn.Module:
        if form == "structured":
            return _RankOneDelta(copy.deepcopy(self.base), self.a.detach(), self.b.detach())
        if form == "lowrank":
            raise LoweringUnavailable("test-adapter has no low-rank form", fix="use structured or dense")
        return super().lowered(form, rank=rank, allow_dft=allow_dft)


class _FFTCirculant(nn.Module):
    def __init__(self, c: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("c", c.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[-1]
        return torch.fft.irfft(torch.fft.rfft(x, dim=-1) * torch.fft.rfft(self.c), n=n, dim=-1)


@register_layer_type("test-fft")
class FFTCirculant(StructuredLinear):
    """y = c ⊛ x (circular convolution); its structured form needs a DFT. ``cheat`` claims it does not."""

    def __init__(self, features: int, cheat: bool = False) -> None:
        super().__init__()
        self.in_features = self.out_features = features
        self.cheat = cheat
        self.c = nn.Parameter(torch.randn(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.effective_weight().T

    def effective_weight(self) -> torch.Tensor:
        n = self.in_features
        idx = (torch.arange(n)[:, None] - torch.arange(n)[None, :]) % n
        return self.c[idx]

    def config(self) -> dict[str, Any]:
        return {"features": self.in_features, "cheat": self.cheat}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FFTCirculant:
        return cls(**config)

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, cheat: bool = False) -> FFTCirculant:
        layer = cls(linear.in_features, cheat=cheat)
        with torch.no_grad():
            layer.c.copy_(linear.weight[:, 0])
        return layer

    def available_lowerings(self, *, allow_dft: bool = False) -> dict[str, str | None]:
        ok = allow_dft or self.cheat
        return {"structured": None if ok else "needs an FFT (ONNX DFT): pass allow_dft=True",
                "lowrank": "a circulant matrix is generally full rank", "dense": None}

    def lowered(self, form: str, *, rank: int | None = None, allow_dft: bool = False) -> nn.Module:
        if form == "structured" and (allow_dft or self.cheat):
            return _FFTCirculant(self.c)
        return super().lowered(form, rank=rank, allow_dft=allow_dft)


class PatchEmbed(nn.Identity):
    num_patches = 4


class Block(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(dim, dim)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, hidden)
        self.mlp.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn.qkv(x)
        return x + self.mlp.fc2(torch.relu(self.mlp.fc1(x)))


class TinyNet(nn.Module):
    """(B, 5 tokens, 8) → blocks → mean → head(4): names match the default include globs."""

    default_input_shape = (5, 8)
    num_prefix_tokens = 1

    def __init__(self, dim: int = 8, hidden: int = 16, depth: int = 2, classes: int = 4) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed()
        self.blocks = nn.ModuleList(Block(dim, hidden) for _ in range(depth))
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for b in self.blocks:
            x = b(x)
        return self.head(x.mean(1))


def tiny_model() -> TinyNet:
    """Factory for ``pela-export inspect framework_fakes:tiny_model`` (seeded)."""
    torch.manual_seed(0)
    return TinyNet().eval()


def tie_cores(model: nn.Module, names: list[str]) -> None:
    """Share the first named ChainLinear's core with the others."""
    first = model.get_submodule(names[0]).core
    for n in names[1:]:
        model.get_submodule(n).core = first


#: Real layer types: kind -> (module that registers it, structure_model kwargs for TinyNet).
REAL_KINDS: dict[str, tuple[str, dict[str, Any]]] = {
    "mpo": ("mpo", {"hyper": {"cores": 3}}),
    "circulant": ("adapters", {"base": "lowrank", "ratio": 2}),
    "toeplitz": ("adapters", {"base": "lowrank", "ratio": 2}),
    "kronecker": ("adapters", {"base": "lowrank", "ratio": 2}),
    "ldr": ("adapters", {"base": "lowrank", "ratio": 2}),
    "snell": ("snell", {"base": "lowrank", "ratio": 2, "hyper": {"rank": 4, "density": 0.2}}),
}


def real_kind(kind: str) -> dict[str, Any]:
    """structure_model kwargs for a real layer type; skips the test when its module does not exist yet."""
    import pytest

    module, kwargs = REAL_KINDS[kind]
    pytest.importorskip(f"pela_export.structured.{module}",
                        reason=f"pela_export/structured/{module}.py (layer type {kind!r}) is not written yet")
    return copy.deepcopy(kwargs)


def perturb_trainable(model: nn.Module, scale: float = 0.05, seed: int = 0) -> None:
    """Move every trainable parameter off its initialisation (so ΔW != 0 and cores differ)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn(p.shape, generator=g))
