"""Q/DQ insertion the way TensorRT's explicit quantization wants it.

For each quantized MatMul/Gemm/Conv: a QuantizeLinear->DequantizeLinear pair on
the activation input (per-tensor scale) and on the weight (per-channel scale on
the output-channel axis), both symmetric INT8 with zero point 0. Outputs and
biases stay FP32, so the next op reads FP32 and TensorRT fuses each pair into
an INT8 kernel. One activation pair is shared by all quantized consumers of a
tensor. Weights keep FP32 storage behind Q->DQ by default (what TensorRT 8.6
through 11 constant-fold); ``fold_weights`` stores INT8 initializers with DQ
only (4x smaller, TensorRT >= 10 / ONNX Runtime). ``fp16_scales`` makes every
scale exactly representable in float16 (rounded up, never 0): the INT8-over-FP16
variant stores them as float16 at opset >= 19, and rounding *up* keeps
``max|x| / scale <= 127`` so nothing the float32 scale covered is clipped.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .graph import constant_tensors, copy_model, onnx_module
from .methods import INT8_MAX, amax_to_scale

QUANTIZABLE_OPS: tuple[str, ...] = ("Conv", "Gemm", "MatMul")
#: Smallest positive float16 (subnormal): a float16 scale below it would round to 0.
FP16_TINY = float(np.float16(2.0 ** -24))
FP16_MAX = 65504.0


@dataclass(frozen=True)
class QuantTarget:
    """One node to quantize: its activation inputs and (optionally) its weight and channel axis."""

    node: str
    op: str
    activations: tuple[str, ...]
    weight: str | None = None
    axis: int | None = None


def find_targets(model: Any, *, ops: Sequence[str] = QUANTIZABLE_OPS,
                 activation_matmul: bool = False) -> tuple[list[QuantTarget], list[dict[str, str]]]:
    """Quantizable nodes of ``ops`` in graph order, and the others of those types with the reason."""
    graph = model.graph
    inputs = {i.name for i in graph.input}
    inits = {i.name: i for i in graph.initializer if i.name not in inputs}
    const = constant_tensors(model)
    targets: list[QuantTarget] = []
    skipped: list[dict[str, str]] = []

    def skip(node: Any, reason: str) -> None:
        skipped.append({"node": node.name, "op": node.op_type, "reason": reason})

    for node in graph.node:
        if node.op_type not in ops:
            continue
        if len(node.input) < 2:
            skip(node, "fewer than two inputs")
            continue
        a, b = node.input[0], node.input[1]
        if a in const and b in const:
            skip(node, "constant inputs only (fold it with the simplifier)")
            continue
        if (b in const and b not in inits) or (a in const and a not in inits):
            skip(node, "weight is computed, not an initializer (simplify the model to fold it)")
            continue
        if node.op_type != "MatMul" and a in inits:
            skip(node, f"{node.op_type} input 0 is an initializer")
            continue
        weight = b if b in inits else a if a in inits else None
        if weight is None:
            if node.op_type == "MatMul" and activation_matmul:
                targets.append(QuantTarget(node.name, node.op_type, (a, b)))
            else:
                skip(node, "both inputs are activations (enable activation_matmul to quantize)")
            continue
        w = inits[weight]
        if w.data_type != 1:
            skip(node, f"weight {weight!r} is not float32")
            continue
        axis = _weight_axis(node, weight == a, len(w.dims))
        if axis is None:
            skip(node, f"weight {weight!r} has rank {len(w.dims)}: no output-channel axis")
            continue
        targets.append(QuantTarget(node.name, node.op_type, (b if weight == a else a,), weight, axis))
    return targets, skipped


def _weight_axis(node: Any, weight_first: bool, rank: int) -> int | None:
    """Output-channel axis: Conv [O, I, ...] 0; Gemm B [K, N] 1 or [N, K] (transB) 0; MatMul [.., K, N] last."""
    if node.op_type == "Conv":
        return 0 if rank >= 3 else None
    if rank < 2:
        return None
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return rank - 2 if weight_first else rank - 1  # MatMul: W @ x has W [.., N, K]


def weight_scales(w: np.ndarray, axis: int) -> np.ndarray:
    """Per-channel symmetric scales ``max|W[c]| / 127`` (float32); an all-zero channel gets 1/127."""
    amax = np.abs(w).max(axis=tuple(d for d in range(w.ndim) if d != axis)) if w.ndim > 1 else np.abs(w)
    return np.asarray([amax_to_scale(a) for a in np.atleast_1d(amax)], dtype=np.float32)


def fp16_ceil(a: np.ndarray | float) -> np.ndarray:
    """Positive float32 scales → the nearest float16 value not below each (at least 2**-24), as float32.

    Values beyond the float16 range are returned unchanged (such a tensor overflows FP16 anyway and
    the FP16 rewrite keeps its nodes FP32, where the exact float32 scale is right).
    """
    x = np.asarray(a, dtype=np.float32)
    with np.errstate(over="ignore"):  # beyond 65504: inf here, the input is returned below
        h = x.astype(np.float16)
    low = h.astype(np.float32) < x
    h = np.where(low, np.nextafter(h, np.float16(np.inf)), h)
    out = np.maximum(h.astype(np.float32), np.float32(FP16_TINY))
    return np.where(np.abs(x) > FP16_MAX, x, out).astype(np.float32)


class _Names:
    def __init__(self, model: Any) -> None:
        g = model.graph
        self.used = {t for n in g.node for t in (*n.input, *n.output, n.name)}
        self.used |= {i.name for i in (*g.initializer, *g.input, *g.output)}

    def new(self, base: str) -> str:
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name


def insert_qdq(model: Any, targets: Iterable[QuantTarget], act_scales: Mapping[str, float], *,
               fold_weights: bool = False, fp16_scales: bool = False) -> Any:
    """A copy of ``model`` with Q/DQ pairs for ``targets``; activation scales come from ``act_scales``
    (``fp16_scales``: those and the weight scales rounded up to float16 values, see the module doc)."""
    onnx_module()  # a clear DependencyError when onnx is missing
    from onnx import helper, numpy_helper

    out = copy_model(model)
    graph = out.graph
    names = _Names(out)
    inits = {i.name: i for i in graph.initializer}
    by_name = {n.name: n for n in graph.node}
    before: dict[str, list[Any]] = {}  # node name -> Q/DQ nodes to emit just before it
    act_dq: dict[str, str] = {}
    w_dq: dict[tuple[str, int], str] = {}
    new_inits: list[Any] = []

    def const(base: str, value: np.ndarray) -> str:
        name = names.new(base)
        new_inits.append(numpy_helper.from_array(value, name))
        return name

    for t in targets:
        node = by_name[t.node]
        emit = before.setdefault(node.name, [])
        for tensor in t.activations:
            if tensor not in act_dq:
                if tensor not in act_scales:
                    raise KeyError(f"no activation scale for tensor {tensor!r} (node {t.node})")
                value = np.asarray(act_scales[tensor], dtype=np.float32)
                scale = const(f"{tensor}_scale", fp16_ceil(value) if fp16_scales else value)
                zp = const(f"{tensor}_zero_point", np.asarray(0, dtype=np.int8))
                q, dq = names.new(f"{tensor}_QuantizeLinear_Output"), names.new(f"{tensor}_DequantizeLinear_Output")
                emit += [helper.make_node("QuantizeLinear", [tensor, scale, zp], [q],
                                          name=names.new(f"{tensor}_QuantizeLinear")),
                         helper.make_node("DequantizeLinear", [q, scale, zp], [dq],
                                          name=names.new(f"{tensor}_DequantizeLinear"))]
                act_dq[tensor] = dq
            _replace_input(node, tensor, act_dq[tensor])
        if t.weight is not None and t.axis is not None:
            key = (t.weight, t.axis)
            if key not in w_dq:
                w = numpy_helper.to_array(inits[t.weight]).astype(np.float32)
                s = weight_scales(w, t.axis)
                s = fp16_ceil(s) if fp16_scales else s
                scale = const(f"{t.weight}_scale", s)
                zp = const(f"{t.weight}_zero_point", np.zeros(len(s), dtype=np.int8))
                dq = names.new(f"{t.weight}_DequantizeLinear_Output")
                if fold_weights:
                    shape = [-1 if d == t.axis else 1 for d in range(w.ndim)]
                    qw = np.clip(np.rint(w / s.reshape(shape)), -INT8_MAX, INT8_MAX).astype(np.int8)
                    src = const(f"{t.weight}_quantized", qw)
                else:
                    src = names.new(f"{t.weight}_QuantizeLinear_Output")
                    emit.append(helper.make_node("QuantizeLinear", [t.weight, scale, zp], [src], axis=t.axis,
                                                 name=names.new(f"{t.weight}_QuantizeLinear")))
                emit.append(helper.make_node("DequantizeLinear", [src, scale, zp], [dq], axis=t.axis,
                                             name=names.new(f"{t.weight}_DequantizeLinear")))
                w_dq[key] = dq
            _replace_input(node, t.weight, w_dq[key])

    nodes = []
    for n in graph.node:
        nodes.extend(before.get(n.name, ()))
        nodes.append(n)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)
    if fold_weights:
        _drop_unused_initializers(graph)
    return out


def _replace_input(node: Any, old: str, new: str) -> None:
    for k, name in enumerate(node.input):
        if name == old:
            node.input[k] = new


def _drop_unused_initializers(graph: Any) -> None:
    used = {t for n in graph.node for t in n.input} | {o.name for o in graph.output}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def quantized_nodes(model: Any) -> dict[str, dict[str, Any]]:
    """For a Q/DQ model: node name -> {op, inputs fed by DequantizeLinear} (used in checks and tests)."""
    dq_out = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name: {"op": n.op_type, "dq_inputs": [t for t in n.input if t in dq_out]}
            for n in model.graph.node if any(t in dq_out for t in n.input)}
