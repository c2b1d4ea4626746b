"""One data spec for every flag and API argument that takes data.

Evaluation (``--data``), calibration (``--calib-data``, INT8 and data-aware
compression) and training (``--train-data``) used to parse their specs three
ways, so a spelling one of them suggested could be refused by another. Here a
spec is parsed once into a :class:`DataSpec` whose ``kind`` is registered in
:data:`KINDS` together with its spellings and the uses it serves; help texts
and error messages are derived from that registry. Opening a spec for a model
is :func:`pela_export.data.opendata.open_data`.

This module imports nothing heavy (no torch, no calibration) so the calibration
library can import it lazily without a cycle.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .._registry import Registry
from ..errors import DatasetError
from .text import TEXT_SCHEME, TEXT_SUFFIXES

#: Use → the CLI flag that names its data.
USES: dict[str, str] = {"eval": "--data", "calib": "--calib-data", "train": "--train-data"}
#: What a flag's data is called in messages ("unknown calibration source 'x'").
_WHAT: dict[str, str] = {"--data": "dataset", "--calib-data": "calibration source", "--train-data": "training data"}
ALL_USES: frozenset[str] = frozenset(USES)


@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec: its registered ``kind``, file/folder ``paths`` and ``options``.

    ``text`` keeps the spelling the user typed (for labels in reports); it does not
    take part in equality, so every spelling of the same data compares equal.
    """

    kind: str
    paths: tuple[str, ...] = ()
    options: tuple[tuple[str, str], ...] = ()
    text: str = field(default="", compare=False)

    @property
    def spelling(self) -> str:
        """The canonical spelling, accepted by :func:`parse_data_spec` (and the lower-level readers)."""
        if self.kind == "default":
            return ""
        if not self.paths:
            return self.kind
        return f"{self.kind}:{','.join(self.paths)}"

    @property
    def label(self) -> str:
        """What the user typed, else the canonical spelling."""
        return self.text or self.spelling

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True)
class DataKind:
    """One registered kind: how it is spelled, what argument it takes, which uses it serves."""

    name: str
    forms: tuple[str, ...]
    uses: frozenset[str] = ALL_USES
    argument: str | None = None  # placeholder of the text after ``name:`` (None: takes none)
    max_paths: int = 1
    refused: str = ""  # why a use outside ``uses`` is refused
    images: bool = True  # feeds image models (False: text models, or any model for "random"/"default")


KINDS: Registry[DataKind] = Registry("data kind")
_ORDER: list[str] = []  # registration order: the order help texts list the spellings in


def _register(kind: DataKind) -> None:
    KINDS.register(kind.name)(kind)
    _ORDER.append(kind.name)


_register(DataKind("digits", ("digits",)))
_register(DataKind("fashion-mnist", ("fashion-mnist",)))
_register(DataKind("idx", ("idx:DIR",), argument="DIR"))
_register(DataKind("npz", ("FILE.npz", "npz:FILE"), argument="FILE", max_paths=2))
_register(DataKind("images", ("IMAGE_DIR", "images:DIR"), argument="DIR"))
_register(DataKind("text", (f"{TEXT_SCHEME}:FILE", "FILE" + "|".join(TEXT_SUFFIXES), "TRAIN,TEST"),
                   argument="FILE", max_paths=2, images=False))
_register(DataKind("random", ("random",), uses=frozenset({"eval", "calib"}), images=False,
                   refused="seeded random inputs stand in for evaluation and calibration only; "
                           "training needs real examples"))
_register(DataKind("default", (), images=False))  # no spelling: the flag left out


def flag_of(use: str) -> str:
    """The CLI flag of ``use`` ("eval", "calib", "train")."""
    if use not in USES:
        raise ValueError(f"unknown data use {use!r}; one of {', '.join(USES)}")
    return USES[use]


def use_of(flag: str) -> str:
    """The use whose flag is ``flag`` (``--data`` → "eval")."""
    return next((u for u, f in USES.items() if f == flag), "eval")


def data_choices(use: str = "eval", *, text: bool = True) -> list[str]:
    """Every spelling ``use`` accepts, in registry order (``text=False``: image data only)."""
    return [form for name in _ORDER for form in KINDS.get(name).forms
            if use in KINDS.get(name).uses and (text or name != "text")]


def data_help(use: str, lead: str, default: str = "the model's own dataset") -> str:
    """Help text of a data flag, derived from the registered kinds."""
    return f"{lead}: {' | '.join(data_choices(use))} (default: {default})"


def _choices_fix(flag: str) -> str:
    return f"pass {flag} with one of: {', '.join(data_choices(use_of(flag)))}"


def _parts(arg: str) -> list[str]:
    return [p.strip() for p in arg.split(",")]


def _with_argument(kind: DataKind, arg: str, typed: str, flag: str) -> DataSpec:
    parts = _parts(arg)
    if kind.argument is None:
        raise DatasetError(f"{flag} {kind.name} takes no argument, got {typed}",
                           fix=f"pass {flag} {kind.name}, or {flag} idx:DIR for files in a directory")
    if not arg.strip() or any(not p for p in parts) or len(parts) > kind.max_paths:
        if kind.name == "text":
            raise DatasetError(f"text data spec {typed!r} needs one file or TRAIN,TEST files",
                               fix=f"pass e.g. {flag} text:reviews.csv or {flag} train.tsv,test.tsv")
        many = " (or TRAIN,TEST)" if kind.max_paths > 1 else ""
        raise DatasetError(f"{flag} {typed} needs a {kind.argument.lower()}{many} after '{kind.name}:'",
                           fix=f"pass {flag} {kind.name}:{kind.argument}")
    return DataSpec(kind.name, tuple(parts), text=typed)


def parse_data_spec(text: str | os.PathLike[str] | DataSpec | None, flag: str = "--data") -> DataSpec:
    """Parse a data spec; ``None``/empty is the ``default`` kind (the model's own dataset).

    ``flag`` names the option in errors. Bare paths are recognised by suffix
    (text files, ``.npz``) or as an existing folder (an image folder); the
    filesystem is otherwise not touched here.
    """
    if isinstance(text, DataSpec):
        return text
    if text is None:
        return DataSpec("default")
    typed = str(text).strip()
    if not typed:
        return DataSpec("default")
    scheme, sep, arg = typed.partition(":")
    if scheme in KINDS and scheme != "default":
        kind = KINDS.get(scheme)
        if sep:
            return _with_argument(kind, arg, typed, flag)
        if kind.argument is not None:
            raise DatasetError(f"{flag} {scheme} needs a {kind.argument.lower()}",
                               fix=f"pass {flag} {scheme}:{kind.argument}")
        return DataSpec(scheme, text=typed)
    parts = _parts(typed)
    for name, suffixes in (("text", TEXT_SUFFIXES), ("npz", (".npz",))):
        if all(p.lower().endswith(suffixes) for p in parts):
            return _with_argument(KINDS.get(name), typed, typed, flag)
    if re.fullmatch(r"[^,]+", typed) and Path(typed).expanduser().is_dir():
        return DataSpec("images", (typed,), text=typed)
    raise DatasetError(f"unknown {_WHAT.get(flag, 'data spec')} {typed!r}", fix=_choices_fix(flag))


def check_use(spec: DataSpec, use: str) -> DataSpec:
    """``spec`` if ``use`` accepts its kind, else a DatasetError naming the flag and what it accepts."""
    kind = KINDS.get(spec.kind)
    if use not in kind.uses:
        flag = flag_of(use)
        raise DatasetError(f"{flag} {spec.label}: {kind.refused}", fix=_choices_fix(flag))
    return spec
