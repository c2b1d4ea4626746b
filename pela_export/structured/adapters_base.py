"""What every "frozen base + trainable ΔW" layer shares (structured adapters and SNELL).

y = base(x) + x·ΔWᵀ, with the base an ``nn.Linear`` or a
:class:`~pela_export.lowrank.layer.LowRankLinear` that is adopted (not copied) and
frozen, and the bias left in the base. Subclasses only say how ΔW is parameterised,
materialised and applied; the three deployable forms are built here:

- ``structured``: a copy of the base (two GEMMs if low-rank) + the subclass's
  DFT-free delta module, summed;
- ``lowrank``: exact when the effective weight's numerical rank r makes two factors
  smaller than the dense matrix (checked by SVD, not assumed), else only at a rank the
  user passes (truncated SVD of W_base + ΔW);
- ``dense``: W_base + ΔW in one ``nn.Linear``.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..errors import OptionError
from ..lowrank.decompose import split_svd
from ..lowrank.layer import LowRankLinear
from .base import LoweringUnavailable, StructuredLinear, dense_linear

Base = nn.Linear | LowRankLinear
_COMMON = ("in_features", "out_features", "bias", "base")


def layer_where(name: str | None, kind: str) -> str:
    """How an error names the layer: its module path when known, else its kind."""
    return f"layer {name!r} ({kind})" if name else f"{kind} layer"


def check_positive_int(value: object, what: str, where: str, fix: str) -> int:
    """Validate a user-given count (never ``assert`` on user input)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f"{what} must be an integer >= 1, got {value!r}", fix=fix, where=where)
    return value


def numerical_rank(weight: torch.Tensor) -> int:
    """Rank with numpy's ``matrix_rank`` tolerance (σ_max·max(m, n)·eps of the weight's dtype)."""
    s = torch.linalg.svdvals(weight.detach().to(torch.float64))
    if s.numel() == 0 or float(s[0]) == 0.0:
        return 0
    tol = float(s[0]) * max(weight.shape) * torch.finfo(weight.dtype).eps
    return int((s > tol).sum())


class BasePlusDelta(nn.Module):
    """Deployed ``structured`` form: base (kept as is) + a DFT-free delta module."""

    def __init__(self, base: nn.Module, delta: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.delta = delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.delta(x)


class DeltaLinear(StructuredLinear):
    """Base class of the adapter layers; subclasses define ΔW."""

    def __init__(self, base: Base, *, name: str | None = None) -> None:
        super().__init__()
        if not isinstance(base, (nn.Linear, LowRankLinear)):
            raise OptionError(f"the base must be an nn.Linear or LowRankLinear, got {type(base).__name__}",
                              fix="apply the adapter to linear layers (or to a PELA-factorized model)",
                              where=layer_where(name, self.kind))
        self.in_features = base.in_features
        self.out_features = base.out_features
        self.layer_name = name
        self.base = base.requires_grad_(False)

    # --- what subclasses provide ---------------------------------------------------------------
    def delta_weight(self) -> torch.Tensor:
        """ΔW (out × in), materialised."""
        raise NotImplementedError

    def delta_forward(self, x: torch.Tensor) -> torch.Tensor:
        """x·ΔWᵀ in the training form (FFT where the structure is defined that way)."""
        return x @ self.delta_weight().t()

    def hyper(self) -> dict[str, Any]:
        """The ``from_base`` keyword arguments that fix the parameter shapes (JSON-able)."""
        return {}

    def structured_delta(self, *, allow_dft: bool = False) -> nn.Module:
        """A DFT-free module computing x·ΔWᵀ (FFT form only when ``allow_dft``)."""
        raise NotImplementedError

    def structured_reason(self, *, allow_dft: bool = False) -> str | None:
        """None when the structured form is available, else why not."""
        return None

    def lowering_notes(self) -> dict[str, str]:
        """Form → a remark for the report (e.g. SNELL's dense-stored delta)."""
        return {}

    # --- the layer ---------------------------------------------------------------------------
    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    @property
    def where(self) -> str:
        return layer_where(self.layer_name, self.kind)

    def base_weight(self) -> torch.Tensor:
        return self.base.weight_product if isinstance(self.base, LowRankLinear) else self.base.weight

    def _factory(self) -> dict[str, Any]:
        w = self.base.second.weight if isinstance(self.base, LowRankLinear) else self.base.weight
        return {"device": w.device, "dtype": w.dtype}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.delta_forward(x)

    def effective_weight(self) -> torch.Tensor:
        return self.base_weight() + self.delta_weight()

    def delta_params(self) -> int:
        """Elements of the trainable delta (what training updates)."""
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith("base."))

    # --- config ------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        base: dict[str, Any] = {"kind": "linear"}
        if isinstance(self.base, LowRankLinear):
            base = {"kind": "lowrank", "rank": self.base.rank}
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None, "base": base, **self.hyper()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DeltaLinear:
        base_cfg = config.get("base", {"kind": "linear"})
        in_f, out_f, bias = int(config["in_features"]), int(config["out_features"]), bool(config["bias"])
        if base_cfg.get("kind") == "lowrank":
            base: Base = LowRankLinear(in_f, out_f, int(base_cfg["rank"]), bias=bias)
        else:
            base = nn.Linear(in_f, out_f, bias=bias)
        hyper = {k: v for k, v in config.items() if k not in _COMMON}
        return cls.from_base(base, **hyper)

    @classmethod
    def from_base(cls, base: Base, **hyper: Any) -> DeltaLinear:
        raise NotImplementedError

    # --- lowerings ---------------------------------------------------------------------------
    def lowrank_reason(self) -> str | None:
        """None when an exact two-factor form is smaller than dense (numerical rank by SVD)."""
        with torch.no_grad():
            r = numerical_rank(self.effective_weight())
        if max(r, 1) * (self.in_features + self.out_features) < self.in_features * self.out_features:
            return None
        return (f"W_base + ΔW has numerical rank {r} of {min(self.in_features, self.out_features)}: "
                "an exact two-factor form is no smaller than dense; pass rank=N for a truncated SVD")

    def available_lowerings(self, *, allow_dft: bool = False) -> dict[str, str | None]:
        return {"structured": self.structured_reason(allow_dft=allow_dft),
                "lowrank": self.lowrank_reason(), "dense": None}

    def lowered(self, form: str, *, rank: int | None = None, allow_dft: bool = False) -> nn.Module:
        if form == "dense":
            return dense_linear(self)
        if form == "lowrank":
            return self._lowrank(rank)
        if form == "structured":
            reason = self.structured_reason(allow_dft=allow_dft)
            if reason is not None:
                raise LoweringUnavailable(f"structured form unavailable: {reason}",
                                          fix="choose the lowrank or dense form", where=self.where)
            with torch.no_grad():
                return BasePlusDelta(copy.deepcopy(self.base), self.structured_delta(allow_dft=allow_dft))
        raise LoweringUnavailable(f"unknown lowering {form!r}", fix="choose one of: structured, lowrank, dense",
                                  where=self.where)

    def _lowrank(self, rank: int | None) -> LowRankLinear:
        full = min(self.in_features, self.out_features)
        if rank is None:
            reason = self.lowrank_reason()
            if reason is not None:
                raise LoweringUnavailable(f"no exact low-rank form: {reason}",
                                          fix=f"pass rank=N (1..{full}) or choose the dense form", where=self.where)
            with torch.no_grad():
                rank = max(numerical_rank(self.effective_weight()), 1)
        elif isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= full:
            raise LoweringUnavailable(f"low-rank rank must be an integer in 1..{full}, got {rank!r}",
                                      fix=f"pass rank between 1 and {full}", where=self.where)
        with torch.no_grad():
            weight = self.effective_weight()
            u, v, _ = split_svd(weight.to(torch.float64), rank)
            bias = self.bias.detach() if self.bias is not None else None
            return LowRankLinear.from_factors(u.to(weight.dtype), v.to(weight.dtype), bias)
