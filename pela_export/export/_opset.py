"""Opset down-conversion for dynamo exports.

The dynamo exporter's op library (torchlib) only emits opset >= 18. Asked for 17
(what TensorRT 8.6 parses), torch hands the graph to the ONNX C version converter
*without its initializers*; that fails on ordinary ops (ReduceMean with constant
axes, Pad) and torch then only logs and keeps opset 18. So we export at 18 and
rewrite the handful of ops whose definition changed in opset 18 ourselves, where
the constants are visible, and let ``onnx.version_converter`` (with initializers)
take the graph further down if an older opset is asked for.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx
from onnx import defs, helper, numpy_helper

from ..errors import ExportError

#: Reductions whose ``axes`` moved from an attribute (opset 13) to an input (opset 18).
_REDUCE_AXES_TO_ATTR = frozenset({
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
    "ReduceMin", "ReduceProd", "ReduceSumSquare",
})

_FIX = ("try --legacy-exporter (it emits opsets 13-17 natively), or pass --opset 18 "
        "if your TensorRT parses it (TensorRT >= 10)")


class OpsetConversionError(ExportError):
    """A node cannot be expressed at the requested opset."""


def default_opset(model: onnx.ModelProto) -> int:
    """The model's opset for the default ("" / "ai.onnx") domain."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    raise OpsetConversionError("model has no default-domain opset import", fix=_FIX)


def _set_default_opset(model: onnx.ModelProto, version: int) -> None:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = version


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every tensor whose value is known statically: initializers and Constant outputs."""
    out = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in _all_nodes(model.graph):
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for attr in node.attribute:
                if attr.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(attr.t)
                elif attr.name in ("value_ints", "value_int"):
                    out[node.output[0]] = np.asarray(helper.get_attribute_value(attr), dtype=np.int64)
    return out


def _all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _all_nodes(g)


def _pop_attr(node: onnx.NodeProto, name: str) -> onnx.AttributeProto | None:
    for i, attr in enumerate(node.attribute):
        if attr.name == name:
            found = onnx.AttributeProto()
            found.CopyFrom(attr)
            del node.attribute[i]
            return found
    return None


def _fail(node: onnx.NodeProto, why: str) -> OpsetConversionError:
    return OpsetConversionError(
        f"{node.op_type} node {node.name or node.output[0]!r}: {why}; it has no opset-17 equivalent",
        fix=_FIX,
    )


def _rewrite_node(node: onnx.NodeProto, consts: dict[str, np.ndarray],
                  shapes: dict[str, list[int | None]], dropped: set[str]) -> str | None:
    """Rewrite one opset-18 node in place to its opset-13..17 form; return a note."""
    op = node.op_type
    if op in _REDUCE_AXES_TO_ATTR:
        noop = _pop_attr(node, "noop_with_empty_axes")
        has_axes = len(node.input) >= 2 and node.input[1] != ""
        if not has_axes:
            if noop is not None and noop.i == 1:
                raise _fail(node, "noop_with_empty_axes=1 without axes")
            return f"{op}: dropped noop_with_empty_axes"
        if node.input[1] not in consts:
            raise _fail(node, "axes is computed at run time")
        axes = [int(a) for a in consts[node.input[1]].reshape(-1)]
        dropped.add(node.input[1])
        del node.input[1:]
        node.attribute.append(helper.make_attribute("axes", axes))
        return f"{op}: axes input -> attribute"
    if op == "Pad":
        if len(node.input) >= 4 and node.input[3] != "":
            raise _fail(node, "the axes input is used")
        return None  # Pad-18 without axes is Pad-13
    if op == "Split":
        num = _pop_attr(node, "num_outputs")
        if num is None:
            return None  # explicit split sizes: identical semantics
        axis_attr = next((a.i for a in node.attribute if a.name == "axis"), 0)
        dims = shapes.get(node.input[0])
        size = None
        if dims is not None and -len(dims) <= axis_attr < len(dims):
            size = dims[axis_attr]
        if size is None:
            raise _fail(node, "num_outputs on a dimension of unknown size")
        if size % num.i == 0:
            return "Split: num_outputs dropped (even split)"
        raise _fail(node, f"uneven split of {size} into {num.i}")
    if op == "Resize":
        for name, default in (("antialias", 0), ("keep_aspect_ratio_policy", b"stretch")):
            attr = _pop_attr(node, name)
            if attr is not None and helper.get_attribute_value(attr) != default:
                raise _fail(node, f"{name} is set")
        if _pop_attr(node, "axes") is not None:
            raise _fail(node, "axes is set")
        return None
    if op in ("ScatterElements", "ScatterND"):
        red = next((a.s for a in node.attribute if a.name == "reduction"), b"none")
        if red in (b"max", b"min"):
            raise _fail(node, f"reduction={red.decode()}")
        return None
    if op == "LpPool":
        attr = _pop_attr(node, "ceil_mode")
        if attr is not None and attr.i != 0:
            raise _fail(node, "ceil_mode=1")
        return None
    raise _fail(node, "the operator was introduced in opset 18")


def _known_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is best effort here
        return {}
    out: dict[str, list[int | None]] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    return out


def downgrade_18_to_17(model: onnx.ModelProto) -> list[str]:
    """Rewrite an opset-18 model to opset 17 in place; return notes on what changed."""
    if default_opset(model) != 18:
        raise OpsetConversionError(f"expected an opset-18 model, got {default_opset(model)}", fix=_FIX)
    consts = _constants(model)
    shapes: dict[str, list[int | None]] | None = None
    counts: dict[str, int] = {}
    dropped: set[str] = set()
    for node in _all_nodes(model.graph):
        if node.domain not in ("", "ai.onnx"):
            continue
        if defs.get_schema(node.op_type, 18).since_version < 18:
            continue
        if node.op_type == "Split" and shapes is None:
            shapes = _known_shapes(model)
        note = _rewrite_node(node, consts, shapes or {}, dropped)
        if note:
            counts[note] = counts.get(note, 0) + 1
    _remove_unused_initializers(model, dropped)
    _set_default_opset(model, 17)
    return [f"{note} (x{n})" for note, n in sorted(counts.items())]


def _remove_unused_initializers(model: onnx.ModelProto, candidates: set[str]) -> None:
    """Drop the former axes inputs nothing reads any more (ORT warns about them)."""
    used = {name for node in _all_nodes(model.graph) for name in node.input}
    used |= {out.name for out in model.graph.output}
    keep = [init for init in model.graph.initializer if init.name not in candidates or init.name in used]
    if len(keep) != len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)


def lower_ir_version(model: onnx.ModelProto) -> str | None:
    """Set the IR version to the lowest the opsets allow (dynamo writes IR 10, which
    TensorRT 8.6's bundled parser predates); returns a note when it changed."""
    try:
        lowest = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    except Exception:
        return None
    if model.functions or lowest >= model.ir_version:
        return None
    old = model.ir_version
    model.ir_version = lowest
    try:
        onnx.checker.check_model(model)
    except Exception:  # something needs the newer IR (e.g. float8/int4 types): keep it
        model.ir_version = old
        return None
    return f"ir_version {old} -> {lowest}"


def convert_opset(model: onnx.ModelProto, target: int) -> tuple[onnx.ModelProto, list[str]]:
    """Bring ``model`` to ``target`` opset; notes say how. Raises OpsetConversionError."""
    current = default_opset(model)
    notes: list[str] = []
    if current == target:
        return model, notes
    if current == 18 and target < 18:
        rewrites = downgrade_18_to_17(model)
        notes += [f"opset 18 -> 17 rewrite: {n}" for n in rewrites] or ["opset 18 -> 17: no node changed"]
        current = 17
    if current != target:
        try:
            model = onnx.version_converter.convert_version(model, target)
        except Exception as exc:
            raise OpsetConversionError(
                f"onnx.version_converter could not convert opset {current} -> {target}: {_first_line(exc)}",
                fix=_FIX,
            ) from exc
        notes.append(f"onnx.version_converter: opset {current} -> {target}")
    if default_opset(model) != target:
        raise OpsetConversionError(
            f"model is at opset {default_opset(model)} after conversion, not {target}", fix=_FIX)
    return model, notes


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
