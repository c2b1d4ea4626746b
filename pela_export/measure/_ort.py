"""Shared onnxruntime session setup, imported lazily so the package (and its
tests that do not touch ONNX) work without onnxruntime installed."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ArtifactError, OptionError


def default_threads() -> int:
    """Thread count used when none is given: torch's intra-op default, so that
    both backends are compared with the same parallelism."""
    import torch  # noqa: PLC0415

    return max(1, int(torch.get_num_threads()))


def make_session(onnx_path: str | os.PathLike[str], threads: int | None = None,
                 optimization: str = "all") -> tuple[Any, int]:
    """A CPU session for timing: full graph optimisation, sequential, an explicit thread count.

    Returns (session, threads used); ``None`` means torch's thread count so both
    backends are compared with the same parallelism.
    """
    from ..export.runtime import ort_session

    path = Path(onnx_path)
    if not path.is_file():
        raise ArtifactError(f"ONNX file {str(path)!r} does not exist",
                            fix="run the export stage first so the ONNX file exists")
    used = int(threads) if threads is not None else default_threads()
    return ort_session(path, threads=used, optimization=optimization), used


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
