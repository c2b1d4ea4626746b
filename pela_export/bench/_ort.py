"""Shared onnxruntime session setup, imported lazily so the package (and its
tests that do not touch ONNX) work without onnxruntime installed."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ArtifactError, DependencyError, OnnxCheckError, OptionError


def import_ort() -> Any:
    """Import onnxruntime or explain how to install it."""
    try:
        import onnxruntime as ort  # noqa: PLC0415
    except ImportError:
        raise DependencyError(
            "onnxruntime is not installed, so ONNX models cannot be benchmarked or evaluated",
            fix="pip install 'onnxruntime>=1.18'",
        ) from None
    return ort


def default_threads() -> int:
    """Thread count used when none is given: torch's intra-op default, so that
    both backends are compared with the same parallelism."""
    import torch  # noqa: PLC0415

    return max(1, int(torch.get_num_threads()))


def make_session(onnx_path: str | os.PathLike[str], threads: int | None = None) -> tuple[Any, int]:
    """Create a CPU session with full graph optimisation; returns (session, threads used)."""
    path = Path(onnx_path)
    if not path.is_file():
        raise ArtifactError(f"ONNX file {str(path)!r} does not exist",
                            fix="run the export stage first so the ONNX file exists")
    if threads is not None and threads < 1:
        raise OptionError(f"--threads must be >= 1, got {threads}", fix="pass --threads with a positive integer")
    ort = import_ort()
    used = int(threads) if threads is not None else default_threads()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = used
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped exceptions
        raise OnnxCheckError(f"onnxruntime cannot load {str(path)!r}: {exc}",
                             fix="re-run the export stage to regenerate the ONNX file") from None
    return sess, used


def check_input_name(sess: Any, input_name: str, onnx_path: str | os.PathLike[str]) -> None:
    """Fail with the real input names instead of onnxruntime's terse error."""
    names = [i.name for i in sess.get_inputs()]
    if input_name not in names:
        raise OptionError(f"ONNX model {str(onnx_path)!r} has no input named {input_name!r} (inputs: {names})",
                          fix="use one of the listed input names (the model's input_name)")


def resolve_output_name(sess: Any, output_name: str | None, onnx_path: str | os.PathLike[str]) -> str:
    """Pick the requested output, or the first one when none is named."""
    names = [o.name for o in sess.get_outputs()]
    if output_name is None:
        return names[0]
    if output_name not in names:
        raise OptionError(f"ONNX model {str(onnx_path)!r} has no output named {output_name!r} (outputs: {names})",
                          fix="use one of the listed output names (the model's output_name)")
    return output_name
