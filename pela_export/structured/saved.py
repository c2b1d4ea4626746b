"""Saving a structured model as a plain ``state_dict`` plus a JSON spec, and
rebuilding it on the original architecture.

The spec says which layer became which type (``{"name", "kind", "config"}``; plain
``LowRankLinear`` layers appear as kind ``"lowrank"``), which parameters are one shared
tensor (``sharing``: groups of qualified names), and which are frozen. Loading rebuilds
each layer from its config, re-ties the shared tensors *before* loading the weights (a
shared central core must stay one tensor, or training and accounting would silently
diverge), then loads the state_dict strictly.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import atomic_path, write_json_atomic
from ..errors import ArtifactError, CheckpointError, OptionError, PelaExportError
from ..lowrank.layer import LowRankLinear
from ..lowrank.select import set_submodule
from .base import LAYER_TYPES, StructuredLinear

SPEC_VERSION = 1
SPEC_NAME = "structured.json"
CHECKPOINT_NAME = "structured.pt"
#: Modules that register the layer types (imported on load so a saved model can name any of them).
TYPE_MODULES: tuple[str, ...] = ("mpo", "adapters", "snell")
_FIX_RESAVE = "re-save the structured model (save_structured) with this version of pela-export"


def register_known_types() -> list[str]:
    """Import the layer-type modules that exist; returns the registered kinds."""
    for mod in TYPE_MODULES:
        full = f"{__package__}.{mod}"
        try:
            importlib.import_module(full)
        except ModuleNotFoundError as exc:
            if exc.name != full:
                raise
    return LAYER_TYPES.names()


def layer_specs(model: nn.Module) -> list[dict[str, Any]]:
    """``{"name", "kind", "config"}`` for every structured or (outermost) low-rank layer, in module order."""
    out: list[dict[str, Any]] = []
    inside: list[str] = []
    for name, m in model.named_modules():
        if any(name.startswith(p + ".") for p in inside):
            continue  # e.g. the low-rank base of an adapter: rebuilt by the adapter's from_config
        if isinstance(m, StructuredLinear):
            out.append({"name": name, "kind": m.kind, "config": m.config()})
            inside.append(name)
        elif isinstance(m, LowRankLinear):
            out.append({"name": name, "kind": "lowrank",
                        "config": {"in_features": m.in_features, "out_features": m.out_features, "rank": m.rank,
                                   "bias": m.bias is not None}})
            inside.append(name)
    return out


def sharing_groups(model: nn.Module) -> list[list[str]]:
    """Qualified names of parameters that are one tensor (groups of two or more), in module order."""
    by_id: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), []).append(name)
    return [names for names in by_id.values() if len(names) > 1]


def save_structured(model: nn.Module, ckpt_path: str | Path, spec_path: str | Path, *,
                    source: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the ``state_dict`` (torch.save) and the spec (JSON), each atomically; returns the spec.

    ``source`` (e.g. ``{"model": "default:fashion-mnist"}``) lets ``pela-export inspect`` rebuild the
    original architecture; ``extra`` (a structure record, a lowering plan) is stored alongside.
    """
    layers = layer_specs(model)
    if not layers:
        raise OptionError(f"{type(model).__name__} holds no structured or low-rank layer to save",
                          fix="structure the model first (structure_model), or save it as a plain checkpoint")
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    spec = {"spec_version": SPEC_VERSION, "kind": "structured", "source": source or {},
            "checkpoint": Path(ckpt_path).name, "layers": layers, "sharing": sharing_groups(model),
            "frozen": frozen, **(extra or {})}
    with atomic_path(ckpt_path) as tmp:
        torch.save(model.state_dict(), tmp)
    write_json_atomic(spec_path, spec)
    return spec


def read_structured_spec(spec_path: str | Path) -> dict[str, Any]:
    """The spec, validated for version and shape (``ArtifactError`` naming the file otherwise)."""
    path = Path(spec_path)
    if not path.is_file():
        raise ArtifactError("structured spec not found", fix="pass the structured.json written by save_structured",
                            where=str(path))
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"structured spec is not valid JSON ({exc})", fix=_FIX_RESAVE, where=str(path)) from None
    if not isinstance(spec, dict) or spec.get("kind") != "structured":
        got = spec.get("kind") if isinstance(spec, dict) else type(spec).__name__
        raise ArtifactError(f"not a structured spec (kind {got!r}, expected 'structured')",
                            fix="a low-rank compressed.json loads with lowrank.load_compressed; pass a structured.json",
                            where=str(path))
    if spec.get("spec_version") != SPEC_VERSION:
        raise ArtifactError(f"structured spec has spec_version {spec.get('spec_version')!r}, expected {SPEC_VERSION}",
                            fix=_FIX_RESAVE, where=str(path))
    layers, sharing = spec.get("layers"), spec.get("sharing", [])
    ok = isinstance(layers, list) and all(isinstance(x, dict) and {"name", "kind", "config"} <= set(x) for x in layers) \
        and isinstance(sharing, list) and all(isinstance(g, list) and len(g) > 1 for g in sharing)
    if not ok:
        raise ArtifactError("structured spec is malformed: 'layers' must be a list of {name, kind, config} and "
                            "'sharing' a list of name groups", fix=_FIX_RESAVE, where=str(path))
    return spec


def _build(entry: dict[str, Any], where: str) -> nn.Module:
    kind, cfg = entry["kind"], entry["config"]
    if kind == "lowrank":
        try:
            return LowRankLinear(int(cfg["in_features"]), int(cfg["out_features"]), int(cfg["rank"]),
                                 bias=bool(cfg["bias"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"layer {entry['name']!r}: bad low-rank config {cfg!r} ({exc})",
                                fix=_FIX_RESAVE, where=where) from None
    if kind not in LAYER_TYPES:
        raise ArtifactError(f"layer {entry['name']!r} has unknown layer type {kind!r} "
                            f"(registered: {', '.join(LAYER_TYPES.names()) or 'none'})",
                            fix=f"import the module that registers {kind!r} before loading", where=where)
    try:
        return LAYER_TYPES.get(kind).from_config(cfg)
    except PelaExportError:
        raise
    except Exception as exc:  # a config the type cannot rebuild: report it as an artifact problem
        raise ArtifactError(f"layer {entry['name']!r}: {kind} cannot be rebuilt from its config {cfg!r} "
                            f"({type(exc).__name__}: {exc})", fix=_FIX_RESAVE, where=where) from None


def _replace(model: nn.Module, entry: dict[str, Any], layer: nn.Module, where: str) -> None:
    name = entry["name"]
    try:
        old = model.get_submodule(name)
    except AttributeError:
        raise ArtifactError(f"layer {name!r} from the spec does not exist in {type(model).__name__}",
                            fix="load with the same architecture the model was structured from", where=where) from None
    want = (getattr(layer, "in_features", None), getattr(layer, "out_features", None))
    have = (getattr(old, "in_features", None), getattr(old, "out_features", None))
    if not isinstance(old, (nn.Linear, LowRankLinear, StructuredLinear)) or want != have:
        raise ArtifactError(f"layer {name!r} is {type(old).__name__} {have[0]}->{have[1]}, the spec expects a "
                            f"{entry['kind']} layer {want[0]}->{want[1]}",
                            fix="load with the same architecture the model was structured from", where=where)
    set_submodule(model, name, layer)


def tie_shared(model: nn.Module, groups: list[list[str]], where: str = "sharing") -> None:
    """Make every name of a group refer to its first name's Parameter (shapes must agree)."""
    for group in groups:
        owners = []
        for name in group:
            mod_name, _, attr = name.rpartition(".")
            try:
                mod = model.get_submodule(mod_name) if mod_name else model
            except AttributeError:
                mod = None
            if mod is None or not isinstance(mod._parameters.get(attr), nn.Parameter):
                raise ArtifactError(f"shared parameter {name!r} does not exist in the rebuilt model",
                                    fix="load with the same architecture and spec it was saved with", where=where)
            owners.append((name, mod, attr))
        first = owners[0][1]._parameters[owners[0][2]]
        for name, mod, attr in owners[1:]:
            if mod._parameters[attr].shape != first.shape:
                raise ArtifactError(f"shared parameter {name!r} has shape {tuple(mod._parameters[attr].shape)}, "
                                    f"{group[0]!r} has {tuple(first.shape)}",
                                    fix="the spec's sharing groups do not fit this architecture; re-save it",
                                    where=where)
            setattr(mod, attr, first)


def load_structured(original: nn.Module, ckpt_path: str | Path,
                    spec_path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the structured layers on ``original`` (modified in place), re-tie, load weights; eval mode."""
    spec = read_structured_spec(spec_path)
    register_known_types()
    where = str(spec_path)
    for entry in spec["layers"]:
        _replace(original, entry, _build(entry, where), where)
    tie_shared(original, spec.get("sharing", []), where)
    ckpt = Path(ckpt_path)
    if not ckpt.is_file():
        raise ArtifactError("structured checkpoint not found", fix="pass the structured.pt written with this spec",
                            where=str(ckpt))
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise CheckpointError(f"structured checkpoint cannot be read ({type(exc).__name__})",
                              fix="re-save it; the file is corrupt or not a torch state_dict", where=str(ckpt)) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"structured checkpoint holds a {type(state).__name__}, expected a state_dict",
                              fix="save it with save_structured", where=str(ckpt))
    try:
        original.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"structured checkpoint does not match the spec: {str(exc).splitlines()[0][:300]}",
                              fix="checkpoint and spec must come from the same save_structured call",
                              where=str(ckpt)) from None
    frozen = set(spec.get("frozen", []))
    for name, p in original.named_parameters():  # the trainable flags as saved (bases stay frozen)
        p.requires_grad_(name not in frozen)
    original.eval()
    return original, spec
