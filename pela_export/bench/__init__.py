"""Benchmarking and reporting: latency (onnxruntime, eager PyTorch), FLOPs,
sizes, accuracy/agreement, and the report.json / report.md that compare the
original and the compressed model side by side."""
from __future__ import annotations

from .accuracy import collect_logits_onnx, collect_logits_torch, evaluate_logits
from .flops import FlopCount, count_flops
from .latency import (
    MIN_RUNS,
    bench_latency_grid,
    bench_onnxruntime,
    bench_torch_eager,
    check_run_counts,
    time_callable,
)
from .markdown import render_markdown
from .report import (
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
from .sizes import OnnxFileSize, count_params, onnx_file_size
from .stats import LatencyStats

__all__ = [
    "MIN_RUNS",
    "REPORT_SCHEMA_VERSION",
    "FlopCount",
    "LatencyStats",
    "OnnxFileSize",
    "VariantBenchmark",
    "bench_latency_grid",
    "bench_onnxruntime",
    "bench_torch_eager",
    "build_comparison",
    "build_report",
    "check_run_counts",
    "collect_logits_onnx",
    "collect_logits_torch",
    "count_flops",
    "count_params",
    "environment_info",
    "evaluate_logits",
    "load_report",
    "onnx_file_size",
    "render_markdown",
    "time_callable",
    "to_plain",
    "tool_version",
    "validate_report",
    "write_report",
]
