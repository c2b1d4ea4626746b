"""Precision in the graph: FP16 (sensitive ops kept FP32) and INT8 Q/DQ variants of
an FP32 ONNX model, each checked with ONNX Runtime."""
from __future__ import annotations

from . import fp16, int8  # noqa: F401  (register "fp16", "int8")
from .registry import PRECISIONS, Feeds, PrecisionConverter, PrecisionResult

__all__ = ["PRECISIONS", "Feeds", "PrecisionConverter", "PrecisionResult"]
