"""ONNX graph helpers shared by statistics, Q/DQ insertion and sensitivity.

Calibration never edits the caller's file: models are loaded into memory,
modified on a copy and handed to ONNX Runtime as bytes (or a temporary
directory when they exceed protobuf's 2 GiB limit). Nodes get stable names
first, because exclusions and reports refer to nodes by name.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pela_export.errors import DependencyError, OnnxCheckError, OptionError

#: Protobuf's hard limit; above it a model must be saved with external data.
PROTO_LIMIT = (2 << 30) - (64 << 20)
FLOAT_TYPES = frozenset({1})  # TensorProto.FLOAT: what INT8 calibration observes and quantizes


def onnx_module() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise DependencyError(f"onnx is not importable ({exc})", fix="pip install onnx") from None
    return onnx


def onnxruntime_module() -> Any:
    from pela_export.export.runtime import _onnxruntime

    return _onnxruntime()


def load_model(path: str | os.PathLike[str], external_data: bool = True) -> Any:
    """The ONNX model at ``path`` (external data unless told not), or an OnnxCheckError saying why not."""
    onnx = onnx_module()
    p = Path(path)
    if not p.is_file():
        raise OnnxCheckError("ONNX file not found", where=str(p),
                             fix="run the export stage first, or pass the path of an existing .onnx file")
    try:
        return onnx.load(str(p), load_external_data=external_data)
    except Exception as exc:  # DecodeError, missing external data, ...
        raise OnnxCheckError(f"cannot load the ONNX file ({type(exc).__name__}: {exc})", where=str(p),
                             fix="re-export the model") from None


def copy_model(model: Any) -> Any:
    onnx = onnx_module()
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def default_opset(model: Any) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def name_nodes(model: Any) -> Any:
    """Give every unnamed node a unique ``<Op>_<index>`` name (in place) so it can be excluded by name."""
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)
    return model


def constant_tensors(model: Any) -> set[str]:
    """Initializers, Constant outputs and everything computed only from them (no calibration needed)."""
    graph = model.graph
    inputs = {i.name for i in graph.input}
    const = {i.name for i in graph.initializer if i.name not in inputs}
    for node in graph.node:
        if node.op_type == "Constant" or (node.input and all(not t or t in const for t in node.input)):
            const.update(o for o in node.output if o)
    return const


def tensor_types(model: Any) -> dict[str, int]:
    """Element type of every named tensor known after ONNX shape inference (best effort)."""
    onnx = onnx_module()
    try:
        inferred = onnx.shape_inference.infer_shapes(model) if model.ByteSize() < PROTO_LIMIT else model
    except Exception:  # inference is advisory: unknown types are checked on the real arrays
        inferred = model
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.value_info, *g.output)
             if v.type.HasField("tensor_type")}
    types.update({i.name: i.data_type for i in g.initializer})
    return types


def activation_tensors(model: Any) -> list[str]:
    """Float tensors that change with the input, in graph order: what a calibration observes."""
    const = constant_tensors(model)
    types = tensor_types(model)
    names: list[str] = []
    seen: set[str] = set()
    candidates = [i.name for i in model.graph.input] + [o for n in model.graph.node for o in n.output]
    for name in candidates:
        if name and name not in const and name not in seen and types.get(name, 1) in FLOAT_TYPES:
            names.append(name)
            seen.add(name)
    return names


def expose(model: Any, names: Iterable[str]) -> Any:
    """A copy of ``model`` whose graph outputs also include ``names`` (intermediate tensors)."""
    onnx = onnx_module()
    out = copy_model(model)
    present = {o.name for o in out.graph.output}
    for name in names:
        if name not in present:
            out.graph.output.append(onnx.ValueInfoProto(name=name))
            present.add(name)
    return out


@contextlib.contextmanager
def _model_source(model: Any) -> Iterator[bytes | str]:
    """Serialized bytes, or a temporary file with external data for models past the protobuf limit."""
    if model.ByteSize() < PROTO_LIMIT:
        yield model.SerializeToString()
        return
    onnx = onnx_module()
    with tempfile.TemporaryDirectory(prefix="pela-calib-") as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save_model(model, str(path), save_as_external_data=True, location="model.onnx.data")
        yield str(path)


def session(model: Any, threads: int | None = None, optimize: bool = False) -> Any:
    """A CPU InferenceSession on an in-memory model.

    ``optimize=False`` (basic level) keeps Q/DQ as simulated quantization in
    float: the same arithmetic on every CPU, so errors measured here are
    reproducible and do not depend on the host's int8 kernels.
    """
    from pela_export.export.runtime import ort_session

    with _model_source(model) as src:
        return ort_session(src, threads=threads, optimization="all" if optimize else "basic")


def fixed_batch(sess: Any) -> int | None:
    """The static batch size of a session's inputs, or None when the batch axis is dynamic."""
    dims = {i.shape[0] for i in sess.get_inputs() if i.shape and isinstance(i.shape[0], int)}
    return dims.pop() if len(dims) == 1 else None


def micro_batches(feeds: Iterable[Mapping[str, np.ndarray]], size: int | None = None,
                  fixed: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Re-cut batches: exactly ``fixed`` examples for a static-batch model (a short remainder is
    dropped), else at most ``size`` (bounds the memory of exposed intermediate tensors)."""
    step = fixed or size
    for batch in feeds:
        n = len(next(iter(batch.values()))) if batch else 0
        if not step or (n <= step and not fixed):
            yield dict(batch)
            continue
        stop = n - n % step if fixed else n
        for s in range(0, stop, step):
            yield {k: v[s:s + step] for k, v in batch.items()}


def run(sess: Any, feeds: Mapping[str, np.ndarray], names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Outputs by name; a feed that does not fit the model is a user error, not a traceback."""
    names = names or [o.name for o in sess.get_outputs()]
    wanted = {i.name for i in sess.get_inputs()}
    try:
        values = sess.run(names, {k: v for k, v in feeds.items() if k in wanted})
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        expected = ", ".join(f"{i.name} {i.shape} {i.type}" for i in sess.get_inputs())
        got = ", ".join(f"{k} {list(np.shape(v))} {np.asarray(v).dtype}" for k, v in feeds.items())
        raise OptionError(f"calibration batch does not fit the model ({first}); model inputs: {expected}; "
                          f"batch: {got}", fix="pass calibration data adapted to the model input "
                          "(name, shape, dtype), e.g. through calibration.calibration_set") from None
    return dict(zip(names, values, strict=True))
