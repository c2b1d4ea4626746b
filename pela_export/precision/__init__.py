"""Precision in the graph: FP16 (sensitive ops kept FP32) and INT8 Q/DQ variants of
an FP32 ONNX model, each checked with ONNX Runtime.

Exports resolve lazily (PEP 562) so :mod:`.spec` - the registered precision specs -
imports without onnx on the device; the converters load when first used.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .registry import PRECISIONS, Feeds, PrecisionConverter, PrecisionResult
    from .spec import PrecisionSpec, precision_spec, precision_specs, register_precision

__getattr__, __dir__ = lazy_exports(__name__, {
    "PRECISIONS": "registry", "Feeds": "registry", "PrecisionConverter": "registry", "PrecisionResult": "registry",
    "PrecisionSpec": "spec", "precision_spec": "spec", "precision_specs": "spec", "register_precision": "spec",
}, globals())

__all__ = ["PRECISIONS", "Feeds", "PrecisionConverter", "PrecisionResult", "PrecisionSpec", "precision_spec",
           "precision_specs", "register_precision"]
