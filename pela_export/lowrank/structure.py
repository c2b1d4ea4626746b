"""Structural layer selection: the ``nn.Linear``/``nn.Conv2d`` layers inside a model's repeated blocks.

Module names differ between model families (``blocks.3.attn.qkv``, ``encoder.layer.3.attention.self.query``,
``stages.1.blocks.2.mlp.fc1``), but the shape of the module tree does not: the body of a transformer or a
ConvNeXt is a run of same-typed sibling modules. Linears inside those blocks are the bulk of the parameters
and factorize well; the embedding/stem before them, the head after them and the stage glue between them
(Swin's patch merging) are small or sensitive and stay dense. Every layer gets a reason either way.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from torch import nn

# Containers say nothing about what they hold: a run of them counts, but their type does not mark blocks elsewhere.
_GENERIC = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass(frozen=True)
class Placement:
    """Where a layer sits relative to the repeated blocks: ``block`` is set when it is a candidate."""

    name: str
    block: str | None
    reason: str


def _generic(module: nn.Module) -> bool:
    return type(module) is nn.Module or isinstance(module, _GENERIC)


def _is_linear(module: nn.Module) -> bool:
    """Exact ``nn.Linear``/``nn.Conv2d``: the layers factorization handles (see :mod:`.kinds`)."""
    return type(module) in (nn.Linear, nn.Conv2d)


def walk(model: nn.Module, opaque: tuple[type, ...] = ()) -> Iterator[tuple[str, nn.Module]]:
    """``named_modules`` without descending into ``opaque`` modules (their parts are not layers)."""
    stack: list[tuple[str, nn.Module]] = [("", model)]
    while stack:
        name, module = stack.pop()
        yield name, module
        if name and isinstance(module, opaque):
            continue
        kids = [(f"{name}.{c}" if name else c, m) for c, m in module.named_children()]
        stack.extend(reversed(kids))


def _runs(parent: nn.Module, prefix: str) -> Iterator[list[tuple[str, nn.Module]]]:
    """Maximal runs (length >= 2) of consecutive same-typed children of ``parent``."""
    kids = [(f"{prefix}.{c}" if prefix else c, m) for c, m in parent.named_children()]
    i = 0
    while i < len(kids):
        j = i + 1
        while j < len(kids) and type(kids[j][1]) is type(kids[i][1]):
            j += 1
        if j - i >= 2:
            yield kids[i:j]
        i = j


def _within(name: str, prefix: str) -> bool:
    return name.startswith(prefix + ".")


def find_blocks(model: nn.Module, is_layer: Callable[[nn.Module], bool] = _is_linear,
                opaque: tuple[type, ...] = ()) -> tuple[list[str], list[str]]:
    """(all repeated blocks, innermost ones) that hold at least one layer.

    A block is a member of a run of same-typed siblings that is not itself a layer (containers count only
    as children of a container), any other instance of such a (non-container) type (a Swin stage with a
    single block still holds a block), or a non-container sibling of such a run inside a container (the
    last, differently typed block of an EfficientFormer stage). Runs inside a container (``blocks.0``,
    ``blocks.1``) are the model's body; runs of named attributes (CoaT's ``patch_embed1..4``, MaxViT's
    ``attn_block``/``attn_grid``) count only where no container-held block encloses or holds them.
    """
    modules = list(walk(model, opaque))
    layers = [n for n, m in modules if n and is_layer(m)]
    holders = {n.rsplit(".", i)[0] for n in layers for i in range(1, n.count(".") + 1)}
    indexed: set[str] = set()  # members of runs inside containers
    named: set[str] = set()  # members of runs of named attributes
    for name, parent in modules:
        if name and isinstance(parent, opaque):
            continue
        for run in _runs(parent, name):  # named containers side by side (stem, stages) are not a run of blocks
            found = [n for n, m in run if not is_layer(m) and n in holders and (_generic(parent) or not _generic(m))]
            (indexed if _generic(parent) else named).update(found)
            if found and _generic(parent):  # the other blocks of this container, of another type
                indexed.update(f"{name}.{c}" if name else c for c, m in parent.named_children()
                               if not is_layer(m) and not _generic(m)
                               and (f"{name}.{c}" if name else c) in holders)
    strong_types = {type(m) for n, m in modules if n in indexed and not _generic(m)}
    weak_types = {type(m) for n, m in modules if n in named and not _generic(m)}
    strong = [n for n, m in modules if n in holders and (n in indexed or type(m) in strong_types)]
    weak = [n for n, m in modules if n in holders and n not in strong and (n in named or type(m) in weak_types)
            and not any(_within(n, s) or _within(s, n) for s in strong)]
    blocks = sorted(set(strong) | set(weak), key=[n for n, _ in modules].index)
    inner = [b for b in blocks if not any(_within(o, b) for o in blocks)]
    return blocks, inner


def has_repeated_blocks(model: nn.Module, opaque: tuple[type, ...] = ()) -> bool:
    """Whether the module tree repeats at all (a run of same-typed non-leaf siblings, Linear or not)."""
    return bool(find_blocks(model, lambda m: next(m.children(), None) is None, opaque)[0])


# Type names of modules that compute with what they hold, whatever else the name says (ConvMlpWithNorm, LinearNorm,
# GlobalResponseNormMlp are MLPs): a layer below one is never "part of a norm layer".
_COMPUTE_WORDS = ("mlp", "ffn", "attn", "attention", "block", "conv", "linear")


def _kind(model: nn.Module, name: str, words: tuple[str, ...], below: str | None) -> str | None:
    """The type name of the first ancestor of ``name`` (under ``below``) whose type name holds one of ``words``
    and none of :data:`_COMPUTE_WORDS`."""
    parts = name.split(".")
    for i in range(below.count(".") + 2 if below else 1, len(parts)):
        kind = type(model.get_submodule(".".join(parts[:i]))).__name__
        low = kind.lower()
        if any(w in low for w in words) and not any(c in low for c in _COMPUTE_WORDS):
            return kind
    return None


def place_layers(model: nn.Module, is_layer: Callable[[nn.Module], bool] = _is_linear,
                 opaque: tuple[type, ...] = ()) -> list[Placement]:
    """Every layer in module order with its innermost repeated block (or why it has none)."""
    blocks, inner = find_blocks(model, is_layer, opaque)
    order = [n for n, _ in walk(model, opaque)]
    layers = [n for n, m in walk(model, opaque) if n and is_layer(m)]
    pos = {n: i for i, n in enumerate(order)}
    first = min((pos[b] for b in inner), default=None)
    last_end = max((pos[n] for n in order for b in inner if n == b or _within(n, b)), default=None)
    outside = [n for n in layers if not any(_within(n, b) for b in inner)]
    out: list[Placement] = []
    for name in layers:
        home = max((b for b in blocks if _within(name, b)), key=len, default=None)
        inside = home is not None  # type-name hints only below a block; outside, the position says enough
        embed = (type(model.get_submodule(home)).__name__ if inside and "embed" in type(model.get_submodule(home)).__name__.lower()
                 else _kind(model, name, ("embed",), home) if inside else None)
        norm = _kind(model, name, ("norm",), home) if inside else None
        if embed is not None:
            out.append(Placement(name, None, f"embedding (inside {embed})"))
        elif norm is not None:
            out.append(Placement(name, None, f"part of a norm layer ({norm})"))
        elif home is not None and home in inner:
            out.append(Placement(name, home, f"in repeated block {home}"))
        elif home is not None:
            out.append(Placement(name, None, f"outside the repeated blocks of {home} (downsample or stage glue)"))
        elif outside and name == outside[-1] and (last_end is None or pos[name] > last_end):
            out.append(Placement(name, None, "classifier head (the last Linear, after the repeated blocks)"
                                 if last_end is not None else "classifier head (the model's last Linear)"))
        elif first is None:
            out.append(Placement(name, None, "not inside a repeated block (the model has none holding a Linear)"))
        elif pos[name] < first:
            out.append(Placement(name, None, "embedding or stem (before the repeated blocks)"))
        elif last_end is not None and pos[name] > last_end:
            out.append(Placement(name, None, "head, pooler or neck (after the repeated blocks)"))
        else:
            out.append(Placement(name, None, "not inside a repeated block"))
    return out
