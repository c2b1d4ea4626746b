"""Which ``nn.Linear``/``nn.Conv2d`` layers are eligible for factorization, and why each one is or is not.

The default is structural (:mod:`.structure`): every Linear and Conv2d inside the model's repeated blocks
(grouped convolutions excepted, with the reason), so ResNets, ViTs,
Swin, ConvNeXt and BERT-style encoders all work without knowing their module names. ``--include`` globs
replace that default (the token :data:`REPEATED_BLOCKS` brings it back among them); ``--exclude`` globs
(default :data:`DEFAULT_EXCLUDE`) win over both. Globs are fnmatch patterns on qualified module names.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from torch import nn

from .kinds import is_candidate, skip_reason
from .layer import LowRankLayer
from .structure import Placement, has_repeated_blocks, place_layers

REPEATED_BLOCKS = "@repeated-blocks"  # an --include entry: the Linears/Conv2ds inside the model's repeated blocks
DEFAULT_INCLUDE: tuple[str, ...] = (REPEATED_BLOCKS,)
# What @repeated-blocks means for a model whose module tree does not repeat at all (a toy or custom MLP):
# the name globs of attention and MLP projections, the default before structural selection.
NAME_INCLUDE: tuple[str, ...] = (
    "*attn.*", "*attention.*", "*mlp.*", "*ffn.*", "*feed_forward.*", "*intermediate.dense", "*output.dense",
)
DEFAULT_EXCLUDE: tuple[str, ...] = (
    "*patch_embed*", "*embeddings*", "*norm*", "head", "head.*", "*.head", "*.head.*",
    "*classifier*", "*pooler*", "lm_head",
)


@dataclass(frozen=True)
class LayerChoice:
    """One Linear or Conv2d of the model: chosen for factorization or not, and why."""

    name: str
    module: nn.Module
    chosen: bool
    reason: str


def matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatchcase(name, p) for p in patterns)


def _first_match(name: str, patterns: Sequence[str]) -> str | None:
    return next((p for p in patterns if p != REPEATED_BLOCKS and fnmatchcase(name, p)), None)


def selection_rule(include: Sequence[str] | None, exclude: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """The (include, exclude) lists a run applies and records; a saved run is reused only when they are equal."""
    return (list(include) if include else list(DEFAULT_INCLUDE),
            list(exclude) if exclude is not None else list(DEFAULT_EXCLUDE))


def classify_layers(model: nn.Module, include: Sequence[str] | None = None, exclude: Sequence[str] | None = None,
                    *, is_layer: Callable[[nn.Module], bool] = is_candidate,
                    opaque: tuple[type, ...] = (LowRankLayer,)) -> list[LayerChoice]:
    """Every layer (``is_layer``; default exact ``nn.Linear``/``nn.Conv2d``) in module order, chosen or not,
    with the reason. The parts of ``opaque`` modules (a factorized layer's factors) are not layers."""
    inc, exc = selection_rule(include, exclude)
    user_exc = exclude is not None
    by_name = REPEATED_BLOCKS in inc and not has_repeated_blocks(model, opaque)
    out: list[LayerChoice] = []
    for place in place_layers(model, is_layer, opaque):
        module = model.get_submodule(place.name)
        glob = _first_match(place.name, inc)
        if by_name and glob is None:
            named = _first_match(place.name, NAME_INCLUDE)
            place = Placement(place.name, place.name if named else None,
                              f"no repeated blocks in the model; name matches {named!r}" if named
                              else "no repeated blocks in the model, and the name matches no attention/MLP glob")
        structural = REPEATED_BLOCKS in inc and place.block is not None
        if glob is None and not structural:
            why = place.reason if REPEATED_BLOCKS in inc else "matches no --include glob"
            out.append(LayerChoice(place.name, module, False, why))
            continue
        dropped = _first_match(place.name, exc)
        if dropped is not None:
            src = "--exclude" if user_exc else "default exclude"
            out.append(LayerChoice(place.name, module, False, f"{place.reason}, but matches {src} glob {dropped!r}"
                                   if structural else f"matches {src} glob {dropped!r}"))
            continue
        why = place.reason if structural else f"matches --include glob {glob!r}"
        dense = skip_reason(module)
        out.append(LayerChoice(place.name, module, dense is None, f"{why}, but {dense}" if dense else why))
    return out


def select_layers(
    model: nn.Module,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
) -> list[tuple[str, nn.Module]]:
    """Eligible (name, layer) pairs in module order: exact ``nn.Linear`` and factorizable ``nn.Conv2d``."""
    return [(c.name, c.module) for c in classify_layers(model, include, exclude) if c.chosen]


select_linears = select_layers  # the name before convolutions were factorized


def describe_selection(include: Sequence[str] | None, exclude: Sequence[str] | None,
                       choices: Sequence[LayerChoice]) -> str:
    """One line for the report: the rule that was applied and what it picked."""
    inc, exc = selection_rule(include, exclude)
    chosen = [c for c in choices if c.chosen]
    blocks = sorted({c.reason.removeprefix("in repeated block ") for c in chosen
                     if c.reason.startswith("in repeated block ")})
    if include:
        rule = f"--include {' '.join(inc)}"
    elif chosen and not blocks:
        rule = "no repeated blocks in the model, so the attention/MLP name globs"
    else:
        rule = (f"structural default: Linear/Conv2d layers inside the repeated blocks ({len(blocks)} blocks"
                + (f", {blocks[0]} ... {blocks[-1]}" if blocks else "") + ")")
    rule += f", {'--exclude' if exclude is not None else 'default exclude globs'} {' '.join(exc) or '(none)'}"
    return f"layer selection: {rule}; {len(chosen)} of {len(choices)} Linear/Conv2d layers chosen"


def explain_empty(model: nn.Module, choices: Sequence[LayerChoice]) -> str:
    """Why nothing was chosen, for the error message."""
    if not choices:
        return "the model has no nn.Linear or nn.Conv2d layer"
    kept = "; ".join(f"{c.name}: {c.reason}" for c in choices[:4]) + (" ..." if len(choices) > 4 else "")
    return f"none of its {len(choices)} nn.Linear/nn.Conv2d layers was chosen ({kept})"


def set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted ``name`` (works for ModuleList/Sequential indices)."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
