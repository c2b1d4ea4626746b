"""Which ``nn.Linear`` layers are eligible for factorization.

Defaults follow PELA: attention and MLP projections of every block; the patch
embedding, norms and classifier head stay dense (they are small or sensitive).
Patterns are shell globs (fnmatch) on the module's qualified name; exclusion wins.
"""
from __future__ import annotations

from fnmatch import fnmatchcase

from torch import nn

DEFAULT_INCLUDE: tuple[str, ...] = (
    "*attn.*", "*attention.*", "*mlp.*", "*ffn.*", "*feed_forward.*",
    "*intermediate.dense", "*output.dense",
)
DEFAULT_EXCLUDE: tuple[str, ...] = (
    "*patch_embed*", "*embeddings*", "*norm*", "head", "head.*", "*.head", "*.head.*",
    "*classifier*", "*pooler*", "lm_head",
)


def matches(name: str, patterns: tuple[str, ...] | list[str]) -> bool:
    return any(fnmatchcase(name, p) for p in patterns)


def select_linears(
    model: nn.Module,
    include: tuple[str, ...] | list[str] | None = None,
    exclude: tuple[str, ...] | list[str] | None = None,
) -> list[tuple[str, nn.Linear]]:
    """Eligible (name, layer) pairs in module order. Only exact ``nn.Linear`` instances qualify."""
    inc = tuple(include) if include else DEFAULT_INCLUDE
    exc = tuple(exclude) if exclude is not None else DEFAULT_EXCLUDE
    out: list[tuple[str, nn.Linear]] = []
    for name, module in model.named_modules():
        if type(module) is nn.Linear and matches(name, inc) and not matches(name, exc):
            out.append((name, module))
    return out


def set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted ``name`` (works for ModuleList/Sequential indices)."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
