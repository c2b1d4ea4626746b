"""ONNX Runtime session helpers, imported lazily so the package loads without it."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DependencyError, OnnxCheckError, OptionError

CPU = "CPUExecutionProvider"


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise DependencyError(f"onnxruntime is not importable ({exc})",
                              fix="pip install onnxruntime (or onnxruntime-gpu)") from None
    return onnxruntime


OPTIMIZATION_LEVELS = ("all", "basic")


def ort_session(path: str | os.PathLike[str] | bytes, threads: int | None = None,
                providers: Sequence[str] = (CPU,), spinning: bool = False, optimization: str = "all") -> Any:
    """An InferenceSession on ``providers`` (CPU by default: the numeric reference).

    ``threads`` caps intra-op threads so verification on shared machines stays polite;
    ``None`` lets ONNX Runtime decide. Intra-op spin-waiting is off by default: on
    small or shared machines (2 vCPUs with steal time) it cost deit_small ~50 ms per
    call at 2 threads (135 vs 85 ms, bench/results), and it never changes outputs.
    ``optimization="basic"`` keeps Q/DQ pairs as simulated quantization in float:
    ORT's fused INT8 CPU kernels saturate on AVX2 hosts without VNNI, so INT8
    accuracy is measured at the basic level (the same arithmetic on every CPU).
    """
    ort = _onnxruntime()
    p = Path("<in-memory model>") if isinstance(path, bytes) else Path(path)
    if not isinstance(path, bytes) and not p.is_file():
        raise OnnxCheckError("ONNX file not found",
                             fix="run the export stage first, or pass the path of an existing .onnx file",
                             where=str(p))
    opts = ort.SessionOptions()
    if optimization not in OPTIMIZATION_LEVELS:
        raise OptionError(f"unknown ONNX Runtime optimisation level {optimization!r}",
                          fix=f"use one of: {', '.join(OPTIMIZATION_LEVELS)}")
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimization == "all"
                                     else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3  # errors only: ORT's unused-initializer chatter is not actionable
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        if threads < 1:
            raise OptionError(f"threads must be >= 1, got {threads}", fix="pass --threads with a positive integer")
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(path if isinstance(path, bytes) else str(p), sess_options=opts, providers=list(providers))
    except Exception as exc:
        msg = str(exc).strip().splitlines()
        raise OnnxCheckError(
            f"ONNX Runtime cannot load the model: {msg[0] if msg else type(exc).__name__}",
            fix="re-export (try --legacy-exporter or another --opset) or --simplifier none",
            where=str(p)) from exc


def ort_run(session: Any, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run all outputs and return them by name."""
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, dict(feeds))
    return dict(zip(names, values, strict=True))
