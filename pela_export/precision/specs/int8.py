"""``int8``: Q/DQ INT8 in the graph (:mod:`pela_export.precision.int8`), its CLI options and downstream facts."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...errors import OptionError
from ...options import option
from ..spec import PrecisionOptions, PrecisionSpec, comma_names, register_precision


def _scale_methods() -> list[str]:
    from pela_export.calibration.methods import SCALE_METHODS

    return SCALE_METHODS.names()


@dataclass(frozen=True)
class Int8RunOptions(PrecisionOptions):
    """What the user may change about the INT8 graph and its calibration (None: the converter's default)."""

    TITLE: ClassVar[str] = "int8 variant"
    CONVERTER_KEYS: ClassVar[dict[str, str]] = {
        "calib_method": "method", "calib_percentile": "percentile", "int8_exclude": "exclude_nodes",
        "int8_exclude_ops": "exclude_ops", "int8_keep_worst": "keep_worst"}

    calib_method: str | None = option(flag="--calib-method", choices=_scale_methods,
                                      help="INT8 activation scales (default percentile)")
    calib_percentile: float | None = option(flag="--calib-percentile", type=float,
                                            help="percentile of |x| for --calib-method percentile (default 99.99)")
    int8_exclude: tuple[str, ...] | None = option(flag="--int8-exclude", type=comma_names,
                                                  help="node names kept in higher precision in the INT8 graph")
    int8_exclude_ops: tuple[str, ...] | None = option(flag="--int8-exclude-ops", type=comma_names,
                                                      help="op types kept in higher precision in the INT8 graph")
    int8_keep_worst: int | None = option(flag="--int8-keep-worst", type=int,
                                         help="keep the N nodes with the largest INT8 sensitivity unquantized")
    calib_batch_size: int | None = option(flag="--calib-batch-size", type=int,
                                          help="batch size of the INT8 calibration feeds (default 32)")

    @classmethod
    def feed_fields(cls) -> tuple[str, ...]:
        return ("calib_batch_size",)

    def calibration_batch_size(self) -> int | None:
        return self.calib_batch_size

    def check(self) -> None:
        if self.calib_percentile is not None and self.calib_method != "percentile":
            raise OptionError("--calib-percentile is only used with --calib-method percentile",
                              fix="add --calib-method percentile, or drop --calib-percentile")
        n = self.calib_batch_size
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise OptionError(f"--calib-batch-size must be an integer >= 1, got {n!r}", fix="pass --calib-batch-size 32")


INT8: PrecisionSpec = register_precision(
    "int8", label="INT8", order=20, color="#2ca02c",
    # INT8 requantisation rounding on the device moves values by a quantisation step
    golden_tolerance=(5e-2, 5e-2),
    converter="pela_export.precision.int8:convert_int8", needs_calibration=True, options=Int8RunOptions,
    run_options=("threads", "trt_version"),
    # ORT's fused INT8 CPU kernels saturate on AVX2 hosts without VNNI; the basic level
    # runs Q/DQ as simulated quantization, the arithmetic TensorRT's INT8 kernels approximate.
    ort_level="basic",
    ort_level_reason="fused INT8 CPU kernels saturate on AVX2 hosts without VNNI; basic runs Q/DQ as simulated "
                     "quantization, the arithmetic TensorRT's INT8 kernels approximate",
    trt_flags=("INT8",), quantized=True,
    default=False)  # by name only: int8fp16 is the default INT8 variant (Q/DQ on the FP16 graph)
