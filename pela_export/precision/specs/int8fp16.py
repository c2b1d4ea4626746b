"""``int8fp16``: INT8 Q/DQ on the FP16 graph (:mod:`pela_export.precision.int8fp16`), the INT8 variant for TensorRT.

It has no flags of its own: the INT8 calibration flags (``--calib-method``, ``--int8-exclude``, ...) and
the FP16 flags (``--fp16-keep-ops``, ``--fp16-io``, ...) apply to it as they do to ``int8`` and ``fp16``
(``shares_options``), so one run's INT8 variants calibrate alike and its FP16 variants keep the same ops FP32.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from ..spec import PrecisionOptions, PrecisionSpec, register_precision
from .fp16 import Fp16RunOptions
from .int8 import Int8RunOptions


@dataclass(frozen=True)
class Int8Fp16RunOptions(PrecisionOptions):
    """The int8 and fp16 options this variant reads (filled by ``share`` from the run's options)."""

    TITLE: ClassVar[str] = "int8fp16 variant"

    int8: Int8RunOptions = field(default_factory=Int8RunOptions)
    fp16: Fp16RunOptions = field(default_factory=Fp16RunOptions)

    def share(self, others: Mapping[str, PrecisionOptions]) -> Int8Fp16RunOptions:
        """Take the run's int8/fp16 options, except where these were set (API) themselves."""
        int8, fp16 = others.get("int8"), others.get("fp16")
        return replace(self,
                       int8=self.int8 if self.int8.given() or not isinstance(int8, Int8RunOptions) else int8,
                       fp16=self.fp16 if self.fp16.given() or not isinstance(fp16, Fp16RunOptions) else fp16)

    def converter_options(self) -> dict[str, Any]:
        return {**self.fp16.converter_options(), **self.int8.converter_options()}  # disjoint converter keys

    def calibration_batch_size(self) -> int | None:
        return self.int8.calibration_batch_size()

    def check(self) -> None:
        self.int8.check()
        self.fp16.check()


INT8FP16: PrecisionSpec = register_precision(
    "int8fp16", label="INT8+FP16", order=25, color="#17becf",
    # the INT8 requantisation step (int8's 5e-2) plus FP16 rounding of every unquantized op (fp16's 1e-2)
    golden_tolerance=(6e-2, 6e-2),
    converter="pela_export.precision.int8fp16:convert_int8fp16", needs_calibration=True,
    options=Int8Fp16RunOptions, run_options=("threads", "trt_version"),
    ort_level="basic",
    ort_level_reason="fused INT8 CPU kernels saturate on AVX2 hosts without VNNI; basic runs Q/DQ as simulated "
                     "quantization, the arithmetic TensorRT's INT8 kernels approximate",
    trt_flags=("FP16", "INT8"), quantized=True, shares_options=("fp16", "int8"),
    default=True,
    default_reason="INT8 Q/DQ on the FP16 graph, the INT8 variant for TensorRT targets: the FP32-graph int8 runs "
                   "every unquantized op in FP32 on TensorRT 11 and strongly typed 10.x and can be slower than fp16 "
                   "(NVIDIA/Model-Optimizer#167); --precision int8 still selects it")
