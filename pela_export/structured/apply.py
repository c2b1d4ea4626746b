"""Turn the selected linears of a model into one registered structured layer type.

Selection reuses the low-rank stage's globs (:mod:`pela_export.lowrank.select`) so
"which layers" means the same thing for every method. Adapter-style kinds (a frozen
base plus a trainable delta; their class has ``from_base``) sit on the dense layer or
on a low-rank base made by the same SVD as PELA at ratio k, so their delta shows what
they add over plain low-rank. Every automatic choice is written into the
:class:`StructureRecord` (which base each layer got, and why), never made silently.
"""
from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import OptionError, PelaExportError
from ..lowrank.factorize import factorize_model
from ..lowrank.layer import LowRankLinear, dense_params
from ..lowrank.select import classify_layers, selection_rule, set_submodule
from .base import LAYER_TYPES, StructuredLinear, model_param_counts

BASES: tuple[str, ...] = ("dense", "lowrank")


@dataclass
class LayerEntry:
    """One structured layer: what it is, how it was built, what it costs."""

    name: str
    kind: str
    config: dict[str, Any]
    in_features: int
    out_features: int
    base: str  # "dense" | "lowrank (rank r)" | "none" (the layer replaces W) | ...
    trainable: int
    stored: int
    params_before: int
    note: str = ""


@dataclass
class StructureRecord:
    """What :func:`structure_model` did (or what a model holds now: see :meth:`from_model`)."""

    kind: str
    hyper: dict[str, Any] = field(default_factory=dict)
    base: str | None = None
    ratio: float | None = None
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    layers: list[LayerEntry] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_model(cls, model: nn.Module, kind: str = "mixed", *, bases: Mapping[str, str] | None = None,
                   notes: Mapping[str, str] | None = None, **meta: Any) -> StructureRecord:
        """Describe the structured layers ``model`` holds now (e.g. again after sharing or freezing)."""
        bases, notes = bases or {}, notes or {}
        rec = cls(kind=kind, **meta)
        for name, m in model.named_modules():
            if isinstance(m, StructuredLinear):
                pc = m.param_counts()
                bias = m.effective_bias is not None
                rec.layers.append(LayerEntry(
                    name, m.kind, m.config(), m.in_features, m.out_features, bases.get(name, _base_of(m)),
                    pc.trainable, pc.stored, dense_params(m.in_features, m.out_features, bias), notes.get(name, "")))
        rec.totals = model_param_counts(model).to_dict()
        return rec

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        """Markdown table, one row per layer (layer counts include shared tensors; totals count them once)."""
        lines = ["| layer | kind | shape (out x in) | base | trainable | stored | dense | note |",
                 "|---|---|---|---|---:|---:|---:|---|"]
        lines += [f"| {e.name} | {e.kind} | {e.out_features}x{e.in_features} | {e.base} | {e.trainable:,} | "
                  f"{e.stored:,} | {e.params_before:,} | {e.note} |" for e in self.layers]
        if self.totals:
            lines.append(f"\nmodel: {self.totals['trainable']:,} trainable / {self.totals['stored']:,} stored "
                         "parameters (a shared tensor counted once)")
        return "\n".join(lines)


def _base_of(layer: StructuredLinear) -> str:
    base = getattr(layer, "base", None)
    if isinstance(base, LowRankLinear):
        return f"lowrank (rank {base.rank})"
    return "dense" if isinstance(base, nn.Linear) else "none"


def is_adapter_kind(kind: str) -> bool:
    """Adapter-style kinds are built on a frozen base (``from_base``); others replace W (``from_linear``)."""
    return hasattr(LAYER_TYPES.get(kind), "from_base")


def select_layers(model: nn.Module, include: Sequence[str] | None = None,
                  exclude: Sequence[str] | None = None) -> list[tuple[str, nn.Module]]:
    """Eligible (name, layer): exact ``nn.Linear`` or ``LowRankLinear`` chosen as in :mod:`..lowrank.select`
    (structural default, or the globs; exclusion wins). The parts of a LowRankLinear or a structured layer
    are not layers."""
    def is_layer(m: nn.Module) -> bool:
        return type(m) is nn.Linear or isinstance(m, LowRankLinear)

    return [(c.name, c.module) for c in classify_layers(model, include, exclude, is_layer=is_layer,
                                                         opaque=(LowRankLinear, StructuredLinear)) if c.chosen]


def _as_dense(layer: LowRankLinear) -> nn.Linear:
    """U·V as one ``nn.Linear`` (for kinds that decompose a dense W themselves)."""
    bias = layer.bias
    out = nn.Linear(layer.in_features, layer.out_features, bias=bias is not None,
                    device=layer.second.weight.device, dtype=layer.second.weight.dtype)
    with torch.no_grad():
        out.weight.copy_(layer.weight_product)
        if bias is not None:
            out.bias.copy_(bias)
    return out


def _build(cls: type[StructuredLinear], adapter: bool, module: nn.Module, hyper: Mapping[str, Any],
           name: str) -> StructuredLinear:
    """Call the kind's constructor, naming the layer in any error it raises."""
    make = cls.from_base if adapter else cls.from_linear  # type: ignore[attr-defined]
    kwargs = dict(hyper)
    if "name" in inspect.signature(make).parameters and "name" not in kwargs:
        kwargs["name"] = name  # types that take it name the layer in their own errors
    try:
        return make(module, **kwargs)
    except PelaExportError as exc:
        if exc.where:
            raise
        try:
            err = type(exc)(exc.problem, fix=exc.fix, where=name)
        except TypeError:  # a subclass with a different constructor: keep it as it is
            raise exc from None
        raise err from None
    except (ValueError, TypeError, RuntimeError) as exc:
        shape = f"{getattr(module, 'out_features', '?')}x{getattr(module, 'in_features', '?')}"
        raise OptionError(f"{cls.kind} cannot be built for this {shape} layer with {dict(hyper)}: {exc}",
                          fix="change the hyper-parameters, or --exclude this layer", where=name) from exc


def structure_model(model: nn.Module, kind: str, *, include: Sequence[str] | None = None,
                    exclude: Sequence[str] | None = None, hyper: Mapping[str, Any] | None = None,
                    base: str = "dense", ratio: float | None = None,
                    inplace: bool = False) -> tuple[nn.Module, StructureRecord]:
    """Replace every selected linear with a ``kind`` layer; returns the model and the record.

    ``base`` applies to adapter kinds only: ``"dense"`` keeps the layer's W (an existing
    LowRankLinear stays low-rank), ``"lowrank"`` first factorizes it by plain SVD at
    ``ratio`` k (PELA's rank rule); a layer where low-rank would not save parameters keeps a
    dense base, which the record notes. A non-adapter kind given a LowRankLinear uses U·V.
    With ``inplace=True`` a failure part-way leaves the model partly converted.
    """
    cls = LAYER_TYPES.get(kind)
    adapter = is_adapter_kind(kind)
    if not adapter and not hasattr(cls, "from_linear"):
        raise OptionError(f"layer type {kind!r} has neither from_linear nor from_base, so it cannot convert a layer",
                          fix="build it with its own constructor, or pick another --structure kind")
    hyper = dict(hyper or {})
    if base not in BASES:
        raise OptionError(f"unknown base {base!r} for {kind!r}", fix=f"pass base as one of: {', '.join(BASES)}")
    if base == "lowrank" and not adapter:
        raise OptionError(f"{kind!r} replaces the weight itself, so it takes no low-rank base",
                          fix="use base='dense' (the default) for this kind, or an adapter kind with base='lowrank'")
    if base == "lowrank" and ratio is None:
        raise OptionError("base='lowrank' needs the ratio k of the SVD base", fix="pass ratio=4 (or --ratio 4)")
    if base == "dense" and ratio is not None:
        raise OptionError(f"ratio {ratio} is only used with base='lowrank'", fix="drop the ratio or pass base='lowrank'")
    target = model if inplace else copy.deepcopy(model)
    notes: dict[str, str] = {}
    if base == "lowrank":
        res = factorize_model(target, ratio=ratio, include=include, exclude=exclude, inplace=True)  # type: ignore[arg-type]
        notes = {r.name: f"dense base: {r.reason}" for r in res.layers if r.status == "skipped"}
    selected = select_layers(target, include, exclude)
    if not selected:
        from ..lowrank.select import explain_empty

        raise OptionError(f"no layer of {type(model).__name__} was chosen to structure: "
                          f"{explain_empty(model, classify_layers(model, include, exclude))}",
                          fix="pass --include GLOB naming the linears to structure (e.g. '*mlp.*'); "
                              "`pela-export inspect MODEL` lists every Linear and why it was left out")
    bases: dict[str, str] = {}
    for name, module in selected:
        src = module if adapter or not isinstance(module, LowRankLinear) else _as_dense(module)
        if src is not module:
            notes[name] = "built from U·V of the existing low-rank layer"
        layer = _build(cls, adapter, src, hyper, name)
        layer.train(module.training)
        set_submodule(target, name, layer)
        bases[name] = (f"lowrank (rank {module.rank})" if isinstance(module, LowRankLinear) else "dense") \
            if adapter else "none"
    inc, exc = selection_rule(include, exclude)
    rec = StructureRecord.from_model(target, kind=kind, hyper=hyper, base=base if adapter else None, ratio=ratio,
                                     include=inc, exclude=exc,
                                     bases=bases, notes=notes)
    return target, rec
