"""``fp16``: FP16 in the graph (:mod:`pela_export.precision.fp16`), its CLI options and downstream facts."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ...errors import OptionError
from ...options import option
from ..spec import PrecisionOptions, PrecisionSpec, comma_names, register_precision


@dataclass(frozen=True)
class Fp16RunOptions(PrecisionOptions):
    """What the user may change about the FP16 graph (None: the converter's default)."""

    TITLE: ClassVar[str] = "fp16 variant"
    CONVERTER_KEYS: ClassVar[dict[str, str]] = {"fp16_keep_ops": "block_ops", "fp16_keep_nodes": "block_nodes",
                                                "fp16_range_margin": "range_margin"}

    fp16_keep_ops: tuple[str, ...] | None = option(
        flag="--fp16-keep-ops", type=comma_names,
        help="op types kept FP32 in the FP16 graph (replaces the default list: normalisations, Softmax, "
             "reductions, Pow, Sqrt, Exp, Log)")
    fp16_keep_nodes: tuple[str, ...] | None = option(flag="--fp16-keep-nodes", type=comma_names,
                                                     help="node names kept FP32 in the FP16 graph")
    fp16_io: str | None = option(flag="--fp16-io", choices=("fp32", "fp16"),
                                 help="dtype of the FP16 graph's inputs/outputs (default fp32)")
    fp16_range_margin: float | None = option(
        flag="--fp16-range-margin", type=float,
        help="keep FP32 every node whose calibration activations reach this fraction of the FP16 range "
             "(0 < x <= 1, default 1)")

    def converter_options(self) -> dict[str, Any]:
        opts = super().converter_options()
        if "fp16_io" in opts:
            opts["keep_io_fp32"] = opts.pop("fp16_io") == "fp32"
        return opts

    def check(self) -> None:
        if self.fp16_io not in (None, "fp32", "fp16"):
            raise OptionError(f"--fp16-io must be fp32 or fp16, got {self.fp16_io!r}", fix="pass --fp16-io fp32")
        m = self.fp16_range_margin
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, float)) or not 0.0 < float(m) <= 1.0):
            raise OptionError(f"--fp16-range-margin must be a number in (0, 1], got {m!r}",
                              fix="pass --fp16-range-margin 0.5 to keep ops reaching half the FP16 range in FP32")


FP16: PrecisionSpec = register_precision(
    "fp16", label="FP16", order=10, color="#ff7f0e",
    # device FP16 kernels accumulate in a different order and keep FP16 intermediates
    golden_tolerance=(1e-2, 1e-2),
    converter="pela_export.precision.fp16:convert_fp16",
    needs_calibration=False,  # calibration feeds only enable the overflow check
    options=Fp16RunOptions, trt_flags=("FP16",), default=True)
