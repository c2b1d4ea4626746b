"""Options of the structured layer types (``--structure`` and friends): parsing and
the checks that refuse an option the chosen structure would not use.

Kept apart from :mod:`.config` so the plain low-rank path reads as before. Every
check names the flag, what was given and what would work; an option that does not
apply is an error, never silently ignored.
"""
from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import OptionError
from ..options import OptionGroup, option

if TYPE_CHECKING:
    from .config import RunConfig

#: ``--lowering`` values besides the deployable forms: measure every form, take the fastest.
LOWERING_AUTO = "auto"
STRUCTURE_BASES: tuple[str, ...] = ("dense", "lowrank")
#: Constructor arguments the pipeline fills itself (never a ``--structure-opt`` key).
_RESERVED = frozenset({"self", "cls", "linear", "base", "name"})


@dataclass
class StructureOptions(OptionGroup):
    """Structured layer types (``--structure``; None = plain low-rank U·V) and their deployment lowering.
    The CLI arguments are added by :func:`pela_export.cli.args.add_structure_args` (KEY=VALUE parsing)."""

    TITLE = "structured layers"
    kind: str | None = option(None, flag="--structure", cli=False, help="structured layer type")
    structure_opts: dict[str, Any] | None = option(None, flag="--structure-opt", cli=False,
                                                   help="constructor hyper-parameters")
    # adapters/snell: None = lowrank (recorded as an automatic choice)
    structure_base: str | None = option(None, flag="--structure-base", cli=False, help="adapter base")
    share_central: bool = option(False, flag="--share-central", cli=False, help="share MPO central cores")
    lowering: str = option("auto", flag="--lowering", cli=False, help="deployment form")
    lowering_overrides: dict[str, str] | None = option(None, flag="--lowering-override", cli=False,
                                                       help="deployment form per layer glob")
    allow_dft: bool = option(False, flag="--allow-dft", cli=False, help="allow FFT/DFT ops")


def parse_value(text: str) -> Any:
    """``--structure-opt`` value: bool (true/false), None (none), int, float, a comma list of
    numbers (e.g. kronecker ``factors=4,8``), else the string itself."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    if "," in text:
        parts = [parse_value(p) for p in text.split(",") if p.strip()]
        if parts and all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in parts):
            return parts
    return text


def parse_key_values(items: Iterable[str], flag: str, *, parse: bool = True) -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` → dict (values parsed unless ``parse`` is False); a repeated key is an error."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise OptionError(f"{flag} {item!r} is not KEY=VALUE", fix=f"pass e.g. {flag} {_example(flag)}")
        if key in out:
            raise OptionError(f"{flag} gives {key!r} twice ({out[key]!r} and {value!r})",
                              fix=f"pass each {flag} key once")
        out[key] = parse_value(value) if parse else value.strip()
    return out


def _example(flag: str) -> str:
    return "'*fc1=dense'" if flag == "--lowering-override" else "bond_dim=8"


def hyper_keys(kind: str) -> list[str]:
    """Hyper-parameters the kind's constructor (``from_base`` or ``from_linear``) accepts."""
    from ..structured import LAYER_TYPES

    cls = LAYER_TYPES.get(kind)
    make = getattr(cls, "from_base", None) or getattr(cls, "from_linear", None)
    if make is None:
        return []
    params = inspect.signature(make).parameters.values()
    return [p.name for p in params if p.name not in _RESERVED
            and p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)]


def check_lowering_form(value: str, flag: str) -> None:
    """``auto`` (for ``--lowering`` only), ``structured``, ``lowrank``, ``lowrank:R`` or ``dense``."""
    from ..structured.base import LOWERINGS

    form, _, rank = value.partition(":")
    ok = form in LOWERINGS and (not rank or (form == "lowrank" and rank.isdigit() and int(rank) >= 1))
    if not ok and not (flag == "--lowering" and value == LOWERING_AUTO):
        choices = ([LOWERING_AUTO] if flag == "--lowering" else []) + list(LOWERINGS)
        raise OptionError(f"{flag}: unknown lowering form {value!r}",
                          fix=f"use one of: {', '.join(choices)} (or lowrank:R for a rank-R truncation)")


def check_structured_options(cfg: RunConfig) -> None:
    """Validate the structured options of ``cfg`` (and normalise their containers)."""
    cfg.structure.structure_opts = dict(cfg.structure.structure_opts or {})
    cfg.structure.lowering_overrides = dict(cfg.structure.lowering_overrides or {})
    if cfg.structure.kind is None:
        _reject_without_structure(cfg)
        return
    from ..structured import LAYER_TYPES
    from ..structured.apply import is_adapter_kind

    LAYER_TYPES.get(cfg.structure.kind)  # unknown kind: OptionError listing the registered ones
    adapter = is_adapter_kind(cfg.structure.kind)
    valid = hyper_keys(cfg.structure.kind)
    unknown = [k for k in cfg.structure.structure_opts if k not in valid]
    if unknown:
        raise OptionError(f"--structure-opt {unknown[0]!r} is not a hyper-parameter of --structure {cfg.structure.kind}",
                          fix=f"use one of: {', '.join(valid) or 'none (this kind takes no hyper-parameters)'}")
    if cfg.structure.structure_base is not None and cfg.structure.structure_base not in STRUCTURE_BASES:
        raise OptionError(f"unknown --structure-base {cfg.structure.structure_base!r}",
                          fix=f"pass --structure-base with one of: {', '.join(STRUCTURE_BASES)}")
    if cfg.structure.structure_base is not None and not adapter:
        raise OptionError(f"--structure-base is only used by adapter kinds (a frozen base plus a delta); "
                          f"--structure {cfg.structure.kind} replaces the weight itself",
                          fix="drop --structure-base, or choose an adapter kind (circulant, toeplitz, kronecker, ldr, "
                              "snell)")
    if cfg.structure.share_central and cfg.structure.kind != "mpo":
        raise OptionError(f"--share-central shares MPO central cores, but this run uses --structure {cfg.structure.kind}",
                          fix="add --structure mpo, or drop --share-central")
    lowrank_base = adapter and (cfg.structure.structure_base or "lowrank") == "lowrank"
    if cfg.compress.ratio is not None and not lowrank_base:
        why = "an adapter on the dense weight (--structure-base dense)" if adapter else \
            f"--structure {cfg.structure.kind} (it sets its own size through --structure-opt)"
        raise OptionError(f"--ratio sets the rank of a plain low-rank base, which {why} does not use",
                          fix="drop --ratio" + (", or pass --structure-base lowrank" if adapter else ""))
    for flag, bad, default in (("--method", cfg.compress.method != "svd", "svd"),
                               ("--rank-policy", cfg.compress.rank_policy != "ratio", "ratio"),
                               ("--align", cfg.compress.align is not None, None)):
        if bad:
            use = "the low-rank base of an adapter is plain SVD at --ratio" if lowrank_base else \
                f"--structure {cfg.structure.kind} does not factorize by SVD ranks"
            raise OptionError(f"{flag} is only used by plain low-rank compression: {use}",
                              fix=f"drop {flag}" + (f" (the default is {default})" if default else "")
                                  + ", or drop --structure")
    _check_lowering(cfg)


def _check_lowering(cfg: RunConfig) -> None:
    check_lowering_form(cfg.structure.lowering, "--lowering")
    for glob, form in cfg.structure.lowering_overrides.items():
        if not isinstance(form, str):
            raise OptionError(f"--lowering-override {glob!r} has form {form!r}, expected a form name",
                              fix="pass GLOB=structured|lowrank|lowrank:R|dense")
        check_lowering_form(form, f"--lowering-override {glob}")


def _reject_without_structure(cfg: RunConfig) -> None:
    given = [flag for flag, value in (("--structure-opt", cfg.structure.structure_opts), ("--structure-base", cfg.structure.structure_base),
                                      ("--share-central", cfg.structure.share_central),
                                      ("--lowering", cfg.structure.lowering != LOWERING_AUTO),
                                      ("--lowering-override", cfg.structure.lowering_overrides),
                                      ("--allow-dft", cfg.structure.allow_dft)) if value]
    if given:
        from ..structured import LAYER_TYPES

        raise OptionError(f"{given[0]} is only used with --structure KIND, which this run does not select",
                          fix=f"add --structure with one of: {', '.join(LAYER_TYPES.names())}; or drop {given[0]}")


def resolved_base(cfg: RunConfig) -> str | None:
    """The adapter base this run uses (None for kinds that replace the weight)."""
    from ..structured.apply import is_adapter_kind

    if cfg.structure.kind is None or not is_adapter_kind(cfg.structure.kind):
        return None
    return cfg.structure.structure_base or "lowrank"


def structure_options(cfg: RunConfig) -> dict[str, Any]:
    """What a saved structured model must have been built with to be reused by this run."""
    from ..lowrank.select import selection_rule

    from .compress_options import effective_ratio

    base = resolved_base(cfg)
    include, exclude = selection_rule(cfg.compress.include, cfg.compress.exclude)
    return {"structure": cfg.structure.kind, "structure_opts": dict(cfg.structure.structure_opts or {}), "structure_base": base,
            "ratio": effective_ratio(cfg), "share_central": bool(cfg.structure.share_central),
            "include": include, "exclude": exclude}


def options_mismatch(saved: Mapping[str, Any], cfg: RunConfig) -> tuple[str, Any, Any] | None:
    """(key, saved value, asked value) of the first option that differs, else None."""
    for key, value in structure_options(cfg).items():
        if saved.get(key) != value:
            return key, saved.get(key), value
    return None
