"""Layers whose ``.weight`` model code reads directly instead of calling the layer.

Some architectures compute with a layer's parameters rather than through it, e.g. BEiT/EVA attention:
``F.linear(x, self.qkv.weight, qkv_bias)``. A trial forward with a probe on every candidate finds those reads
(where, and what the weight was used for) before anything is replaced:

* used only as the weight of ``F.linear``: the factorized layer serves it — its ``weight`` is a
  :class:`FactoredWeight` that turns ``F.linear(x, w, b)`` into the two factor GEMMs, so no dense U·V
  appears in the exported graph;
* any other use (a transpose, a concatenation, a conv kernel): the layer stays dense, with that reason.

Never a crash inside torch.export because a weight disappeared.

The same trial (run twice, on different inputs) finds layers whose input does not depend on the model's input
(SwinV2's continuous position-bias MLP, fed by fixed coordinates): the exporter folds them into a constant table,
so factorizing them saves nothing in the graph and only breaks the factor check. They stay dense, with that reason.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

_HARMLESS = ("shape", "dtype", "device", "ndim")  # what a FactoredWeight answers too


@dataclass
class DirectRead:
    """What the trial forward saw of one layer's weight outside its own forward."""

    where: str  # file:line in function, of the first read
    other_uses: list[str] = field(default_factory=list)  # anything but F.linear's weight argument

    @property
    def served(self) -> bool:
        """Every use was ``F.linear(x, weight, b)``, which a factorized Linear serves."""
        return not self.other_uses

    def reason(self) -> str:
        if self.served:
            return (f"model code passes its .weight to F.linear directly ({self.where}); served by the two factors "
                    "(no dense product in the graph)")
        return (f"model code reads its .weight directly ({self.where}) and uses it for "
                f"{', '.join(sorted(set(self.other_uses)))}, which two factors cannot stand in for; left dense")


def _bind_linear(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    bound = dict(zip(("input", "weight", "bias"), args))
    bound.update(kwargs)
    return bound


class FactoredWeight:
    """A factorized Linear's ``weight``: usable as ``F.linear``'s weight (computed with the factors)."""

    def __init__(self, layer: nn.Module) -> None:
        self._layer = layer

    def __getattr__(self, attr: str) -> Any:
        raise AttributeError(f"the weight of a factorized {type(self._layer).__name__} is not a tensor ({attr!r} "
                             "asked): it can only be passed as F.linear's weight; factorize with a trial forward "
                             "(the pipeline always runs one) to keep such layers dense")

    shape = property(lambda self: torch.Size((self._layer.out_features, self._layer.in_features)))
    dtype = property(lambda self: self._layer.first.weight.dtype)
    device = property(lambda self: self._layer.first.weight.device)
    ndim = 2

    @classmethod
    def __torch_function__(cls, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (),
                           kwargs: Mapping[str, Any] | None = None) -> Any:
        bound = _bind_linear(args, kwargs or {})
        w = bound.get("weight")
        if func is F.linear and isinstance(w, FactoredWeight) and not isinstance(bound.get("input"), FactoredWeight):
            layer = w._layer
            return F.linear(F.linear(bound["input"], layer.first.weight), layer.second.weight, bound.get("bias"))
        raise TypeError(f"the weight of factorized layer {type(w._layer).__name__ if isinstance(w, FactoredWeight) else '?'} "
                        f"can only be used as F.linear's weight, not in {getattr(func, '__name__', func)}")


class _ProbeWeight:
    """The dense weight during the trial forward: records each use, then computes with the real tensor."""

    def __init__(self, real: torch.Tensor, record: DirectRead, linear: bool) -> None:
        self._real, self._record, self._linear = real, record, linear

    def __getattr__(self, attr: str) -> Any:
        if attr not in _HARMLESS:
            self._record.other_uses.append(f".weight.{attr}")
        return getattr(self._real, attr)

    @classmethod
    def __torch_function__(cls, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (),
                           kwargs: Mapping[str, Any] | None = None) -> Any:
        kwargs = dict(kwargs or {})
        bound = _bind_linear(args, kwargs)
        probes = [a for a in (*args, *kwargs.values()) if isinstance(a, _ProbeWeight)]
        for p in probes:
            as_weight = func is F.linear and bound.get("weight") is p and p._linear
            if not as_weight:
                p._record.other_uses.append(getattr(func, "__name__", str(func)))

        def real(a: Any) -> Any:
            return a._real if isinstance(a, _ProbeWeight) else a

        return func(*(real(a) for a in args), **{k: real(v) for k, v in kwargs.items()})


def _fingerprint(args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    x = args[0] if args and isinstance(args[0], torch.Tensor) else None
    if x is None or not x.is_floating_point():
        return None
    flat = x.detach().reshape(-1).double()
    return (tuple(x.shape), float(flat.sum()), float((flat * flat).sum()), tuple(flat[:8].tolist()))


def _probe_class(cls: type[nn.Module], seen: dict[str, DirectRead], name: str,
                 inputs: dict[str, list[tuple[Any, ...] | None]]) -> type[nn.Module]:
    """A subclass of ``cls`` handing out probes for reads of ``weight`` not made by its own ``forward``."""
    linear = issubclass(cls, nn.Linear)

    def __getattr__(self: nn.Module, attr: str) -> Any:
        value = cls.__getattr__(self, attr)  # type: ignore[attr-defined]
        if attr != "weight" or self.__dict__.get("_pela_in_forward", False):
            return value
        if name not in seen:
            frame = sys._getframe(1)
            where = "/".join(frame.f_code.co_filename.replace("\\", "/").split("/")[-3:])
            seen[name] = DirectRead(f"{where}:{frame.f_lineno} in {frame.f_code.co_name}")
        return _ProbeWeight(value, seen[name], linear)

    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        inputs.setdefault(name, []).append(_fingerprint(args))
        self.__dict__["_pela_in_forward"] = True
        try:
            return cls.forward(self, *args, **kwargs)
        finally:
            self.__dict__["_pela_in_forward"] = False

    return type(cls.__name__, (cls,), {"__getattr__": __getattr__, "forward": forward})


@dataclass
class TrialFindings:
    """What the trial forwards showed: direct weight reads, and layers fed the same input whatever the model's."""

    reads: dict[str, DirectRead] = field(default_factory=dict)
    constant_input: set[str] = field(default_factory=set)


CONSTANT_INPUT_REASON = ("its input does not depend on the model's input (e.g. a position-bias MLP fed by fixed "
                         "coordinates): the exporter folds it into a constant table, so factorizing saves nothing; "
                         "left dense")


def probe_layers(model: nn.Module, names: Iterable[str], run: Callable[[nn.Module], object],
                 runs: int = 2) -> TrialFindings:
    """Call ``run(model)`` ``runs`` times (it should feed different inputs each time) with every layer in ``names``
    probed; the model is restored. An exception in a trial forward propagates (the model cannot run at all)."""
    found = TrialFindings()
    inputs: dict[str, list[tuple[Any, ...] | None]] = {}
    swapped: list[tuple[nn.Module, type[nn.Module]]] = []
    try:
        for name in names:
            module = model.get_submodule(name)
            cls = type(module)
            module.__class__ = _probe_class(cls, found.reads, name, inputs)
            swapped.append((module, cls))
        for _ in range(runs):
            run(model)
    finally:
        for module, cls in swapped:
            module.__class__ = cls
            module.__dict__.pop("_pela_in_forward", None)
    if runs > 1:
        found.constant_input = {n for n, seen in inputs.items()
                                if len(seen) >= runs and seen[0] is not None and all(f == seen[0] for f in seen)}
    return found


def find_direct_weight_reads(model: nn.Module, names: Iterable[str],
                             run: Callable[[nn.Module], object]) -> dict[str, DirectRead]:
    """``{layer name: DirectRead}`` over one call of ``run(model)``."""
    return probe_layers(model, names, run, runs=1).reads
