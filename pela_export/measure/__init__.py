"""Measurement: latency (onnxruntime, eager PyTorch), latency statistics, FLOPs,
parameter counts and file sizes, accuracy/agreement of outputs, benchmark shapes
and the environment a figure was measured in.

Library modules (structured lowering, the TensorRT runner, the device runtime)
import from here; report rendering lives in :mod:`pela_export.report`, so no
measuring code imports "up" into the report.

Names are resolved lazily (PEP 562): ``pela_export.measure.stats`` must import on a
device without PyTorch (the torch-free runtime uses it), while most siblings
import torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

#: public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "collect_logits_onnx": "accuracy", "collect_logits_torch": "accuracy", "evaluate_logits": "accuracy",
    "FlopCount": "flops", "count_flops": "flops",
    "MIN_RUNS": "latency", "bench_latency_grid": "latency", "bench_onnxruntime": "latency",
    "bench_torch_eager": "latency", "check_run_counts": "latency", "interleaved_p50_ms": "latency",
    "time_callable": "latency",
    "OnnxFileSize": "sizes", "count_params": "sizes", "onnx_file_size": "sizes",
    "LatencyStats": "stats",
    "TOOL_NAME": "environment", "environment_info": "environment", "tool_version": "environment",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:  # static analysers see the eager imports
    from .accuracy import collect_logits_onnx, collect_logits_torch, evaluate_logits  # noqa: F401
    from .environment import TOOL_NAME, environment_info, tool_version  # noqa: F401
    from .flops import FlopCount, count_flops  # noqa: F401
    from .latency import (  # noqa: F401
        MIN_RUNS,
        bench_latency_grid,
        bench_onnxruntime,
        bench_torch_eager,
        check_run_counts,
        interleaved_p50_ms,
        time_callable,
    )
    from .sizes import OnnxFileSize, count_params, onnx_file_size  # noqa: F401
    from .stats import LatencyStats  # noqa: F401
