"""The built-in precisions, one module each: importing this package registers them.

Light on purpose (no onnx, numpy or torch): the converters are named by
``"module:attr"`` and imported only when a variant is written.
"""
from __future__ import annotations

from . import fp16, fp32, int8, int8fp16  # noqa: F401  (register "fp32", "fp16", "int8", "int8fp16")
