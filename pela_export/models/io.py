"""Named inputs and outputs of a model: the one I/O description every stage reads.

Why one record: export needs each input's dynamic axes, verification needs feeds
for every input (text models on padded batches of several lengths), calibration
and the precision writers need every input, TensorRT needs min/opt/max for every
dynamic axis, and deploy.json, goldens and the device runtime need the names.
Torch-free (numpy only) so the device runtime reads the same record from
deploy.json that the workstation wrote.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputShapeError, OptionError

BATCH = "batch"
SEQUENCE = "sequence"
#: Roles a generator knows how to fill with valid values.
INPUT_ROLES = ("tensor", "image", "token_ids", "attention_mask", "token_type_ids")
OUTPUT_ROLES = ("logits", "embedding", "hidden_state", "tensor")
Dim = int | str


@dataclass(frozen=True)
class AxisRange:
    """Sizes of one named dynamic axis: TensorRT profile min/opt/max and the export example."""

    min: int
    opt: int
    max: int

    def check(self, axis: str) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise OptionError(f"axis {axis!r} needs 1 <= min <= opt <= max, got {self.min}, {self.opt}, {self.max}",
                              fix="pass --profile NAME:MIN,OPT,MAX with min <= opt <= max")


@dataclass(frozen=True)
class InputSpec:
    """One named model input. ``shape`` holds axis names for dynamic axes, ints for fixed ones.

    ``low``/``high`` bound valid integer values (token ids in ``[low, high)``);
    ``role`` says how valid dummy values look (an attention mask is 1s then 0s).
    """

    name: str
    dtype: str
    shape: tuple[Dim, ...]
    role: str = "tensor"
    low: int | None = None
    high: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "role": self.role}
        if self.low is not None:
            d["low"] = self.low
        if self.high is not None:
            d["high"] = self.high
        return d


@dataclass(frozen=True)
class OutputSpec:
    """One named model output (``role``: logits, a pooled embedding, hidden states).

    ``shape`` lists the leading axes that are known (at least the batch axis); the rest
    come from running the model.
    """

    name: str
    shape: tuple[Dim, ...] = (BATCH,)
    dtype: str = "float32"
    role: str = "logits"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "role": self.role}


@dataclass(frozen=True)
class IOSpec:
    """Inputs (in the order ``forward`` takes them), outputs, and the ranges of every dynamic axis."""

    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    axes: Mapping[str, AxisRange] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [t.name for t in (*self.inputs, *self.outputs)]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise OptionError(f"input/output names must be unique, {dupes} repeats",
                              fix="give every input and output its own name")
        for axis in self.dynamic_axis_names():
            if axis not in self.axes:
                raise OptionError(f"dynamic axis {axis!r} has no size range", fix="declare its min/opt/max")
            self.axes[axis].check(axis)

    # -- names and axes ---------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def dynamic_axis_names(self) -> list[str]:
        """Every named axis, batch first, in order of first appearance."""
        seen = [d for t in (*self.inputs, *self.outputs) for d in t.shape if isinstance(d, str)]
        return list(dict.fromkeys(seen))

    def input(self, name: str) -> InputSpec:
        for t in self.inputs:
            if t.name == name:
                return t
        raise InputShapeError(f"the model has no input {name!r} (inputs: {', '.join(self.input_names)})",
                              fix=f"name one of the model's inputs: {', '.join(self.input_names)}")

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``{tensor: {axis index: axis name}}`` for the legacy exporter and reports."""
        out: dict[str, dict[int, str]] = {}
        for t in (*self.inputs, *self.outputs):
            dyn = {i: d for i, d in enumerate(t.shape) if isinstance(d, str)}
            if dyn:
                out[t.name] = dyn
        return out

    def has_batch(self) -> bool:
        return all(t.shape and t.shape[0] == BATCH for t in self.inputs)

    def is_text(self) -> bool:
        return any(t.role == "token_ids" for t in self.inputs)

    def is_single_tensor(self) -> bool:
        return len(self.inputs) == 1 and len(self.outputs) == 1

    def concrete_shape(self, name: str, sizes: Mapping[str, int]) -> tuple[int, ...]:
        """``name``'s shape with every axis name replaced by ``sizes[axis]`` (default: its opt)."""
        return tuple(d if isinstance(d, int) else int(sizes.get(d, self.axes[d].opt)) for d in self.input(name).shape)

    # -- dummy values -----------------------------------------------------------------------------
    def dummy(self, batch: int = 1, seed: int = 0, sizes: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
        """Deterministic valid feeds: floats ~ N(0, 1), ids in ``[low, high)``, right-padded masks.

        Row 0 is unpadded, later rows have random lengths; ids and token types at padded
        positions are 0, as a tokenizer pads them.
        """
        rng = np.random.default_rng(seed)
        sz = {BATCH: batch, **(sizes or {})}
        feeds: dict[str, np.ndarray] = {}
        lengths: np.ndarray | None = None
        seq_len = int(sz.get(SEQUENCE, self.axes[SEQUENCE].opt)) if SEQUENCE in self.axes else None
        if seq_len is not None:
            lengths = rng.integers(max(1, seq_len // 2), seq_len + 1, size=batch)
            lengths[0] = seq_len
        for t in self.inputs:
            shape = self.concrete_shape(t.name, sz)
            feeds[t.name] = _fill(t, shape, rng, lengths)
        return feeds


def _valid(shape: tuple[int, ...], lengths: np.ndarray | None) -> np.ndarray:
    """Mask of real (non-padding) positions for a (batch, sequence, ...) tensor."""
    if lengths is None or len(shape) < 2:
        return np.ones(shape, dtype=bool)
    pos = np.arange(shape[1]).reshape(1, -1, *([1] * (len(shape) - 2)))
    return np.broadcast_to(pos < lengths.reshape(-1, *([1] * (len(shape) - 1))), shape)


def _fill(t: InputSpec, shape: tuple[int, ...], rng: np.random.Generator, lengths: np.ndarray | None) -> np.ndarray:
    dtype = np.dtype(t.dtype)
    valid = _valid(shape, lengths)
    if t.role == "attention_mask":
        return valid.astype(dtype)
    if t.role == "token_type_ids":
        high = int(t.high or 1)
        if high < 2 or len(shape) < 2:
            return np.zeros(shape, dtype=dtype)
        split = (np.arange(shape[1]).reshape(1, -1) >= (lengths.reshape(-1, 1) // 2 if lengths is not None else 0))
        return (np.broadcast_to(split, shape) & valid).astype(dtype)
    if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
        low, high = int(t.low or 0), int(t.high or 100)
        values = rng.integers(low, max(high, low + 1), size=shape).astype(dtype)
        return np.where(valid, values, 0).astype(dtype) if t.role == "token_ids" else values
    return rng.standard_normal(shape).astype(dtype)


def single_input(name: str, shape: Sequence[int], dtype: str = "float32", output: str = "logits",
                 *, dynamic_batch: bool = True, role: str = "tensor", low: int | None = None,
                 high: int | None = None, max_batch: int = 32) -> IOSpec:
    """The classic one-tensor-in, one-tensor-out model (images), batch axis dynamic."""
    lead: tuple[Dim, ...] = (BATCH,) if dynamic_batch else (1,)
    axes = {BATCH: AxisRange(1, 1, max_batch)} if dynamic_batch else {}
    return IOSpec((InputSpec(name, dtype, (*lead, *(int(d) for d in shape)), role, low, high),),
                  (OutputSpec(output, lead),), axes)


def io_from_dict(d: Mapping[str, Any]) -> IOSpec:
    """Read the record written by :func:`io_to_dict` (deploy.json ``io``, stage records)."""
    try:
        inputs = tuple(InputSpec(str(t["name"]), str(t["dtype"]), tuple(t["shape"]), str(t.get("role", "tensor")),
                                 t.get("low"), t.get("high")) for t in d["inputs"])
        outputs = tuple(OutputSpec(str(t["name"]), tuple(t.get("shape", [BATCH])), str(t.get("dtype", "float32")),
                                   str(t.get("role", "tensor"))) for t in d["outputs"])
        axes = {str(k): AxisRange(int(v["min"]), int(v["opt"]), int(v["max"])) for k, v in d.get("axes", {}).items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise OptionError(f"malformed I/O description ({type(exc).__name__}: {exc})",
                          fix="re-run the stage that wrote it") from None
    return IOSpec(inputs, outputs, axes)


def io_to_dict(io: IOSpec) -> dict[str, Any]:
    return {"inputs": [t.to_dict() for t in io.inputs], "outputs": [t.to_dict() for t in io.outputs],
            "axes": {k: {"min": v.min, "opt": v.opt, "max": v.max} for k, v in io.axes.items()}}


# -- batches that are one array (single-input models) or a dict of arrays (every other model) ------
Batch = np.ndarray | Mapping[str, np.ndarray]


def batch_len(x: Batch) -> int:
    """Number of samples in a batch (the leading axis of its first array)."""
    first = next(iter(x.values())) if isinstance(x, Mapping) else x
    return int(np.shape(first)[0]) if np.ndim(first) else 1


def batch_slice(x: Batch, start: int, stop: int) -> Batch:
    """Samples ``start:stop`` of every array of the batch."""
    if isinstance(x, Mapping):
        return {k: v[start:stop] for k, v in x.items()}
    return x[start:stop]


def as_feeds(x: Batch, input_names: Sequence[str]) -> dict[str, np.ndarray]:
    """One batch as ``{input name: contiguous array}`` in the model's input order."""
    if isinstance(x, Mapping):
        missing = [n for n in input_names if n not in x]
        if missing:
            raise InputShapeError(f"batch lacks input(s) {missing} (has {sorted(x)})",
                                  fix="give a value for every model input")
        return {n: np.ascontiguousarray(x[n]) for n in input_names}
    if len(input_names) != 1:
        raise InputShapeError(f"one array given for a model with inputs {list(input_names)}",
                              fix="pass a dict with one array per input")
    return {input_names[0]: np.ascontiguousarray(x)}
