"""The common shape of every non-plain low-rank layer (MPO, structured adapters,
kernelized sparse deltas): one registry, one parameter accounting, and one way to
ask a layer for its deployable forms.

A layer *computes* in whatever form training needs (cores, FFTs, kernels) but is
*deployed* as one of three ONNX-friendly modules:

- ``structured`` — the structure kept as ordinary ops (MatMul chains, reshapes, Conv),
  never an FFT/DFT unless the caller allows it;
- ``lowrank`` — two GEMMs (:class:`~pela_export.lowrank.layer.LowRankLinear`), exact or
  at a rank the user chose;
- ``dense`` — one ``nn.Linear`` holding the materialised weight.

Shared tensors (an MPO central core used by several blocks) are the same
``nn.Parameter`` object registered in several layers, so accounting deduplicates
by tensor identity: a shared tensor counts once.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .._registry import Registry
from ..errors import OptionError

#: Deployable forms, in the order a tie is broken (fewest ops first is not implied).
LOWERINGS: tuple[str, ...] = ("structured", "lowrank", "dense")


class LoweringUnavailable(OptionError):
    """A layer cannot be deployed in the requested form (the message says why and what works)."""


@dataclass(frozen=True)
class ParamCounts:
    """Parameters of a layer or model: what training updates, what the checkpoint stores."""

    trainable: int
    stored: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class StructuredLinear(nn.Module):
    """Base class: a drop-in for ``nn.Linear(in_features, out_features)`` (inputs ``(..., in)``).

    Subclasses set ``kind`` (the registry name), implement :meth:`effective_weight`,
    :meth:`config`/:meth:`from_config` (rebuild with empty tensors; weights come from
    the state_dict) and :meth:`lowered`, and override :meth:`available_lowerings`.
    """

    kind: ClassVar[str] = ""
    in_features: int
    out_features: int

    def effective_weight(self) -> torch.Tensor:
        """The dense ``out × in`` matrix this layer applies (frozen base + delta), bias excluded."""
        raise NotImplementedError

    @property
    def effective_bias(self) -> torch.Tensor | None:
        """The bias added after the weight (None if the layer has none)."""
        return getattr(self, "bias", None)

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments (shapes and hyper-parameters, no tensors)."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> StructuredLinear:
        """An uninitialised layer with the right parameter shapes (load weights from a state_dict)."""
        raise NotImplementedError

    def available_lowerings(self, *, allow_dft: bool = False) -> dict[str, str | None]:
        """Form → None when available, else the reason it is not (shown in the report)."""
        return {"structured": "not implemented for this layer", "lowrank": "not exact for this layer",
                "dense": None}

    def lowered(self, form: str, *, rank: int | None = None, allow_dft: bool = False) -> nn.Module:
        """A module computing the same function in ``form`` (``rank`` forces a truncated low-rank form)."""
        if form == "dense":
            return dense_linear(self)
        raise LoweringUnavailable(f"{self.kind} layer cannot be lowered to {form!r}",
                                  fix=f"choose one of: {', '.join(k for k, v in self.available_lowerings(allow_dft=allow_dft).items() if v is None)}")

    def param_counts(self) -> ParamCounts:
        """This layer alone (shared tensors counted here too; model totals deduplicate)."""
        return count_unique(self.parameters(), self.buffers())


def dense_linear(layer: StructuredLinear) -> nn.Linear:
    """The materialised ``nn.Linear`` of any structured layer (the always-available form)."""
    weight = layer.effective_weight().detach()
    bias = layer.effective_bias
    out = nn.Linear(layer.in_features, layer.out_features, bias=bias is not None,
                    device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight)
        if bias is not None:
            out.bias.copy_(bias.detach())
    return out


def count_unique(params: Iterable[torch.Tensor], buffers: Iterable[torch.Tensor] = ()) -> ParamCounts:
    """Trainable / stored element counts with every tensor counted once (by identity)."""
    seen: set[int] = set()
    trainable = stored = 0
    for t in params:
        if id(t) in seen:
            continue
        seen.add(id(t))
        stored += t.numel()
        trainable += t.numel() if t.requires_grad else 0
    for b in buffers:
        if id(b) not in seen:
            seen.add(id(b))
            stored += b.numel()
    return ParamCounts(trainable=trainable, stored=stored)


def model_param_counts(model: nn.Module) -> ParamCounts:
    """Whole-model counts; ``nn.Module.parameters()`` already yields a shared Parameter once."""
    return count_unique(model.parameters(), model.buffers())


#: Registered layer types: name → StructuredLinear subclass ("mpo", "circulant", "toeplitz", "kronecker",
#: "ldr", "snell"; plain low-rank stays in pela_export.lowrank).
LAYER_TYPES: Registry[type[StructuredLinear]] = Registry("layer type", flag="--structure")


def register_layer_type(name: str):  # noqa: ANN201 - decorator
    """``@register_layer_type("mpo")`` on a StructuredLinear subclass (sets its ``kind``)."""
    def deco(cls: type[StructuredLinear]) -> type[StructuredLinear]:
        cls.kind = name
        return LAYER_TYPES.register(name)(cls)

    return deco
