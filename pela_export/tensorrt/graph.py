"""The facts about an ONNX graph that a TensorRT build depends on.

Read once with ``onnx`` (no TensorRT): inputs and their dynamic axes (default
optimisation profiles), whether precision is already in the graph (Q/DQ nodes,
FP16 casts; decides explicit quantization and strong typing), which nodes an
FP16 graph keeps FP32 (pinned on weakly typed builds, where TensorRT would
otherwise be free to run them in FP16), INT8 weight initializers behind
DequantizeLinear (8.x cannot parse them), the opset, and the node list
(TensorRT 8.6 reports parser errors by node *index* only).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import OnnxCheckError

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
DEFAULT_DOMAINS = frozenset({"", "ai.onnx"})
#: Nodes that only move a tensor between precisions: never "kept FP32" themselves.
PRECISION_BOUNDARY_OPS = frozenset({"Cast", "CastLike", "Constant", *QDQ_OPS})


@dataclass(frozen=True)
class TensorInfo:
    """A graph input/output: ``dims`` has None where the axis is dynamic."""

    name: str
    dims: tuple[int | None, ...]
    dim_names: tuple[str | None, ...]
    elem_type: str

    @property
    def dynamic_axes(self) -> list[int]:
        return [i for i, d in enumerate(self.dims) if d is None]

    def describe(self) -> str:
        return "x".join(str(d) if d is not None else (n or "?") for d, n in zip(self.dims, self.dim_names, strict=True))


@dataclass(frozen=True)
class NodeInfo:
    name: str
    op_type: str
    domain: str


@dataclass
class GraphInfo:
    """Summary of one ONNX model; ``nodes`` are top-level (parser indices), ``all_nodes`` include subgraphs."""

    path: Path | None
    opset: int | None
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    nodes: list[NodeInfo]
    all_nodes: list[NodeInfo] = field(default_factory=list)
    has_qdq: bool = False
    has_fp16: bool = False
    #: nodes (as TensorRT's ONNX parser names their layers) whose float outputs stay FP32 in a graph that
    #: carries FP16: what the FP16 converter kept FP32 (its kept_fp32 list), read back from the tensor types
    fp32_nodes: tuple[str, ...] = ()
    #: DequantizeLinear nodes reading an INT8/UINT8 initializer or Constant (pre-quantized weights)
    int8_weight_dq: tuple[str, ...] = ()

    def has_op(self, op_type: str) -> bool:
        return any(n.op_type == op_type for n in self.all_nodes)

    @property
    def precision(self) -> str:
        """What the graph itself carries: 'fp16+int8', 'int8', 'fp16' or 'fp32'."""
        if self.has_qdq:
            return "fp16+int8" if self.has_fp16 else "int8"
        return "fp16" if self.has_fp16 else "fp32"

    def input(self, name: str) -> TensorInfo | None:
        return next((t for t in self.inputs if t.name == name), None)

    def node_at(self, index: int) -> NodeInfo | None:
        return self.nodes[index] if 0 <= index < len(self.nodes) else None


def _onnx() -> Any:
    import onnx

    return onnx


def load_model(model_or_path: Any) -> tuple[Any, Path | None]:
    """A ModelProto (structure only; external weights are not read) and its path if any."""
    onnx = _onnx()
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path, None
    p = Path(os.fspath(model_or_path))
    if not p.is_file():
        raise OnnxCheckError("ONNX file not found", fix="run the export stage first, or pass an existing .onnx file",
                             where=str(p))
    try:
        return onnx.load(str(p), load_external_data=False), p
    except Exception as exc:  # noqa: BLE001 - protobuf/onnx raise many types for corrupt files
        raise OnnxCheckError(f"cannot read the ONNX file ({type(exc).__name__}: {exc})",
                             fix="re-export the model; the file may be truncated", where=str(p)) from None


def _tensor_info(vi: Any, onnx: Any) -> TensorInfo:
    tt = vi.type.tensor_type
    dims: list[int | None] = []
    names: list[str | None] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
            names.append(None)
        else:
            dims.append(None)
            names.append(d.dim_param or None)
    elem = onnx.TensorProto.DataType.Name(tt.elem_type) if tt.elem_type else "UNDEFINED"
    return TensorInfo(vi.name, tuple(dims), tuple(names), elem)


def iter_nodes(graph: Any) -> Iterator[Any]:
    """Every node, descending into If/Loop/Scan subgraphs."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from iter_nodes(attr.g)
            for g in attr.graphs:
                yield from iter_nodes(g)


def default_opset(model: Any) -> int | None:
    for imp in model.opset_import:
        if imp.domain in DEFAULT_DOMAINS:
            return int(imp.version)
    return None


def _is_fp16(node: Any, onnx: Any) -> bool:
    if node.op_type == "Cast":
        return any(a.name == "to" and a.i == onnx.TensorProto.FLOAT16 for a in node.attribute)
    if node.op_type == "Constant":
        return any(a.HasField("t") and a.t.data_type == onnx.TensorProto.FLOAT16 for a in node.attribute)
    return False


def layer_name(node: Any) -> str:
    """The name TensorRT's ONNX parser gives the node's layer (onnx-tensorrt ``getNodeName``); extra layers of
    one node get ``NAME_<n>``, and every layer carries ``[ONNX Layer: NAME...]`` as its metadata."""
    return node.name if node.name or not node.output else f"node_of_{node.output[0]}"


def _elem_types(model: Any, onnx: Any) -> dict[str, int]:
    g = model.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.input, *g.output, *g.value_info]}
    types.update({t.name: t.data_type for t in g.initializer})
    if all(o in types for n in g.node for o in n.output if o):
        return types
    try:  # a graph without value_info (not written by our converters): infer the types
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - inference is best effort; unknown types are skipped below
        return types
    types.update({vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.value_info})
    return types


def fp32_kept_nodes(model: Any) -> tuple[str, ...]:
    """Nodes of an FP16-carrying graph whose float outputs are all FP32 (Casts and Q/DQ excluded)."""
    onnx = _onnx()
    types = _elem_types(model, onnx)
    T = onnx.TensorProto
    floats = {T.FLOAT, T.FLOAT16, T.BFLOAT16, T.DOUBLE}
    kept = []
    for node in model.graph.node:
        if node.op_type in PRECISION_BOUNDARY_OPS or node.domain not in DEFAULT_DOMAINS:
            continue
        outs = [types.get(o) for o in node.output if o]
        if outs and None not in outs and any(t in floats for t in outs) \
                and all(t == T.FLOAT for t in outs if t in floats):
            kept.append(layer_name(node))
    return tuple(kept)


def int8_weight_dq_nodes(model: Any) -> tuple[str, ...]:
    """DequantizeLinear nodes whose input is an INT8/UINT8 initializer or Constant (weights stored quantized)."""
    onnx = _onnx()
    int8 = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    stored = {t.name for t in model.graph.initializer if t.data_type in int8}
    for node in iter_nodes(model.graph):
        if node.op_type == "Constant" and any(a.HasField("t") and a.t.data_type in int8 for a in node.attribute):
            stored.update(node.output)
    return tuple(layer_name(n) for n in iter_nodes(model.graph)
                 if n.op_type == "DequantizeLinear" and n.input and n.input[0] in stored)


def inspect_onnx(model_or_path: Any) -> GraphInfo:
    """Read the graph facts a TensorRT build needs (see module docstring)."""
    onnx = _onnx()
    model, path = load_model(model_or_path)
    g = model.graph
    init_names = {t.name for t in g.initializer}
    nodes = [NodeInfo(n.name, n.op_type, n.domain) for n in g.node]
    all_nodes = [NodeInfo(n.name, n.op_type, n.domain) for n in iter_nodes(g)]
    fp16 = onnx.TensorProto.FLOAT16
    has_fp16 = (any(t.data_type == fp16 for t in g.initializer)
                or any(vi.type.tensor_type.elem_type == fp16 for vi in [*g.input, *g.output])
                or any(_is_fp16(n, onnx) for n in iter_nodes(g)))
    return GraphInfo(
        path=path,
        opset=default_opset(model),
        inputs=[_tensor_info(vi, onnx) for vi in g.input if vi.name not in init_names],
        outputs=[_tensor_info(vi, onnx) for vi in g.output],
        nodes=nodes,
        all_nodes=all_nodes,
        has_qdq=any(n.op_type in QDQ_OPS and n.domain in DEFAULT_DOMAINS for n in all_nodes),
        has_fp16=has_fp16,
        fp32_nodes=fp32_kept_nodes(model) if has_fp16 else (),
        int8_weight_dq=int8_weight_dq_nodes(model),
    )
