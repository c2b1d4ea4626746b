"""Which modules are "transformer blocks" for feature distillation, and hooks
that capture their outputs.

PELA distils the output of every block, so the blocks must be found on any
architecture without per-family code: a block is an indexed child of a
``ModuleList``/``Sequential`` held in an attribute named ``blocks``, ``layer``
or ``layers`` (timm ViT/DeiT ``blocks.N``, timm Swin ``layers.N.blocks.M``,
HF ``encoder.layer.N`` / ``*.layers.N``). Where such containers nest (Swin
stages hold blocks), only the innermost level is kept: those are the blocks
whose outputs are token features. Models without such names (ResNet's
``layer1.0``, a user's own ``nn.Sequential``) fall back to the repeated blocks
that layer selection finds (:mod:`pela_export.lowrank.structure`).
``--distill-blocks GLOB`` overrides the search.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from fnmatch import fnmatchcase
from typing import Any

import torch
from torch import nn

from ..errors import OptionError

#: Attribute names of containers whose indexed children are transformer blocks.
BLOCK_CONTAINERS: frozenset[str] = frozenset({"blocks", "layer", "layers"})
DISTILL_FLAG = "--distill-blocks"


def _split_globs(patterns: str | Sequence[str]) -> list[str]:
    """Accept one comma-separated string or a sequence of globs."""
    items = patterns.split(",") if isinstance(patterns, str) else list(patterns)
    return [p.strip() for p in items if p and p.strip()]


def _automatic_blocks(model: nn.Module) -> list[str]:
    candidates: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)):
            continue
        attr = name.rpartition(".")[2]
        if attr not in BLOCK_CONTAINERS:
            continue
        for child, _ in module.named_children():
            if child.isdigit():
                candidates.append(f"{name}.{child}" if name else child)
    # keep the innermost level: drop a candidate that contains another one
    return [c for c in candidates if not any(o.startswith(c + ".") for o in candidates)]


def _structural_blocks(model: nn.Module) -> list[str]:
    """The innermost repeated blocks holding a factorizable (or factorized) layer, in module order."""
    from ..lowrank.kinds import is_candidate
    from ..lowrank.layer import LowRankLayer
    from ..lowrank.structure import find_blocks as repeated_blocks

    _, inner = repeated_blocks(model, lambda m: is_candidate(m) or isinstance(m, LowRankLayer), (LowRankLayer,))
    return inner


def find_blocks(model: nn.Module, patterns: str | Sequence[str] | None = None) -> list[str]:
    """Qualified names of the modules whose outputs are distilled, in module order.

    ``patterns`` (shell globs on module names, e.g. ``"encoder.block.*"``) replace
    the automatic search. Finding nothing is an :class:`OptionError` naming
    ``--distill-blocks``, since silently distilling nothing would train blind.
    """
    if patterns is not None:
        globs = _split_globs(patterns)
        if not globs:
            raise OptionError("--distill-blocks is empty", fix=f"pass {DISTILL_FLAG} GLOB, e.g. 'blocks.*'")
        names = [n for n, _ in model.named_modules() if n and any(fnmatchcase(n, g) for g in globs)]
        if not names:
            sample = ", ".join(n for n, _ in list(model.named_modules())[1:9])
            raise OptionError(
                f"{DISTILL_FLAG} {','.join(globs)!r} matches no module of {type(model).__name__} "
                f"(module names look like: {sample}, ...)",
                fix=f"pass {DISTILL_FLAG} with a glob matching the block module names")
        return names
    names = _automatic_blocks(model) or _structural_blocks(model)
    if not names:
        raise OptionError(
            f"found no transformer blocks in {type(model).__name__}: no ModuleList/Sequential named "
            f"{', '.join(sorted(BLOCK_CONTAINERS))} with indexed children, and no repeated blocks in its module tree",
            fix=f"pass {DISTILL_FLAG} GLOB naming the block modules (e.g. 'encoder.block.*'), "
                "or set alpha to 0 to train without feature distillation")
    return names


def first_tensor(output: Any) -> torch.Tensor | None:
    """The tensor a block/model "returns": itself, ``.logits``, or the first tensor of a tuple/dict."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


@contextmanager
def capture_outputs(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks filling a dict ``name → output tensor`` on every forward; removed on exit."""
    store: dict[str, torch.Tensor] = {}
    handles = []

    def hook_for(name: str) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            tensor = first_tensor(output)
            if tensor is not None:
                store[name] = tensor
        return hook

    try:
        for name in names:
            handles.append(model.get_submodule(name).register_forward_hook(hook_for(name)))
        yield store
    finally:
        for h in handles:
            h.remove()
