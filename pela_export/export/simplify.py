"""Graph simplification (onnxsim / onnxslim / none) with loud, recorded fallbacks.

Simplifiers fold constants and fuse patterns that TensorRT's parser otherwise has
to handle; they also occasionally fail or mis-simplify. A failure falls through to
the next method with a warning, and :class:`SimplifyResult` says which one ran.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnx

from .._io import atomic_path
from .._registry import Registry
from ..errors import DependencyError, ExportError, PelaExportError
from ._opset import default_opset
from .onnx_export import load_onnx

log = logging.getLogger(__name__)

#: A simplifier takes a checked model and returns a new one, raising on failure.
Simplifier = Callable[[onnx.ModelProto], onnx.ModelProto]
SIMPLIFIERS: Registry[Simplifier] = Registry("simplifier", flag="--simplifier")


class SimplifyFailed(RuntimeError):
    """A simplifier ran but refused or broke the model (not a user error by itself)."""


@dataclass
class SimplifyResult:
    """Which method actually produced the file, and why others were skipped."""

    method_requested: str
    method_used: str
    src: Path
    dst: Path
    nodes_before: int
    nodes_after: int
    initializers_before: int
    initializers_after: int
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def fell_back(self) -> bool:
        return self.method_used != self.method_requested

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(src=str(self.src), dst=str(self.dst), fell_back=self.fell_back)
        return d


@contextlib.contextmanager
def _quiet_stdout() -> Any:
    """onnxsim prints progress to stdout; keep it in the debug log instead."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        yield
    if buf.getvalue().strip():
        log.debug("simplifier output:\n%s", buf.getvalue())


@SIMPLIFIERS.register("onnxsim")
def _onnxsim(model: onnx.ModelProto, check_n: int = 1) -> onnx.ModelProto:
    try:
        import onnxsim
    except ImportError as exc:
        raise DependencyError(f"onnxsim is not importable ({exc})",
                              fix="pip install onnxsim, or pass --simplifier onnxslim / none") from None
    with _quiet_stdout():
        simplified, check_ok = onnxsim.simplify(model, check_n=check_n, test_input_shapes=_check_shapes(model))
    if not check_ok:
        raise SimplifyFailed(f"onnxsim's own check failed (random inputs, check_n={check_n}): "
                             "the simplified graph's outputs differ from the original")
    return simplified


def _check_shapes(model: onnx.ModelProto) -> dict[str, list[int]] | None:
    """Concrete shapes for onnxsim's own check when an input has a dynamic axis past the batch.

    onnxsim only fills a symbolic leading (batch) axis by itself; a dynamic sequence axis needs a
    size. Only the check uses these (the graph keeps its symbolic axes).
    """
    shapes: dict[str, list[int]] = {}
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if any(not d.HasField("dim_value") for d in list(dims)[1:]):
            shapes[value.name] = [int(d.dim_value) if d.HasField("dim_value") else 2 for d in dims]
    return shapes or None


@SIMPLIFIERS.register("onnxslim")
def _onnxslim(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        import onnxslim
    except ImportError as exc:
        raise DependencyError(f"onnxslim is not importable ({exc})",
                              fix="pip install onnxslim, or pass --simplifier onnxsim / none") from None
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # onnxslim may edit its input in place
    with _quiet_stdout():
        slimmed = onnxslim.slim(copy)
    if not isinstance(slimmed, onnx.ModelProto):
        raise SimplifyFailed(f"onnxslim returned {type(slimmed).__name__}, not a model")
    return slimmed


@SIMPLIFIERS.register("none")
def _none(model: onnx.ModelProto) -> onnx.ModelProto:
    return model


def _validate(before: onnx.ModelProto, after: onnx.ModelProto) -> None:
    """A simplified model must still be valid, at the same opset, with the same I/O names."""
    try:
        onnx.checker.check_model(after)
    except Exception as exc:
        raise SimplifyFailed(f"result fails onnx.checker: {str(exc).strip().splitlines()[0]}") from exc
    if default_opset(after) != default_opset(before):
        raise SimplifyFailed(f"opset changed {default_opset(before)} -> {default_opset(after)}")
    io_before = ([i.name for i in before.graph.input], [o.name for o in before.graph.output])
    io_after = ([i.name for i in after.graph.input], [o.name for o in after.graph.output])
    if io_before != io_after:
        raise SimplifyFailed(f"graph inputs/outputs changed {io_before} -> {io_after}")


def simplify_onnx(src: str | os.PathLike[str], dst: str | os.PathLike[str], method: str = "onnxsim",
                  fallbacks: Sequence[str] = ("onnxslim", "none")) -> SimplifyResult:
    """Simplify ``src`` into ``dst`` (atomically), trying ``method`` then ``fallbacks`` in order."""
    chain = list(dict.fromkeys([method, *fallbacks]))
    funcs = [(name, SIMPLIFIERS.get(name)) for name in chain]  # OptionError for unknown names, before any work
    start = time.perf_counter()
    model = load_onnx(src)
    notes: list[str] = []
    for i, (name, func) in enumerate(funcs):
        work = onnx.ModelProto()
        work.CopyFrom(model)
        try:
            out = func(work)
            _validate(model, out)
        except Exception as exc:  # every failure falls through, loudly
            if isinstance(exc, PelaExportError):
                reason = f"{exc.problem} (fix: {exc.fix})" if exc.fix else exc.problem
            else:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            nxt = funcs[i + 1][0] if i + 1 < len(funcs) else None
            note = f"simplifier {name!r} failed: {type(exc).__name__}: {reason}" + (
                f"; falling back to {nxt!r}" if nxt else "")
            notes.append(note)
            warnings.warn(note, RuntimeWarning, stacklevel=2)
            log.warning(note)
            continue
        final = Path(dst)
        with atomic_path(final) as tmp:
            onnx.save_model(out, str(tmp))
        return SimplifyResult(
            method_requested=method, method_used=name, src=Path(src), dst=final,
            nodes_before=len(model.graph.node), nodes_after=len(out.graph.node),
            initializers_before=len(model.graph.initializer), initializers_after=len(out.graph.initializer),
            warnings=notes, seconds=round(time.perf_counter() - start, 3))
    raise ExportError("every simplifier failed:\n" + "\n".join(f"  - {n}" for n in notes),
                      fix="pass --simplifier none to keep the exported graph as is", where=str(src))
