"""Optimisation profiles for every dynamic axis of every input, validated without TensorRT.

Sources, strongest first, per dynamic dimension of each input:

1. ``--profile NAME:MIN,OPT,MAX`` for that input;
2. another input's ``--profile`` that names the same axis (``batch``, ``sequence``...):
   inputs sharing an axis must agree, so ``--profile input_ids:1x16,8x128,32x512`` also
   sizes ``attention_mask`` and ``token_type_ids``; two explicit profiles that disagree
   on a shared axis are an error naming both inputs;
3. the batch axis (named ``batch``, or an unnamed/unknown leading axis): min 1,
   opt ``--opt-batch`` or else the batch the bench times most (:func:`batch_opt`: TensorRT
   tunes its kernels for opt, so the latency the report shows is measured where the engine
   is fastest), max ``--max-batch``;
4. the model's own axis ranges (:attr:`BuildOptions.axes`, filled from the model's
   I/O description, e.g. ``sequence`` 1/128/512 from its config).

Anything else (a dynamic axis nobody sized) is an error with a ready-to-edit ``--profile``.
The same resolution runs on the ONNX graph (:func:`resolve_profiles`, used by the build
plan) and on the model's I/O description before export (:func:`check_profiles`), so a bad
``--profile`` fails before minutes of compression.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import OptionError
from .options import BuildOptions, ShapeRange

BATCH_AXIS = "batch"


@dataclass(frozen=True)
class ProfileInput:
    """What profile resolution needs to know about one input: ``dims`` has None where dynamic."""

    name: str
    dims: tuple[int | None, ...]
    dim_names: tuple[str | None, ...]

    def describe(self) -> str:
        return "x".join(str(d) if d is not None else (n or "?") for d, n in zip(self.dims, self.dim_names, strict=True))

    @property
    def dynamic_axes(self) -> list[int]:
        return [i for i, d in enumerate(self.dims) if d is None]


def inputs_of_graph(graph: Any) -> list[ProfileInput]:
    """:class:`~.graph.GraphInfo` inputs as :class:`ProfileInput`."""
    return [ProfileInput(t.name, tuple(t.dims), tuple(t.dim_names)) for t in graph.inputs]


def inputs_of_io(io: Any) -> list[ProfileInput]:
    """The inputs of an :class:`~pela_export.models.io.IOSpec` (axis names for dynamic dims)."""
    return [ProfileInput(t.name, tuple(None if isinstance(d, str) else int(d) for d in t.shape),
                         tuple(d if isinstance(d, str) else None for d in t.shape)) for t in io.inputs]


def model_axes(io: Any) -> dict[str, tuple[int, int, int]]:
    """The model's named axis ranges except the batch (which --max-batch/--opt-batch size)."""
    return {name: (int(r.min), int(r.opt), int(r.max)) for name, r in io.axes.items() if name != BATCH_AXIS}


def with_model_axes(options: BuildOptions, io: Any) -> BuildOptions:
    """``options`` with the model's axis ranges as defaults (axes the user set keep their values)."""
    from dataclasses import replace

    if io is None:
        return options
    return replace(options, axes={**model_axes(io), **options.axes})


def with_bench_batches(options: BuildOptions, batch_sizes: Sequence[int] | None) -> BuildOptions:
    """``options`` knowing the batch sizes the bench stage times (the default profile's opt follows them)."""
    from dataclasses import replace

    return replace(options, bench_batches=tuple(int(b) for b in batch_sizes or ()))


def batch_opt(options: BuildOptions) -> tuple[int, str]:
    """The default profile's opt batch and why.

    ``--opt-batch`` when given; else the batch the bench times most: every batch size is timed for
    the same number of runs, so the largest one (within ``--max-batch``) holds most of the timed
    samples and time; 1 when no bench batch sizes are known.
    """
    if options.opt_batch is not None:
        return options.opt_batch, "--opt-batch"
    if options.bench_batches:
        opt = max(min(b, options.max_batch) for b in options.bench_batches)
        sizes = ",".join(str(b) for b in options.bench_batches)
        return opt, (f"opt {opt}: the batch the bench times most (--batch-sizes {sizes}: equal runs each, "
                     f"so the largest{' within --max-batch' if opt < max(options.bench_batches) else ''} "
                     "holds most of the timed samples)")
    return 1, "opt 1: no bench batch sizes known"


def _fmt(sizes: Sequence[int]) -> str:
    return f"min {sizes[0]}, opt {sizes[1]}, max {sizes[2]}"


def _check_given(t: ProfileInput, given: ShapeRange) -> None:
    if len(given.min) != len(t.dims):
        raise OptionError(f"--profile {t.name}: rank {len(given.min)} but the input is {t.describe()} "
                          f"(rank {len(t.dims)})", fix=f"give {len(t.dims)} dimensions per shape, e.g. "
                                                       f"{t.name}:{_example(t)}")
    for i, d in enumerate(t.dims):
        if d is not None and not given.min[i] == given.opt[i] == given.max[i] == d:
            raise OptionError(f"--profile {t.name}: dimension {i} is fixed at {d} in the model",
                              fix=f"use {d} for dimension {i} in min, opt and max")


def _example(t: ProfileInput, sizes: Mapping[int, int] | None = None) -> str:
    one = "x".join(str(d) if d is not None else str((sizes or {}).get(i, 1)) for i, d in enumerate(t.dims))
    return f"{one},{one},{one}"


def _shared_axes(inputs: Sequence[ProfileInput], given: Mapping[str, ShapeRange]) -> dict[str, tuple[str, tuple[int, int, int]]]:
    """``{axis name: (input that sized it, (min, opt, max))}`` from the explicit profiles; conflicts raise."""
    shared: dict[str, tuple[str, tuple[int, int, int]]] = {}
    for t in inputs:
        rng = given.get(t.name)
        if rng is None:
            continue
        for i in t.dynamic_axes:
            axis = t.dim_names[i]
            if not axis:
                continue
            sizes = (rng.min[i], rng.opt[i], rng.max[i])
            prev = shared.get(axis)
            if prev is not None and prev[1] != sizes:
                raise OptionError(f"--profile {prev[0]} and --profile {t.name} give the shared axis {axis!r} "
                                  f"different sizes ({_fmt(prev[1])} vs {_fmt(sizes)})",
                                  fix=f"give {axis!r} the same min/opt/max in both, or pass --profile for one of "
                                      "them only: inputs without one take the shared axes from it")
            shared.setdefault(axis, (t.name, sizes))
    return shared


def resolve_profiles(inputs: Sequence[ProfileInput], options: BuildOptions,
                     decisions: list[str] | None = None) -> dict[str, ShapeRange]:
    """min/opt/max shapes of every input with a dynamic axis (see the module docstring); raises OptionError."""
    names = [t.name for t in inputs]
    unknown = [n for n in options.profiles if n not in names]
    if unknown:
        raise OptionError(f"--profile names input {unknown[0]!r}, which the model does not have "
                          f"(its inputs: {', '.join(names) or 'none'})",
                          fix=f"use one of its inputs: {', '.join(names) or '(none)'}")
    for t in inputs:
        if t.name in options.profiles:
            _check_given(t, options.profiles[t.name])
    shared = _shared_axes(inputs, options.profiles)
    out: dict[str, ShapeRange] = {}
    for t in inputs:
        given = options.profiles.get(t.name)
        if given is not None:
            if t.dynamic_axes:
                out[t.name] = given
            continue
        if not t.dynamic_axes:
            continue
        lo: list[int] = []
        mid: list[int] = []
        hi: list[int] = []
        why: list[str] = []
        for i, d in enumerate(t.dims):
            if d is not None:
                lo.append(d)
                mid.append(d)
                hi.append(d)
                continue
            axis = t.dim_names[i]
            label = axis or f"dimension {i}"
            if axis and axis in shared:
                src, sizes = shared[axis]
                why.append(f"{label} {_fmt(sizes)} (shared with --profile {src})")
            elif axis == BATCH_AXIS or (i == 0 and axis not in options.axes):
                opt, opt_why = batch_opt(options)
                sizes = (1, opt, options.max_batch)
                automatic = "" if options.opt_batch is not None else f"; {opt_why}"
                why.append(f"{label} {_fmt(sizes)} (dynamic batch axis: --opt-batch/--max-batch{automatic})")
            elif axis and axis in options.axes:
                sizes = tuple(options.axes[axis])  # type: ignore[assignment]
                why.append(f"{label} {_fmt(sizes)} (the model's {axis} range)")
            else:
                others = [j for j in t.dynamic_axes if j != 0]
                raise OptionError(f"input {t.name!r} ({t.describe()}) has dynamic axes {others} besides the batch "
                                  "and nothing sizes them",
                                  fix=f"pass --profile {t.name}:MIN,OPT,MAX, e.g. {t.name}:{_example(t)}")
            lo.append(sizes[0])
            mid.append(sizes[1])
            hi.append(sizes[2])
        rng = ShapeRange(tuple(lo), tuple(mid), tuple(hi))
        rng.check(t.name)
        out[t.name] = rng
        if decisions is not None:
            decisions.append(f"profile for {t.name!r} from its dynamic axes: {'; '.join(why)} "
                             "(pass --profile or --max-batch to change)")
    return out


def check_profiles(options: BuildOptions, io: Any) -> dict[str, ShapeRange]:
    """The profiles a build of a model with I/O description ``io`` will use; OptionError before any export."""
    return resolve_profiles(inputs_of_io(io), with_model_axes(options, io))
