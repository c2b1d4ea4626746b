"""Benchmarking and reporting: latency (onnxruntime, eager PyTorch), FLOPs,
sizes, accuracy/agreement, and the report.json / report.md that compare the
original and the compressed model side by side.

Names are resolved lazily (PEP 562): ``pela_export.bench.stats`` must import on a
device without PyTorch (the torch-free runtime uses it), while most siblings
import torch. ``from pela_export.bench import X`` works as before.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

#: public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "collect_logits_onnx": "accuracy", "collect_logits_torch": "accuracy", "evaluate_logits": "accuracy",
    "FlopCount": "flops", "count_flops": "flops",
    "MIN_RUNS": "latency", "bench_latency_grid": "latency", "bench_onnxruntime": "latency",
    "bench_torch_eager": "latency", "check_run_counts": "latency", "time_callable": "latency",
    "render_markdown": "markdown",
    "REPORT_SCHEMA_VERSION": "report", "VariantBenchmark": "report", "build_comparison": "report",
    "build_report": "report", "environment_info": "report", "load_report": "report", "to_plain": "report",
    "tool_version": "report", "validate_report": "report", "write_report": "report",
    "OnnxFileSize": "sizes", "count_params": "sizes", "onnx_file_size": "sizes",
    "LatencyStats": "stats",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:  # static analysers see the eager imports
    from .accuracy import collect_logits_onnx, collect_logits_torch, evaluate_logits  # noqa: F401
    from .flops import FlopCount, count_flops  # noqa: F401
    from .latency import (  # noqa: F401
        MIN_RUNS,
        bench_latency_grid,
        bench_onnxruntime,
        bench_torch_eager,
        check_run_counts,
        time_callable,
    )
    from .markdown import render_markdown  # noqa: F401
    from .report import (  # noqa: F401
        REPORT_SCHEMA_VERSION,
        VariantBenchmark,
        build_comparison,
        build_report,
        environment_info,
        load_report,
        to_plain,
        tool_version,
        validate_report,
        write_report,
    )
    from .sizes import OnnxFileSize, count_params, onnx_file_size  # noqa: F401
    from .stats import LatencyStats  # noqa: F401
