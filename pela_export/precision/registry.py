"""Precision converters, looked up through the precision specs (:mod:`.spec`).

Each converter reads an FP32 ONNX file and writes the variant atomically;
precision lives in the graph (Cast / Q-DQ nodes), so it can be checked with ONNX
Runtime on a CPU and TensorRT 11 can build it strongly typed. :data:`PRECISIONS`
is a view of the registered specs that have a converter, not a second table."""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .spec import precision_names, precision_spec

# Calibration inputs: one dict per batch, ONNX input name → array (model-ready, FP32).
Feeds = Sequence[Mapping[str, np.ndarray]]


@dataclass
class PrecisionResult:
    """What a converter wrote and every automatic decision it made (for the report)."""

    precision: str  # registry name, e.g. "fp16" or "int8"
    path: Path  # the written ONNX file
    kept_fp32: list[dict[str, str]] = field(default_factory=list)  # {"node", "op", "reason"}
    details: dict[str, Any] = field(default_factory=dict)  # converter-specific record (JSON-able)

    def to_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "path": str(self.path), "kept_fp32": self.kept_fp32,
                "details": self.details}


class PrecisionConverter(Protocol):
    """``src`` FP32 ONNX → ``dst`` variant. ``calib`` is required by converters that say so."""

    needs_calibration: bool

    def __call__(self, src: Path, dst: Path, *, calib: Feeds | None = None,
                 options: Mapping[str, Any] | None = None) -> PrecisionResult: ...


class ConverterView:
    """``PRECISIONS.get("int8")``: the converter of a registered spec (imported on first use)."""

    def get(self, name: str) -> PrecisionConverter:
        conv: PrecisionConverter = precision_spec(name).resolve()
        return conv

    def names(self) -> list[str]:
        return precision_names(converted=True)

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


PRECISIONS = ConverterView()
