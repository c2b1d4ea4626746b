"""Export stage: PyTorch → checked ONNX → (simplified) ONNX, verified against PyTorch.

Each step is a small typed function returning a result dataclass with ``to_dict()``
for the run report; failures raise the :mod:`pela_export.errors` family.

Names are resolved lazily (PEP 562) so that :mod:`.runtime` (ONNX Runtime
sessions) and :mod:`.compare` (the output comparator) import on a device
without PyTorch; ``from pela_export.export import X`` works as before.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

#: public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "OpsetConversionError": "_opset", "convert_opset": "_opset", "default_opset": "_opset",
    "Comparison": "compare", "OutputStats": "compare", "compare_arrays": "compare", "compare_outputs": "compare",
    "DEFAULT_OPSET": "onnx_export", "MAX_OPSET": "onnx_export", "MIN_OPSET": "onnx_export",
    "ExportResult": "onnx_export", "OnnxFromTorch": "onnx_export", "check_opset": "onnx_export",
    "export_onnx": "onnx_export", "load_onnx": "onnx_export",
    "FactorReport": "params", "ParamCheck": "params", "check_parameter_preservation": "params",
    "count_onnx_params": "params", "count_torch_params": "params",
    "ort_run": "runtime", "ort_session": "runtime",
    "SIMPLIFIERS": "simplify", "SimplifyResult": "simplify", "simplify_onnx": "simplify",
    "VerifyResult": "verify", "make_verification_inputs": "verify", "verify_onnx": "verify",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:  # static analysers see the eager imports
    from ._opset import OpsetConversionError, convert_opset, default_opset  # noqa: F401
    from .compare import Comparison, OutputStats, compare_arrays, compare_outputs  # noqa: F401
    from .onnx_export import (  # noqa: F401
        DEFAULT_OPSET,
        MAX_OPSET,
        MIN_OPSET,
        ExportResult,
        OnnxFromTorch,
        check_opset,
        export_onnx,
        load_onnx,
    )
    from .params import (  # noqa: F401
        FactorReport,
        ParamCheck,
        check_parameter_preservation,
        count_onnx_params,
        count_torch_params,
    )
    from .runtime import ort_run, ort_session  # noqa: F401
    from .simplify import SIMPLIFIERS, SimplifyResult, simplify_onnx  # noqa: F401
    from .verify import VerifyResult, make_verification_inputs, verify_onnx  # noqa: F401
