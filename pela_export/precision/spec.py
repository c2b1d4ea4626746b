"""One :class:`PrecisionSpec` per precision, registered once (timm's ``register_model`` style).

Every table that used to list precisions by hand - ``--precision`` choices, the
precision option flags, the converter options, ONNX Runtime optimisation levels,
golden tolerances, chart colours, report order, TensorRT builder flags, the
``--precision`` default, the flags one precision shares with others - is read
from these records, so a new precision is one :func:`register_precision` call
(plus its converter). Torch-, onnx- and numpy-free: the converter is resolved
lazily from a ``"module:attr"`` string, so the device runtime and the CLI parser
can import this module.
"""
from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, ClassVar

from .._registry import Registry
from ..errors import OptionError
from ..options import OptionGroup, option_fields

#: Modules registering the built-in precisions (imported on first use of the registry).
BUILTIN_MODULES: tuple[str, ...] = ("pela_export.precision.specs",)
#: ONNX Runtime graph optimisation levels a spec may name (the bundle schema accepts these).
ORT_LEVELS: tuple[str, ...] = ("all", "basic")
#: A precision name: lowercase, no "." (it is the suffix of ``<model>.<precision>``).
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_+-]*$")


def comma_names(text: str) -> tuple[str, ...]:
    """``"a, b,"`` → ("a", "b"): the argparse type of list-valued options."""
    return tuple(t.strip() for t in text.split(",") if t.strip())


def variant_name(model: str, precision: str) -> str:
    """``compressed.int8``: the artifact stem and bundle name of one (model, precision) variant."""
    return f"{model}.{precision}"


def split_variant(name: str) -> tuple[str, str]:
    """``"compressed.int8"`` → ("compressed", "int8"); a bare model name is its FP32 variant."""
    model, _, precision = str(name).partition(".")
    return model, precision or "fp32"


class PrecisionOptions(OptionGroup):
    """Base of a precision's options dataclass; fields are declared with :func:`pela_export.options.option`.

    Every field defaults to None ("the converter's default"), so :meth:`given` is what
    the user set. ``CONVERTER_KEYS`` renames fields to the converter's option keys.
    """

    TITLE: ClassVar[str] = "precision options"
    CONVERTER_KEYS: ClassVar[Mapping[str, str]] = {}

    def converter_options(self) -> dict[str, Any]:
        """The options the user set, under the converter's key names (feed-only fields left out)."""
        skip = set(self.feed_fields())
        return {self.CONVERTER_KEYS.get(f.name, f.name): getattr(self, f.name) for f in option_fields(self)
                if getattr(self, f.name) is not None and f.name not in skip}

    @classmethod
    def feed_fields(cls) -> tuple[str, ...]:
        """Fields the pipeline reads itself (not converter options), e.g. the calibration batch size."""
        return ()

    def calibration_batch_size(self) -> int | None:
        """Batch size of the calibration feeds this precision asks for (None: the pipeline's default)."""
        return None

    def check(self) -> None:
        """Value checks that need no model (an :class:`OptionError` naming the flag); override as needed."""

    def share(self, others: Mapping[str, PrecisionOptions]) -> PrecisionOptions:
        """These options completed with those of the precisions the spec's ``shares_options`` names.

        A precision built from others (``int8fp16``: INT8 calibration on the FP16 graph) reads their
        flags instead of duplicating them; a spec with ``shares_options`` must override this."""
        raise NotImplementedError(f"{type(self).__name__} must implement share() to read {sorted(others)}")


@dataclass(frozen=True)
class NoOptions(PrecisionOptions):
    """A precision without options (fp32)."""


@dataclass(frozen=True)
class PrecisionSpec:
    """Everything the pipeline, report, bundle and TensorRT scripts need to know about one precision."""

    name: str
    label: str  # report / chart legend
    order: int  # report and chart order (fp32 0, fp16 10, int8 20)
    color: str  # chart colour
    golden_tolerance: tuple[float, float]  # (atol as a fraction of max|golden output|, rtol) of the bundle check
    converter: str | Callable[..., Any] | None = None  # "module:attr" or the converter; None: the FP32 graph itself
    needs_calibration: bool = False
    options: type[PrecisionOptions] = NoOptions
    run_options: tuple[str, ...] = ("threads",)  # RunConfig fields passed to the converter when set
    ort_level: str = "all"  # ONNX Runtime optimisation level the variant is checked and golden-tested at
    ort_level_reason: str | None = None
    trt_flags: tuple[str, ...] = ()  # TensorRT builder flags a weakly typed build of this variant sets
    quantized: bool = False  # Q/DQ graph with a calibration cache beside it
    shares_options: tuple[str, ...] = ()  # precisions whose options (flags) this one also reads
    default: bool = False  # in --precision when the user gives none (default_precisions())
    default_reason: str = ""  # why, recorded in the report when the default is used

    def resolve(self) -> Any:
        """The converter callable (imports its module on first use)."""
        conv = self.converter
        if conv is None:
            raise OptionError(f"precision {self.name!r} is the FP32 graph itself and has no converter",
                              fix="pass --precision with a reduced precision, e.g. fp16,int8")
        if callable(conv):
            return conv
        module, _, attr = conv.partition(":")
        return getattr(importlib.import_module(module), attr)

    def default_options(self) -> PrecisionOptions:
        return self.options()


_SPECS: Registry[PrecisionSpec] = Registry("precision", flag="--precision")
_loaded = False


def _check_spec(spec: PrecisionSpec) -> None:
    """Programming errors in a registration fail at import, not in the middle of a run."""
    if not NAME_PATTERN.match(spec.name):
        raise ValueError(f"precision name {spec.name!r} must match {NAME_PATTERN.pattern}")
    if spec.ort_level not in ORT_LEVELS:
        raise ValueError(f"precision {spec.name!r}: ort_level must be one of {ORT_LEVELS}")
    if len(spec.golden_tolerance) != 2 or min(spec.golden_tolerance) < 0:
        raise ValueError(f"precision {spec.name!r}: golden_tolerance must be (atol fraction, rtol) >= 0")
    if not (isinstance(spec.options, type) and issubclass(spec.options, PrecisionOptions) and is_dataclass(spec.options)):
        raise ValueError(f"precision {spec.name!r}: options must be a PrecisionOptions dataclass")
    if spec.shares_options and spec.options.share is PrecisionOptions.share:
        raise ValueError(f"precision {spec.name!r} shares {spec.shares_options} but its options class "
                         f"{spec.options.__name__} does not implement share()")
    taken = {f.name: s.name for s in (_SPECS.get(n) for n in _SPECS.names()) for f in fields(s.options)}
    clash = [f.name for f in fields(spec.options) if f.name in taken]
    if clash:
        raise ValueError(f"precision {spec.name!r}: option field(s) {clash} already belong to {taken[clash[0]]!r}")


def register_precision(name: str, **facts: Any) -> PrecisionSpec:
    """Record one precision and its defaults; returns the spec. Registering a name twice is an error."""
    spec = PrecisionSpec(name=name, **facts)
    _check_spec(spec)
    _SPECS.register(name)(spec)
    return spec


def unregister_precision(name: str) -> None:
    """Remove a registration (tests registering a throw-away precision)."""
    _SPECS.unregister(name)


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)


def precision_spec(name: str) -> PrecisionSpec:
    """The spec of ``name``; an unknown name is an :class:`OptionError` listing ``--precision`` choices."""
    _load_builtins()
    return _SPECS.get(name)


def find_spec(name: str) -> PrecisionSpec | None:
    """The spec of ``name``, or None when no precision of that name is registered here."""
    _load_builtins()
    return _SPECS.find(name)


def precision_specs() -> list[PrecisionSpec]:
    """Every registered spec in report order."""
    _load_builtins()
    return sorted((_SPECS.get(n) for n in _SPECS.names()), key=lambda s: (s.order, s.name))


def precision_names(*, converted: bool = False) -> list[str]:
    """Registered names in report order (``converted``: only those with a converter)."""
    return [s.name for s in precision_specs() if s.converter is not None or not converted]


def precision_order(names: Iterable[str]) -> list[str]:
    """``names`` in report order: registered precisions by their order, unknown ones last as given."""
    known = {s.name: i for i, s in enumerate(precision_specs())}
    unique = list(dict.fromkeys(names))
    return sorted(unique, key=lambda n: (known.get(n, len(known)), unique.index(n)))


def default_precisions() -> tuple[str, ...]:
    """``--precision`` when the user gives none: the specs registered with ``default=True``, in report order."""
    return tuple(s.name for s in precision_specs() if s.default)


def default_note() -> str:
    """The automatic choice, worded for the report (it names every default and the INT8 alternative)."""
    chosen = [precision_spec(n) for n in default_precisions()]
    why = "; ".join(f"{s.name}: {s.default_reason}" for s in chosen if s.default_reason)
    return f"--precision not given: {','.join(s.name for s in chosen)}" + (f" ({why})" if why else "")


def resolve_precisions(given: Iterable[str] | None) -> tuple[tuple[str, ...], str | None]:
    """(the precisions to write, the automatic choice to record or None).

    An explicit list is used exactly as given - ``--precision int8`` stays the FP32-graph INT8, never
    swapped for int8fp16; only an absent list takes :func:`default_precisions` (and says so)."""
    if given is None:
        return default_precisions(), default_note()
    return tuple(given), None


def _readers(name: str) -> list[str]:
    """Precisions that read the options of ``name``: itself and those sharing them, in report order."""
    return [s.name for s in precision_specs() if s.name == name or name in s.shares_options]


def check_precision_options(precisions: Iterable[str], given: Mapping[str, Any] | None) -> dict[str, Any]:
    """Options per precision: every name known, each value its spec's options class, checked.

    Selected precisions without options get their defaults; a precision whose spec shares others'
    options gets them (given or default) through ``share``; an option set for a precision no selected
    precision reads is an error naming the flag and the precisions that read it (never ignored).
    """
    selected = list(precisions)
    for name in selected:
        precision_spec(name)
    out: dict[str, Any] = {}
    given_checked: dict[str, Any] = {}
    for name, opts in (given or {}).items():
        spec = precision_spec(name)
        if not isinstance(opts, spec.options):
            raise OptionError(f"precision_options[{name!r}] is {type(opts).__name__}, expected "
                              f"{spec.options.__name__}", fix=f"pass precision_options={{{name!r}: "
                                                              f"{spec.options.__name__}(...)}} (API) or its CLI flags")
        set_flags = [opts.flag(k) for k in opts.given()]
        readers = _readers(name)
        if set_flags and not any(r in selected for r in readers):
            raise OptionError(f"{set_flags[0]} is only used with --precision {' or '.join(readers)}, which this run "
                              f"does not select", fix=f"add {readers[0]} to --precision, or drop {set_flags[0]}")
        given_checked[name] = opts
        if name in selected:
            out[name] = opts
    for name in selected:
        spec = precision_spec(name)
        out.setdefault(name, spec.default_options())
        if spec.shares_options:
            out[name] = out[name].share({n: given_checked.get(n) or precision_spec(n).default_options()
                                         for n in spec.shares_options})
        out[name].check()
    return {n: out[n] for n in selected}


__all__ = ["BUILTIN_MODULES", "NAME_PATTERN", "NoOptions", "ORT_LEVELS", "PrecisionOptions", "PrecisionSpec",
           "check_precision_options", "comma_names", "default_note", "default_precisions", "find_spec",
           "precision_names", "precision_order", "precision_spec", "precision_specs", "register_precision",
           "resolve_precisions", "split_variant", "unregister_precision", "variant_name"]
