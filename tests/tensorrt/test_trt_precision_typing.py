"""Precision in the graph is honoured on every TensorRT version (issue 14, item 3).

10.x builds FP16 and Q/DQ graphs strongly typed by default (no FP16/INT8 builder flags); 8.6, which has no
strong typing, sets PREFER_PRECISION_CONSTRAINTS (or OBEY) and pins the layers of the nodes the FP16 graph
keeps FP32 to FP32; 11 is strongly typed only. The mode is recorded in the sidecar and the build record.
The FP16 graph comes from the project's own FP16 converter, so the nodes pinned are the ones it kept.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from fake_tensorrt import _decode_flags, make_fake_tensorrt
from onnx import TensorProto, helper, numpy_helper
from trt_testutil import ORIN, save

from pela_export.precision.fp16 import convert_fp16
from pela_export.tensorrt import BuildOptions, build_engine, features_for_version, inspect_onnx, plan_build, sidecar_path


def _attention_like() -> onnx.ModelProto:
    """MatMul -> Softmax -> MatMul -> ReduceMean: Softmax and ReduceMean stay FP32 in the FP16 graph."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w2")
    axes = numpy_helper.from_array(np.array([-1], dtype=np.int64), "axes")
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 8])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1])
    nodes = [helper.make_node("MatMul", ["input", "w1"], ["h"], name="/fc1/MatMul"),
             helper.make_node("Softmax", ["h"], ["p"], name="/attn/Softmax", axis=-1),
             helper.make_node("MatMul", ["p", "w2"], ["o"], name="/fc2/MatMul"),
             helper.make_node("ReduceMean", ["o", "axes"], ["output"], name="/pool/ReduceMean", keepdims=1)]
    graph = helper.make_graph(nodes, "att", [x], [y], [w1, w2, axes])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


@pytest.fixture
def fp16_graph(tmp_path: Path) -> tuple[Path, list[str]]:
    """(FP16 ONNX written by the FP16 converter, the nodes its result says it kept FP32)."""
    src = save(_attention_like(), tmp_path / "att.onnx")
    res = convert_fp16(src, tmp_path / "att.fp16.onnx")
    return res.path, [k["node"] for k in res.kept_fp32]


def _build(trt: Any, onnx_path: Path, tmp_path: Path, **kw: Any) -> Any:
    kw.setdefault("precision", "auto")
    return build_engine(onnx_path, tmp_path / "out" / "m.plan", BuildOptions(**kw), trt=trt, gpu=ORIN)


def _net_flags(trt: Any) -> list[str]:
    (call,) = trt._fake.called("Builder", "create_network")
    return _decode_flags(trt, "NetworkDefinitionCreationFlag", int(call.args[0]))


def _builder_flags(trt: Any) -> list[str]:
    return [c.args[0].name for c in trt._fake.called("IBuilderConfig", "set_flag")]


def _pinned(trt: Any) -> dict[str, tuple[str, list[str]]]:
    """layer name -> (precision, output types) for every layer whose precision was set."""
    (net,) = trt._fake.networks
    return {lay._f_props["name"]: (lay._f_props["precision"].name, [t.name for t in lay._f_output_types.values()])
            for lay in net._f_layers if "precision" in lay._f_props}


def test_graph_reads_back_the_nodes_the_fp16_converter_kept(fp16_graph: tuple[Path, list[str]]) -> None:
    path, kept = fp16_graph
    assert set(kept) == {"/attn/Softmax", "/pool/ReduceMean"}  # the converter's record
    g = inspect_onnx(path)
    assert g.has_fp16 and set(g.fp32_nodes) == set(kept)


@pytest.mark.parametrize("version", ["10.3.0", "10.13.3", "10.16"])
@pytest.mark.parametrize("variant", ["fp16", "int8"])
def test_10x_builds_graphs_that_carry_precision_strongly_typed(version: str, variant: str, models: dict[str, Path],
                                                               fp16_graph: tuple[Path, list[str]],
                                                               tmp_path: Path) -> None:
    onnx_path = fp16_graph[0] if variant == "fp16" else models["int8"]
    trt = make_fake_tensorrt(version)
    rec = _build(trt, onnx_path, tmp_path)
    assert _net_flags(trt) == ["STRONGLY_TYPED"] and _builder_flags(trt) == [] and _pinned(trt) == {}
    assert rec.strongly_typed and rec.precision == {"fp16": "fp16", "int8": "int8"}[variant]
    meta = json.loads(sidecar_path(rec.plan_path).read_text())
    assert meta["precision_mode"].startswith("strongly typed") and rec.to_dict()["precision_mode"] == meta["precision_mode"]
    assert any("strongly typed network (automatic" in d for d in meta["decisions"])
    script = rec.trtexec_script.read_text()
    assert "--stronglyTyped" in script and "--fp16" not in script and "--int8" not in script


@pytest.mark.parametrize("constraints,flag", [("prefer", "PREFER_PRECISION_CONSTRAINTS"),
                                              ("obey", "OBEY_PRECISION_CONSTRAINTS")])
def test_86_pins_the_kept_nodes_with_precision_constraints(constraints: str, flag: str,
                                                           fp16_graph: tuple[Path, list[str]], tmp_path: Path) -> None:
    path, kept = fp16_graph
    # onnx-tensorrt names a node's extra layers NAME_<n>, all tagged "[ONNX Layer: NAME]"
    trt = make_fake_tensorrt("8.6.1", extra_layers={"/attn/Softmax": 2})
    rec = _build(trt, path, tmp_path, precision_constraints=constraints)
    assert _net_flags(trt) == ["EXPLICIT_BATCH"] and not rec.strongly_typed
    assert _builder_flags(trt) == ["FP16", flag]
    pinned = _pinned(trt)
    assert set(pinned) == {"/attn/Softmax", "/attn/Softmax_0", "/attn/Softmax_1", "/pool/ReduceMean"}
    assert all(p == ("FLOAT", ["FLOAT"]) for p in pinned.values())
    meta = json.loads(sidecar_path(rec.plan_path).read_text())
    assert meta["precision_mode"].startswith(f"weakly typed, {flag}: 2 node(s)")
    assert meta["build_plan"]["fp32_layers"] == kept
    assert any("4 layer(s) of 2 node(s)" in d for d in meta["decisions"])
    argv = shlex.split(rec.trtexec_script.read_text().split('cd "$(dirname "$0")"\n', 1)[1].replace("\\\n", " "))
    spec = ",".join(f"{n}:fp32" for n in kept)
    assert argv[3:8] == ["--explicitBatch", "--fp16", f"--precisionConstraints={constraints}",
                         f"--layerPrecisions={spec}", f"--layerOutputTypes={spec}"]


def test_weak_typing_on_10x_when_asked_also_pins(fp16_graph: tuple[Path, list[str]], tmp_path: Path) -> None:
    trt = make_fake_tensorrt("10.3.0")
    rec = _build(trt, fp16_graph[0], tmp_path, strongly_typed=False)
    assert _net_flags(trt) == [] and _builder_flags(trt) == ["FP16", "PREFER_PRECISION_CONSTRAINTS"]
    assert set(_pinned(trt)) == {"/attn/Softmax", "/pool/ReduceMean"} and "PREFER" in rec.precision_mode


def test_constraints_none_is_recorded(fp16_graph: tuple[Path, list[str]]) -> None:
    plan = plan_build(BuildOptions(precision_constraints="none"), features_for_version("8.6"),
                      inspect_onnx(fp16_graph[0]))
    assert plan.builder_flags == ["FP16"] and plan.fp32_layers == () and plan.precision_constraints is None
    assert any("2 node(s) the graph keeps FP32 are not pinned" in d for d in plan.decisions)


def test_11_stays_strongly_typed_and_never_touches_layer_precision(fp16_graph: tuple[Path, list[str]],
                                                                   tmp_path: Path) -> None:
    trt = make_fake_tensorrt("11.1")
    rec = _build(trt, fp16_graph[0], tmp_path)
    assert _net_flags(trt) == ["STRONGLY_TYPED"] and _pinned(trt) == {} and rec.precision_mode.startswith("strongly")


def test_dla_on_10x_keeps_builder_flags(fp16_graph: tuple[Path, list[str]]) -> None:
    """DLA on 10.x is built with the FP16 flag (trtexec --useDLACore --fp16): no automatic strong typing there."""
    plan = plan_build(BuildOptions(dla_core=0), features_for_version("10.3"), inspect_onnx(fp16_graph[0]))
    assert not plan.strongly_typed and plan.builder_flags == ["FP16", "PREFER_PRECISION_CONSTRAINTS", "GPU_FALLBACK"]
    assert any("--dla-core" in d and "weakly typed" in d for d in plan.decisions)
