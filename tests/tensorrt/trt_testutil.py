"""Tiny ONNX graphs for the TensorRT adapter tests (imported by conftest and the test modules)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pela_export.tensorrt import GpuInfo

ORIN = GpuInfo("Orin (nvgpu)", "8.7", "test")


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def make_model(nodes: Sequence[onnx.NodeProto], *, inputs: Sequence[onnx.ValueInfoProto] | None = None,
               outputs: Sequence[onnx.ValueInfoProto] | None = None, initializers: Sequence[onnx.TensorProto] = (),
               opset: int = 17, domains: Sequence[tuple[str, int]] = ()) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 4, 4])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3, 4, 4])
    graph = helper.make_graph(list(nodes), "tiny", list(inputs or [x]), list(outputs or [y]), list(initializers))
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in domains]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8, producer_name="pela-export-tests")


def relu_model() -> onnx.ModelProto:
    return make_model([helper.make_node("Relu", ["input"], ["output"], name="relu0")])


def fp16_model() -> onnx.ModelProto:
    """FP32 I/O, FP16 inside (what the precision stage's fp16 converter produces)."""
    return make_model([
        helper.make_node("Cast", ["input"], ["x16"], name="to_fp16", to=TensorProto.FLOAT16),
        helper.make_node("Relu", ["x16"], ["y16"], name="relu0"),
        helper.make_node("Cast", ["y16"], ["output"], name="to_fp32", to=TensorProto.FLOAT),
    ])


def qdq_model() -> onnx.ModelProto:
    """Q/DQ around a Relu (explicit INT8 quantization)."""
    scale = numpy_helper.from_array(np.array(0.05, dtype=np.float32), "scale")
    zero = numpy_helper.from_array(np.array(0, dtype=np.int8), "zero")
    return make_model([
        helper.make_node("QuantizeLinear", ["input", "scale", "zero"], ["q"], name="q0"),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["dq"], name="dq0"),
        helper.make_node("Relu", ["dq"], ["output"], name="relu0"),
    ], initializers=[scale, zero])




def relu_kernel(ins: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the fake engine computes for relu_model (so outputs can be compared with ONNX Runtime)."""
    return {"output": np.maximum(ins["input"], 0)}


TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def text_model(hidden: bool = True) -> onnx.ModelProto:
    """A 3-input text model as the exporter writes it: int64 (batch, sequence) inputs, ``logits``
    (batch, 3) and optionally ``last_hidden_state`` (batch, sequence, 3)."""
    ins = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in TEXT_INPUTS]
    outs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])]
    if hidden:
        outs.append(helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", 3]))
    w = numpy_helper.from_array(np.array([1.0, 0.5, -1.0], dtype=np.float32).reshape(1, 1, 3), "w")
    axes2 = numpy_helper.from_array(np.array([2], dtype=np.int64), "axes2")
    axes1 = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes1")
    nodes = [helper.make_node("Cast", [n], [f"{n}_f"], name=f"cast_{n}", to=TensorProto.FLOAT) for n in TEXT_INPUTS]
    nodes += [helper.make_node("Add", ["input_ids_f", "attention_mask_f"], ["s0"], name="add0"),
              helper.make_node("Add", ["s0", "token_type_ids_f"], ["s1"], name="add1"),
              helper.make_node("Unsqueeze", ["s1", "axes2"], ["s2"], name="unsqueeze"),
              helper.make_node("Mul", ["s2", "w"], ["last_hidden_state" if hidden else "h"], name="mul"),
              helper.make_node("ReduceSum", ["last_hidden_state" if hidden else "h", "axes1"], ["logits"],
                               name="pool", keepdims=0)]
    return make_model(nodes, inputs=ins, outputs=outs, initializers=[w, axes2, axes1])


def text_kernel(ins: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the fake engine computes for text_model."""
    s = sum(ins[n].astype(np.float32) for n in TEXT_INPUTS)
    hidden = s[..., None] * np.array([1.0, 0.5, -1.0], dtype=np.float32)
    return {"last_hidden_state": hidden, "logits": hidden.sum(axis=1)}
