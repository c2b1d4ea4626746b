"""Export stage: PyTorch → checked ONNX → (simplified) ONNX, verified against PyTorch.

Each step is a small typed function returning a result dataclass with ``to_dict()``
for the run report; failures raise the :mod:`pela_export.errors` family.
"""
from __future__ import annotations

from ._opset import OpsetConversionError, convert_opset, default_opset
from .compare import Comparison, OutputStats, compare_arrays, compare_outputs
from .onnx_export import (
    DEFAULT_OPSET,
    MAX_OPSET,
    MIN_OPSET,
    ExportResult,
    OnnxFromTorch,
    check_opset,
    export_onnx,
    load_onnx,
)
from .params import (
    FactorReport,
    ParamCheck,
    check_parameter_preservation,
    count_onnx_params,
    count_torch_params,
)
from .runtime import ort_run, ort_session
from .simplify import SIMPLIFIERS, SimplifyResult, simplify_onnx
from .verify import VerifyResult, make_verification_inputs, verify_onnx

__all__ = [
    "DEFAULT_OPSET", "MAX_OPSET", "MIN_OPSET", "SIMPLIFIERS",
    "Comparison", "ExportResult", "FactorReport", "OnnxFromTorch", "OpsetConversionError", "OutputStats",
    "ParamCheck", "SimplifyResult", "VerifyResult",
    "check_opset", "check_parameter_preservation", "compare_arrays", "compare_outputs", "convert_opset",
    "count_onnx_params", "count_torch_params", "default_opset", "export_onnx", "load_onnx",
    "make_verification_inputs", "ort_run", "ort_session", "simplify_onnx", "verify_onnx",
]
