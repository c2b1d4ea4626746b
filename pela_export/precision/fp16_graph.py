"""The FP16 graph rewrite: plan every node's dtype, then apply it with minimal Casts.

Every FP32 tensor gets one *native* dtype: its producer's (FP16 node → FP16,
kept node → FP32), graph inputs per ``keep_io``, and initializers/Constants FP16
only when every reader wants FP16 (a weight shared with a kept node stays FP32 and
FP16 readers get a Cast, so kept nodes never see rounded weights). A reader wanting
the other dtype gets one Cast per (tensor, dtype), placed before its first reader,
so the node order stays topological. Which inputs may be FP16 comes from the ONNX
schema of the node's opset, not from a hand-written list.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from .ranges import FP16_MAX, ort_tensor_types

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16

#: Ops whose float output type is set by an attribute, not by an input.
_DTYPE_ATTR = {"Cast": "to", "RandomNormal": "dtype", "RandomUniform": "dtype", "RandomNormalLike": "dtype",
               "RandomUniformLike": "dtype", "EyeLike": "dtype", "Bernoulli": "dtype", "ConstantOfShape": "value"}


def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Elem type of every tensor of the main graph: onnx inference first, ONNX Runtime for the rest."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except (onnx.shape_inference.InferenceError, ValueError):  # gaps are filled by ORT below
        inferred = model
    g = inferred.graph
    types = {t.name: t.data_type for t in g.initializer}
    for vi in [*g.input, *g.output, *g.value_info]:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    missing = [o for n in model.graph.node for o in n.output if o and o not in types]
    types.update(ort_tensor_types(model, missing))
    return types


def _subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            yield a.g
        yield from a.graphs


def _outer_refs(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph (recursively) reads from enclosing scopes."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    used: set[str] = set()
    for n in graph.node:
        used.update(i for i in n.input if i)
        for sub in _subgraphs(n):
            used |= _outer_refs(sub)
        defined.update(n.output)
    return used - defined


def _rename_in_subgraphs(node: onnx.NodeProto, old: str, new: str) -> None:
    for sub in _subgraphs(node):
        for n in sub.node:
            for k, i in enumerate(n.input):
                if i == old:
                    n.input[k] = new
            _rename_in_subgraphs(n, old, new)


def _formal(params: Sequence[Any], k: int) -> Any:
    if k < len(params):
        return params[k]
    variadic = onnx.defs.OpSchema.FormalParameterOption.Variadic
    return params[-1] if params and params[-1].option == variadic else None


def _const_value(node: onnx.NodeProto) -> np.ndarray | None:
    """Value of a float Constant node (``value`` / ``value_float(s)``), else None."""
    for a in node.attribute:
        if a.name == "value" and a.t.data_type == FLOAT:
            return numpy_helper.to_array(a.t)
        if a.name == "value_float":
            return np.array(a.f, dtype=np.float32)
        if a.name == "value_floats":
            return np.array(list(a.floats), dtype=np.float32)
    return None


def _half_tensor(a: np.ndarray, name: str) -> TensorProto:
    """FP16 copy of weights, clipped to the finite FP16 range (inf would poison every output)."""
    return numpy_helper.from_array(np.clip(a, -FP16_MAX, FP16_MAX).astype(np.float16), name)


def _schema(node: onnx.NodeProto, opsets: dict[str, int]) -> tuple[Any, str | None]:
    """The node's ONNX schema at the model's opset, or a reason why there is none."""
    domain = node.domain or "ai.onnx"
    try:
        return onnx.defs.get_schema(node.op_type, opsets.get(domain, 1), node.domain), None
    except onnx.defs.SchemaError:
        return None, f"no ONNX schema for {domain}:{node.op_type}: FP16 support unknown"


def _half_params(node: onnx.NodeProto, schema: Any, f_in: list[int],
                 weight_absmax: Callable[[str], float | None]) -> tuple[set[str], list[str]]:
    """Type parameters of the FP32 inputs that become FP16, and reasons the node cannot convert."""
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
    params: set[str] = set()
    reasons: list[str] = []
    for k in f_in:
        p = _formal(schema.inputs, k)
        if p is None or (p.type_str in allowed and "tensor(float16)" not in allowed[p.type_str]):
            reasons.append(f"ONNX {node.op_type} (opset {schema.since_version}) has no float16 "
                           f"type for input {p.name if p else k!r}")
        elif p.type_str in allowed:  # a literal tensor(float) input (Resize scales) just stays FP32
            params.add(p.type_str)
            big = weight_absmax(node.input[k])
            if big is not None and big > FP16_MAX:
                reasons.append(f"initializer {node.input[k]!r} holds |values| up to {big:.3g} > {FP16_MAX:g}")
    return params, reasons


@dataclass
class Plan:
    """Per node: ``mode`` (fp16 / fp32 / pass / const) and requested input dtypes; per tensor: native dtype."""

    mode: list[str]
    requests: list[dict[int, int]]  # node index → {input slot: dtype wanted}
    native: dict[str, int]  # float tensor → dtype it is produced in
    outer: dict[int, set[str]]  # subgraph node → FLOAT outer names read as FP32


def plan_fp16(model: onnx.ModelProto, types: dict[str, int], blocked: dict[int, list[str]],
              keep_io: bool) -> Plan:
    """Decide every node's mode; ``blocked`` gains the schema/weight reasons found here."""
    g = model.graph
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    consts = {t.name: t for t in g.initializer}
    const_nodes = {n.output[0]: n for n in g.node if n.op_type == "Constant" and n.domain in ("", "ai.onnx")}
    plan = Plan(mode=[], requests=[], native={}, outer={})
    for i in g.input:
        if types.get(i.name) == FLOAT and i.name not in consts:
            plan.native[i.name] = FLOAT if keep_io else HALF
    absmax: dict[str, float] = {}

    def weight_absmax(name: str) -> float | None:
        """|max| of a weight (initializer or Constant), None for activations."""
        if name not in consts and name not in const_nodes:
            return None
        if name not in absmax:
            a = numpy_helper.to_array(consts[name]) if name in consts else _const_value(const_nodes[name])
            absmax[name] = float(np.abs(a).max()) if a is not None and a.size else 0.0
        return absmax[name]

    for idx, node in enumerate(g.node):
        f_in = [k for k, t in enumerate(node.input) if t and types.get(t) == FLOAT]
        f_out = [k for k, t in enumerate(node.output) if t and types.get(t) == FLOAT]
        subs = list(_subgraphs(node))
        outer = {t for s in subs for t in _outer_refs(s) if types.get(t) == FLOAT}
        req: dict[int, int] = {}
        plan.requests.append(req)
        if node.op_type == "Constant" and f_out and node.domain in ("", "ai.onnx") and idx not in blocked:
            plan.mode.append("const")  # dtype follows its consumers, like an initializer
            continue
        if not f_in and not f_out and not outer:
            plan.mode.append("pass")
            continue
        if not f_out and len(f_in) == 1 and idx not in blocked and not subs:
            plan.mode.append("pass")  # Shape, ArgMax, IsNaN…: read the tensor in whatever dtype it has
            continue
        reasons = blocked.setdefault(idx, [])
        schema = None
        if subs:
            reasons.append("holds a subgraph (If/Loop/Scan): kept FP32 as a whole")
        elif not reasons:
            schema, why = _schema(node, opsets)
            reasons += [why] if why else []
        half_params: set[str] = set()
        if schema is not None and not reasons:
            half_params, why_not = _half_params(node, schema, f_in, weight_absmax)
            reasons += why_not
        if reasons:
            plan.mode.append("fp32")
            req.update({k: FLOAT for k in f_in})
            plan.outer[idx] = outer
            plan.native.update({node.output[k]: FLOAT for k in f_out})
            continue
        del blocked[idx]
        plan.mode.append("fp16")
        assert schema is not None
        for k in f_in:
            p = _formal(schema.inputs, k)
            req[k] = HALF if p.type_str in half_params else FLOAT  # literal tensor(float): Resize scales…
        for k in f_out:
            p = _formal(schema.outputs, k)
            half = p is not None and (p.type_str in half_params or node.op_type in _DTYPE_ATTR)
            plan.native[node.output[k]] = HALF if half else FLOAT  # e.g. LayerNorm's Mean output stays U=float
    # initializers and Constant outputs: FP16 only when every reader wants FP16 (else FP32 + Cast)
    wants: dict[str, set[int]] = {}
    for idx, node in enumerate(g.node):
        for k, dt in plan.requests[idx].items():
            wants.setdefault(node.input[k], set()).add(dt)
        for t in plan.outer.get(idx, ()):
            wants.setdefault(t, set()).add(FLOAT)
    for o in g.output:
        if types.get(o.name) == FLOAT:
            wants.setdefault(o.name, set()).add(FLOAT if keep_io else HALF)
    followers = [n.output[0] for idx, n in enumerate(g.node) if plan.mode[idx] == "const"]
    for name in [*(t.name for t in g.initializer if t.data_type == FLOAT), *followers]:
        if types.get(name) == FLOAT:
            plan.native[name] = HALF if wants.get(name) == {HALF} else FLOAT
    return plan


def _unique(base: str, taken: set[str]) -> str:
    name, i = base, 1
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def _set_dtype_attr(node: onnx.NodeProto) -> None:
    """Make an attribute-typed op (Cast, ConstantOfShape, Random*) produce FP16."""
    key = _DTYPE_ATTR[node.op_type]
    for a in node.attribute:
        if a.name == key:
            if key == "value":
                if a.t.data_type == FLOAT:
                    a.t.CopyFrom(_half_tensor(numpy_helper.to_array(a.t), a.t.name))
            elif a.i == FLOAT:
                a.i = HALF
            return
    if key == "value":
        node.attribute.append(onnx.helper.make_attribute("value", onnx.helper.make_tensor("value", HALF, [1], [0])))
    elif node.op_type != "Cast":
        node.attribute.append(onnx.helper.make_attribute("dtype", HALF))


def rewrite_fp16(model: onnx.ModelProto, plan: Plan, types: dict[str, int], keep_io: bool) -> int:
    """Apply ``plan`` in place; returns the number of Cast nodes added."""
    g = model.graph
    taken = {t for n in g.node for t in [*n.input, *n.output, n.name]} | {i.name for i in g.input}
    taken |= {t.name for t in g.initializer}
    casts: dict[tuple[str, int], str] = {}
    new_nodes: list[onnx.NodeProto] = []

    def cast(t: str, dt: int) -> str:
        if (t, dt) not in casts:
            out = _unique(f"{t}__{'fp16' if dt == HALF else 'fp32'}", taken)
            new_nodes.append(onnx.helper.make_node("Cast", [t], [out], to=dt, name=_unique(f"{out}_cast", taken)))
            casts[(t, dt)] = out
        return casts[(t, dt)]

    for idx, node in enumerate(g.node):
        mode = plan.mode[idx]
        if mode == "const" and plan.native.get(node.output[0]) == HALF:
            value = _const_value(node)
            assert value is not None
            node.ClearField("attribute")
            node.attribute.append(onnx.helper.make_attribute("value", _half_tensor(value, "value")))
        for k, dt in plan.requests[idx].items():
            t = node.input[k]
            if plan.native.get(t, types.get(t)) != dt:
                node.input[k] = cast(t, dt)
        for t in plan.outer.get(idx, ()):
            if plan.native.get(t) == HALF:
                _rename_in_subgraphs(node, t, cast(t, FLOAT))
        if mode == "fp16" and node.op_type in _DTYPE_ATTR:
            _set_dtype_attr(node)
        new_nodes.append(node)
    for t in g.initializer:
        if t.data_type == FLOAT and plan.native.get(t.name) == HALF:
            t.CopyFrom(_half_tensor(numpy_helper.to_array(t), t.name))
    for i in g.input:
        if plan.native.get(i.name) == HALF:
            i.type.tensor_type.elem_type = HALF
    io_dt = FLOAT if keep_io else HALF
    for o in g.output:
        if types.get(o.name) != FLOAT:
            continue
        o.type.tensor_type.elem_type = io_dt
        if plan.native.get(o.name, FLOAT) == io_dt or o.name in {i.name for i in g.input}:
            continue
        inner = _unique(f"{o.name}__{'fp16' if io_dt == FLOAT else 'fp32'}", taken)
        for n in new_nodes:  # the graph output's name now belongs to the final Cast
            n.input[:] = [inner if x == o.name else x for x in n.input]
            n.output[:] = [inner if x == o.name else x for x in n.output]
            _rename_in_subgraphs(n, o.name, inner)
        for t in g.initializer:
            if t.name == o.name:
                t.name = inner
        new_nodes.append(onnx.helper.make_node("Cast", [inner], [o.name], to=io_dt,
                                               name=_unique(f"{o.name}_cast", taken)))
    added = len(new_nodes) - len(g.node)
    g.ClearField("node")
    g.node.extend(new_nodes)
    g.ClearField("value_info")  # stale dtypes; re-inferred below
    return added
