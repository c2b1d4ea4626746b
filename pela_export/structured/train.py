"""A short distillation run for any structured student, reusing PELA's trainer.

The frozen original teaches the student through block features (and the
weight-perturbation term, on each layer's effective weight). What trains is set
here, before the trainer runs with scope ``"trainable"``: by default the parameters
of the compressed layers that are not frozen (an adapter's delta, not its base; all
MPO cores, or only the auxiliary ones if the caller froze the central ones), and
nothing outside them, which mirrors PELA's "factors only". The flags stay as set
after training, so accounting and saving see exactly what was trained.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from ..errors import OptionError
from ..lowrank.layer import LowRankLinear
from ..train import TrainConfig, TrainData, TrainResult, train_pela
from .base import StructuredLinear

#: "layers": the compressed layers' own trainable parameters only; "trainable": every parameter
#: with requires_grad; "all": the whole student (frozen bases included).
STRUCTURED_SCOPES: tuple[str, ...] = ("layers", "trainable", "all")
Predicate = Callable[[str, nn.Parameter], bool]


def layer_parameter_names(model: nn.Module) -> set[str]:
    """Qualified names of parameters inside structured or low-rank layers (shared ones under every name)."""
    prefixes = [n for n, m in model.named_modules() if isinstance(m, (StructuredLinear, LowRankLinear))]
    return {n for n, _ in model.named_parameters(remove_duplicate=False)
            if any(n.startswith(p + ".") for p in prefixes)}


def set_trainable(model: nn.Module, scope: str = "layers", predicate: Predicate | None = None) -> list[str]:
    """Set ``requires_grad`` for ``scope`` (or ``predicate(name, param)``); returns the trainable names.

    A shared tensor is trainable if any of its names is selected (it is one tensor).
    """
    if scope not in STRUCTURED_SCOPES:
        raise OptionError(f"unknown structured training scope {scope!r}",
                          fix=f"use one of: {', '.join(STRUCTURED_SCOPES)}")
    params = list(model.named_parameters(remove_duplicate=False))
    if predicate is not None:
        chosen = {id(p) for n, p in params if predicate(n, p)}
    elif scope == "all":
        chosen = {id(p) for _, p in params}
    elif scope == "trainable":
        chosen = {id(p) for _, p in params if p.requires_grad}
    else:
        inside = layer_parameter_names(model)
        if not inside:
            raise OptionError(f"{type(model).__name__} has no structured or low-rank layer, so scope 'layers' "
                              "would train nothing", fix="structure the model first, or use scope 'all'")
        chosen = {id(p) for n, p in params if n in inside and p.requires_grad}
    for _, p in params:
        p.requires_grad_(id(p) in chosen)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if not names:
        raise OptionError(f"scope {scope!r} selects no trainable parameter of {type(model).__name__}",
                          fix="unfreeze the parameters to train, or choose another scope / predicate")
    return names


def default_config(**changes: Any) -> TrainConfig:
    """The project's short budget: 1 epoch, batch 128, lr 1e-3, α=1 (block features), λ=0.1, scope trainable."""
    base = TrainConfig(epochs=1, batch_size=128, lr=1e-3, alpha=1.0, lam=0.1, scope="trainable", progress=False)
    return dataclasses.replace(base, **changes)


def train_structured(student: nn.Module, teacher: nn.Module, data: TrainData | Dataset,
                     cfg: TrainConfig | None = None, *, scope: str = "layers", predicate: Predicate | None = None,
                     eval_fn: Callable[[nn.Module], float] | None = None) -> TrainResult:
    """Distil ``teacher`` into ``student`` (in place), training what ``scope``/``predicate`` selects.

    ``cfg`` defaults to :func:`default_config`; its ``scope`` must be ``"trainable"`` because the
    selection is made here (PELA's ``"factors"`` would unfreeze an adapter's low-rank base).
    """
    cfg = cfg if cfg is not None else default_config()
    if cfg.scope != "trainable":
        raise OptionError(f"TrainConfig.scope is {cfg.scope!r}; structured training selects the parameters itself",
                          fix="pass a TrainConfig with scope='trainable' and choose scope='layers'|'trainable'|'all' "
                              "(or a predicate) here")
    set_trainable(student, scope, predicate)
    return train_pela(student, teacher, data, cfg, eval_fn)
