"""Central-tensor sharing across blocks (as in MPO-based deep PLMs, e.g. MPOBERT / MPOP).

Matching projections of different blocks (same name with the block index replaced by ``*``,
same shape, same core factorisation) keep their own auxiliary cores but use ONE central
core: the same ``nn.Parameter`` object registered in each layer. ``model.parameters()``
then yields it once, so :func:`~.base.model_param_counts` counts it once, and the
exported graph holds one initializer for it (the layer and its ``structured`` form use
the stored matrix directly).

Initialisation of the shared core (``init``):

- ``"first"`` (default): the first layer's central core. Each layer's TT-SVD fixes its own
  gauge (signs/rotations on the bonds), so central cores of different layers live in
  unrelated bases and their average partly cancels; taking one layer's core keeps that layer
  exact and gives the others a well-conditioned core to fit against.
- ``"mean"``: the element-wise mean of the group's central cores (offered for comparison).

Then each layer's auxiliary cores are re-fitted to its own weight by alternating least squares
(``refit_sweeps``; cheap: a few pseudo-inverses of small environments), the shared core fixed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from ..errors import OptionError
from .base import ParamCounts, model_param_counts
from .mpo import MPOLinear
from .mpo_math import core_to_matrix, refit_cores, relative_error

Scope = Literal["aux", "all"]
_INITS = ("first", "mean")


@dataclass
class SharedGroup:
    """One shared central core: its layers and how well each reproduces its own weight."""

    pattern: str
    layers: list[str]
    #: qualified name of the shared tensor under the group's first layer (the others alias it)
    parameter: str
    core_index: int
    core_shape: list[int]
    init: str
    #: relative error of each layer's weight right after the shared core replaced its own
    errors_before_refit: dict[str, float] = field(default_factory=dict)
    #: the same after the auxiliary cores were re-fitted (equal to the above without refit)
    errors_after_refit: dict[str, float] = field(default_factory=dict)


@dataclass
class SharingReport:
    """What :func:`share_central_cores` did; ``spec()`` is what a saved model needs to re-tie."""

    groups: list[SharedGroup]
    params_before: int
    params_after: int

    def spec(self) -> list[list[str]]:
        """The sharing groups as layer names (JSON-able; pass to :func:`tie_central_cores`)."""
        return [list(g.layers) for g in self.groups]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mpo_layers(model: nn.Module) -> dict[str, MPOLinear]:
    """Every :class:`MPOLinear` of ``model`` by qualified name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, MPOLinear)}


def name_pattern(name: str) -> str:
    """``blocks.3.mlp.fc1`` → ``blocks.*.mlp.fc1`` (numeric path parts are block indices)."""
    return ".".join("*" if part.isdigit() else part for part in name.split("."))


def _signature(layer: MPOLinear) -> tuple[Any, ...]:
    return (layer.out_factors, layer.in_factors, layer.bond_dims, layer.center)


def auto_groups(model: nn.Module) -> list[list[str]]:
    """Group MPO layers by name pattern and core structure; singletons are left unshared."""
    buckets: dict[tuple[Any, ...], list[str]] = {}
    for name, layer in mpo_layers(model).items():
        pattern = name_pattern(name)
        if "*" in pattern:
            buckets.setdefault((pattern, _signature(layer)), []).append(name)
    return [names for names in buckets.values() if len(names) > 1]


def _resolve(model: nn.Module, groups: list[list[str]] | str) -> tuple[dict[str, MPOLinear], list[list[str]]]:
    layers = mpo_layers(model)
    if isinstance(groups, str):
        if groups != "auto":
            raise OptionError(f"sharing groups {groups!r} not understood", fix='pass "auto" or a list of name lists')
        return layers, auto_groups(model)
    if not isinstance(groups, (list, tuple)):
        raise OptionError(f"sharing groups must be \"auto\" or a list of name lists, got {type(groups).__name__}",
                          fix='pass "auto" or e.g. [["blocks.0.mlp.fc1", "blocks.1.mlp.fc1"]]')
    modules = dict(model.named_modules())
    seen: dict[str, int] = {}
    for gi, group in enumerate(groups):
        if not isinstance(group, (list, tuple)) or len(group) < 2:
            raise OptionError(f"sharing group {gi} ({group!r}) needs at least two layer names",
                              fix="list two or more MPO layers per group, "
                                  "e.g. [['blocks.0.mlp.fc1', 'blocks.1.mlp.fc1']]")
        for name in group:
            if name not in modules:
                raise OptionError(f"sharing group {gi} names {name!r}, which is not a module of the model",
                                  fix="use names from model.named_modules(); MPO layers: "
                                      f"{', '.join(layers) or 'none'}")
            if name not in layers:
                raise OptionError(f"{type(modules[name]).__name__} {name!r} is not an MPO layer, so it has no "
                                  "central core to share", fix="convert it with --structure mpo first, or drop it "
                                  "from the group", where=name)
            if name in seen:
                raise OptionError(f"layer {name!r} is in sharing groups {seen[name]} and {gi}",
                                  fix="put each layer in one group only", where=name)
            seen[name] = gi
        first = layers[group[0]]
        for name in group[1:]:
            if _signature(layers[name]) != _signature(first):
                a, b = layers[name], first
                raise OptionError(
                    f"cannot share a central core between {group[0]!r} and {name!r}: cores differ "
                    f"({b.out_features}x{b.in_features} factors {b.out_factors}/{b.in_factors} bonds {b.bond_dims} vs "
                    f"{a.out_features}x{a.in_features} factors {a.out_factors}/{a.in_factors} bonds {a.bond_dims})",
                    fix="build the group's layers with the same --structure-opt cores=N and a fixed --structure-opt bond_dim=D (no "
                        "tolerance), or group only layers of the same shape", where=name)
    return layers, [list(g) for g in groups]


def _tie(layers: dict[str, MPOLinear], names: list[str], init: torch.Tensor) -> nn.Parameter:
    first = layers[names[0]]
    c = first.center
    shared = nn.Parameter(init.detach().clone(), requires_grad=first.cores[c].requires_grad)
    for name in names:
        layers[name].cores[c] = shared
    return shared


def tie_central_cores(model: nn.Module, groups: list[list[str]] | str) -> SharingReport:
    """Structure only: make each group use one central Parameter (the first layer's values).

    For loading: build the layers from their configs, tie with the saved ``spec()``, then
    ``load_state_dict`` fills the shared tensor.
    """
    before = model_param_counts(model).stored
    layers, resolved = _resolve(model, groups)
    report = []
    for names in resolved:
        first = layers[names[0]]
        _tie(layers, names, first.cores[first.center])
        report.append(SharedGroup(name_pattern(names[0]), names, f"{names[0]}.cores.{first.center}", first.center,
                                  list(first.cores[first.center].shape), "tied"))
    return SharingReport(report, before, model_param_counts(model).stored)


def share_central_cores(model: nn.Module, groups: list[list[str]] | str = "auto", *, init: str = "first",
                        refit_sweeps: int = 2, targets: dict[str, torch.Tensor] | None = None) -> SharingReport:
    """Share the central core within each group (``"auto"``: by name pattern), then re-fit.

    ``targets`` maps layer names to the dense weights to fit (default: each layer's own
    effective weight before sharing). ``refit_sweeps=0`` skips the least-squares refit.
    """
    if init not in _INITS:
        raise OptionError(f"unknown shared-core initialisation {init!r}", fix=f"choose one of: {', '.join(_INITS)}")
    if isinstance(refit_sweeps, bool) or not isinstance(refit_sweeps, int) or refit_sweeps < 0:
        raise OptionError(f"refit_sweeps {refit_sweeps!r} is invalid (expected an int >= 0)",
                          fix="pass 0 to skip the refit, or a small count such as 2")
    before = model_param_counts(model).stored
    layers, resolved = _resolve(model, groups)
    report = []
    for names in resolved:
        first = layers[names[0]]
        c = first.center
        wanted = {n: (targets or {}).get(n, layers[n].effective_weight()).detach() for n in names}
        for n, w in wanted.items():
            if tuple(w.shape) != (layers[n].out_features, layers[n].in_features):
                raise OptionError(f"target weight for {n!r} is {tuple(w.shape)}, expected "
                                  f"{(layers[n].out_features, layers[n].in_features)}",
                                  fix="pass each layer's own dense weight (out × in)", where=n)
        cores = torch.stack([layers[n].cores[c].detach() for n in names])
        _tie(layers, names, cores[0] if init == "first" else cores.mean(dim=0))
        group = SharedGroup(name_pattern(names[0]), names, f"{names[0]}.cores.{c}", c, list(first.cores[c].shape), init)
        for n in names:
            layer = layers[n]
            group.errors_before_refit[n] = relative_error(layer.effective_weight(), wanted[n])
            if refit_sweeps:
                fitted = refit_cores([layer.core(k) for k in range(layer.num_cores)], wanted[n], layer.out_factors,
                                     layer.in_factors, fixed={c}, sweeps=refit_sweeps)
                with torch.no_grad():
                    for k, core in enumerate(fitted):
                        if k != c:
                            layer.cores[k].copy_(core_to_matrix(core).to(layer.cores[k].dtype))
            group.errors_after_refit[n] = relative_error(layer.effective_weight(), wanted[n])
        report.append(group)
    return SharingReport(report, before, model_param_counts(model).stored)


def set_mpo_trainable(model: nn.Module, scope: Scope | str = "aux", *, train_bias: bool = False) -> ParamCounts:
    """``"aux"``: only auxiliary cores train (central cores, shared or not, frozen; biases too unless
    ``train_bias``); ``"all"``: every core and bias trains. Non-MPO parameters are left as they are.
    Returns the model's counts afterwards (shared tensors once)."""
    if scope not in ("aux", "all"):
        raise OptionError(f"unknown MPO training scope {scope!r}",
                          fix='pass "aux" (auxiliary cores only, shared central frozen) or "all"')
    for layer in mpo_layers(model).values():
        for k, param in enumerate(layer.cores):
            param.requires_grad_(scope == "all" or k != layer.center)
        if layer.bias is not None:
            layer.bias.requires_grad_(scope == "all" or train_bias)
    return model_param_counts(model)


def shared_parameter_names(model: nn.Module) -> dict[str, list[str]]:
    """First name → every other name of each Parameter registered under several names."""
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    return {ns[0]: ns[1:] for ns in names.values() if len(ns) > 1}

