"""Options that own their CLI flags (Polygraphy's argument groups, as dataclasses).

A field declared with :func:`option` carries its flag, help and argparse details in
its metadata, so the dataclass is the one place an option is defined: the CLI
parser, error messages (:meth:`OptionGroup.flag`), the "option not used by this
choice" checks and the report all read it from there. Torch-free.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from dataclasses import MISSING, Field, field, fields, is_dataclass
from typing import Any, ClassVar, TypeVar

G = TypeVar("G", bound="OptionGroup")


def option(default: Any = None, *, flag: str, help: str, type: Callable[[str], Any] | None = None,  # noqa: A002
           choices: Iterable[str] | Callable[[], Iterable[str]] | None = None, metavar: str | None = None,
           action: str | None = None, factory: Callable[[], Any] | None = None, cli: bool = True,
           from_cli: Callable[[Any], Any] | None = None) -> Any:
    """A dataclass field that is also a CLI option.

    ``choices`` may be a callable (a registry's ``names``) so the list is read when the
    parser is built, after every entry has registered. ``cli=False`` keeps the flag for
    messages but adds no argument (API-only options). ``from_cli`` converts the parsed
    value (e.g. 0 → None for "all").
    """
    meta = {"flag": flag, "help": help, "type": type, "choices": choices, "metavar": metavar, "action": action,
            "cli": cli, "from_cli": from_cli}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def option_fields(cls: Any) -> list[Field[Any]]:
    """The fields of a dataclass (class or instance) declared with :func:`option`."""
    return [f for f in fields(cls) if "flag" in f.metadata]


def flag_of(cls: Any, name: str) -> str:
    """The CLI flag of field ``name`` (a programming error if it has none)."""
    for f in option_fields(cls):
        if f.name == name:
            return str(f.metadata["flag"])
    raise KeyError(f"{getattr(cls, '__name__', type(cls).__name__)} has no option {name!r}")


def default_of(f: Field[Any]) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


def add_arguments(cls: Any, parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                  skip: Iterable[str] = ()) -> None:
    """Add one argparse argument per CLI option of dataclass ``cls`` (dest = field name)."""
    skipped = set(skip)
    for f in option_fields(cls):
        meta = f.metadata
        if not meta["cli"] or f.name in skipped:
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "help": meta["help"]}
        if not str(meta["flag"]).startswith("-"):  # a positional argument (optional: nargs="?")
            parser.add_argument(f.name, nargs="?", default=default_of(f), metavar=meta["metavar"] or meta["flag"],
                                help=meta["help"])
            continue
        action = meta["action"]
        if action in ("store_true", "store_false"):
            kwargs["action"] = action
            kwargs["default"] = default_of(f) if action == "store_true" else True
        else:
            if action is not None:
                kwargs["action"] = action
            kwargs["default"] = None if action == "append" else default_of(f)
            if meta["type"] is not None:
                kwargs["type"] = meta["type"]
            choices = meta["choices"]
            if choices is not None:
                kwargs["choices"] = list(choices() if callable(choices) else choices)
            if meta["metavar"] is not None:
                kwargs["metavar"] = meta["metavar"]
        parser.add_argument(meta["flag"], **kwargs)


def values_from_namespace(cls: Any, ns: argparse.Namespace) -> dict[str, Any]:
    """The options of ``cls`` present in ``ns`` (absent ones keep the dataclass defaults)."""
    out: dict[str, Any] = {}
    for f in option_fields(cls):
        if not hasattr(ns, f.name):  # cli=False options count too when a hand-written argument uses their dest
            continue
        value = getattr(ns, f.name)
        convert = f.metadata["from_cli"]
        out[f.name] = convert(value) if convert is not None else value
    return out


class OptionGroup:
    """Mixin for option dataclasses: flags, parser arguments and what the user changed."""

    TITLE: ClassVar[str] = "options"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, skip: Iterable[str] = (),
                      title: str | None = None) -> argparse._ArgumentGroup:
        group = parser.add_argument_group(title or cls.TITLE)
        add_arguments(cls, group, skip)
        return group

    @classmethod
    def from_namespace(cls: type[G], ns: argparse.Namespace, **overrides: Any) -> G:
        return cls(**{**values_from_namespace(cls, ns), **overrides})  # type: ignore[call-arg]

    @classmethod
    def flag(cls, name: str) -> str:
        return flag_of(cls, name)

    @classmethod
    def flags(cls) -> dict[str, str]:
        return {f.name: str(f.metadata["flag"]) for f in option_fields(cls)}

    def given(self) -> dict[str, Any]:
        """Options set to something other than their default (what the user chose)."""
        assert is_dataclass(self)
        return {f.name: getattr(self, f.name) for f in option_fields(self)
                if getattr(self, f.name) != default_of(f)}


__all__ = ["OptionGroup", "add_arguments", "default_of", "flag_of", "option", "option_fields",
           "values_from_namespace"]
