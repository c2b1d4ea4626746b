"""``fp32``: the exported graph itself - no converter, the reference every variant is measured against."""
from __future__ import annotations

from ..spec import PrecisionSpec, register_precision

#: FP32 is not bit-exact on the device either: TensorRT runs FP32 layers in TF32 by default on Ampere and newer
#: (Jetson Orin, Thor), ~1e-3 relative per op.
FP32: PrecisionSpec = register_precision(
    "fp32", label="FP32", order=0, color="#1f77b4", golden_tolerance=(2e-3, 1e-2), converter=None)
