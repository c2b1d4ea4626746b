"""The input shapes latency, throughput and FLOPs are measured at, stated in the report.

A single-image model is timed at each ``--batch-sizes`` entry with its one fixed
input shape, as always. A model with a sequence axis (text) is timed at a stated
sequence length: the axis' ``opt`` (128 for text models whose positions allow it,
``--input-shape LENGTH`` sets it), clamped to its max, or ``sequence`` when the
caller gives one. Latency is read at
the smallest batch (batch 1 × sequence 128), throughput at the largest (8 × 128),
and FLOPs are counted at batch 1 with the same sequence length, so a short
sequence never makes a model look cheaper than what the report says it measured.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import OptionError
from ..models.io import BATCH, SEQUENCE, IOSpec


@dataclass(frozen=True)
class BenchShapes:
    """Sizes of every dynamic axis except the batch, and the batch sizes timed."""

    spec: IOSpec
    batch_sizes: tuple[int, ...]
    sizes: Mapping[str, int]  # non-batch dynamic axes → size used (e.g. {"sequence": 128})
    origin: Mapping[str, str]  # axis → where its size came from

    @property
    def sequence(self) -> int | None:
        return self.sizes.get(SEQUENCE)

    def axis_sizes(self, batch: int) -> dict[str, int]:
        return {BATCH: int(batch), **self.sizes}

    def input_shapes(self, batch: int) -> dict[str, list[int]]:
        """Concrete shape of every input at ``batch``."""
        sz = self.axis_sizes(batch)
        return {t.name: list(self.spec.concrete_shape(t.name, sz)) for t in self.spec.inputs}

    def describe(self, batch: int) -> str:
        """``batch 1 × sequence 128`` (``batch 1`` for a model with only a batch axis)."""
        return " × ".join([f"batch {batch}", *(f"{axis} {size}" for axis, size in self.sizes.items())])

    @property
    def latency_batch(self) -> int:
        return min(self.batch_sizes)

    @property
    def throughput_batch(self) -> int:
        return max(self.batch_sizes)

    def to_dict(self) -> dict[str, Any]:
        """The ``shapes`` record of the bench stage and report.json."""
        return {
            "axes": dict(self.sizes), "axes_origin": dict(self.origin),
            "latency": {"batch": self.latency_batch, "description": self.describe(self.latency_batch)},
            "throughput": {"batch": self.throughput_batch, "description": self.describe(self.throughput_batch)},
            "flops": {"batch": 1, "description": self.describe(1), "inputs": self.input_shapes(1)},
            "batches": {str(b): {"description": self.describe(b), "inputs": self.input_shapes(b)}
                        for b in self.batch_sizes},
        }


def bench_shapes(spec: IOSpec, batch_sizes: Sequence[int], sequence: int | None = None) -> BenchShapes:
    """The shapes to time ``spec`` at: every non-batch dynamic axis at its opt (``sequence``: the
    sequence axis at that length instead), each clamped to the axis' max."""
    sizes: dict[str, int] = {}
    origin: dict[str, str] = {}
    for axis in spec.dynamic_axis_names():
        if axis == BATCH or axis not in spec.axes:
            continue
        rng = spec.axes[axis]
        if axis == SEQUENCE and sequence is not None:
            if not rng.min <= sequence <= rng.max:
                raise OptionError(f"benchmark sequence length {sequence} is outside the model's sequence range "
                                  f"{rng.min}..{rng.max}", fix=f"time a length between {rng.min} and {rng.max}")
            sizes[axis], origin[axis] = int(sequence), "given"
            continue
        sizes[axis] = min(rng.opt, rng.max)
        origin[axis] = f"the {axis} axis' opt size ({rng.opt}, range {rng.min}..{rng.max})"
    if sequence is not None and SEQUENCE not in sizes:
        raise OptionError("a benchmark sequence length applies to models with a sequence axis (text models)",
                          fix="give no sequence length for this model")
    return BenchShapes(spec, tuple(int(b) for b in batch_sizes), sizes, origin)


def shape_label(shapes: Mapping[str, Any] | None, batch: Any) -> str:
    """``b=1`` for a model with only a batch axis, ``batch 1 × sequence 128`` otherwise (report tables)."""
    if not shapes or not (shapes.get("axes") or {}):
        return f"b={batch}"
    entry = (shapes.get("batches") or {}).get(str(batch)) or {}
    if entry.get("description"):
        return str(entry["description"])
    return " × ".join([f"batch {batch}", *(f"{k} {v}" for k, v in (shapes.get("axes") or {}).items())])
