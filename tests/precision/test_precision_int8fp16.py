"""int8fp16: INT8 Q/DQ on the FP16 graph. The graph's dtypes node by node (FP16 except the kept ops,
Q/DQ in the form the opset allows), ONNX Runtime outputs within the spec's golden tolerance of FP32, the
static TensorRT parser check for every TensorRT API manifest we test against, and the --precision default."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper
from torch import nn

from pela_export.calibration import ModelInput, calibration_set
from pela_export.calibration.qdq import FP16_TINY, fp16_ceil
from pela_export.cli.args import config_from_args
from pela_export.cli.main import build_parser
from pela_export.errors import OptionError
from pela_export.export.compare import compare_outputs
from pela_export.export.runtime import ort_session
from pela_export.models.base import Tolerance
from pela_export.precision import PRECISIONS
from pela_export.precision.int8 import side_paths
from pela_export.precision.spec import default_precisions, precision_spec, resolve_precisions
from pela_export.tensorrt.parse_check import check_onnx_for_trt, errors_of

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
FAST = {"threads": 1, "bins": 512}
QDQ = ("QuantizeLinear", "DequantizeLinear")
TRT_API = Path(__file__).resolve().parents[1] / "fixtures" / "trt-api"
TRT_VERSIONS = sorted(json.loads(p.read_text())["version"] for p in TRT_API.glob("trt-*.json"))


class Block(nn.Module):
    """A ViT block in small: Linear -> LayerNorm -> attention Softmax -> GELU MLP -> mean -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.ln, self.q, self.k = nn.Linear(16, 32), nn.LayerNorm(32), nn.Linear(32, 32), nn.Linear(32, 32)
        self.fc2, self.head = nn.Linear(32, 16), nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln(self.fc1(x))
        att = torch.softmax(self.q(h) @ self.k(h).transpose(1, 2) / 5.0, dim=-1) @ h
        return self.head(self.fc2(nn.functional.gelu(att + h)).mean(dim=1))


def _export(model: nn.Module, path: Path, opset: int) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.randn(2, 6, 16), str(path), input_names=["x"], output_names=["y"],
                          opset_version=opset, dynamo=False, dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return path


@pytest.fixture(scope="module")
def calib() -> Any:
    x = np.random.default_rng(0).standard_normal((96, 6, 16)).astype(np.float32)
    return calibration_set(x, ModelInput("x", (6, 16)), samples=48, batch_size=16)


@pytest.fixture(scope="module", params=[17, 19], ids=["opset17", "opset19"])
def variant(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, calib: Any) -> dict[str, Any]:
    """The FP32 export at one opset, its int8fp16 and int8 variants (same calibration)."""
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp(f"i8f16-{request.param}")
    src = _export(Block().eval(), d / "block.onnx", request.param)
    res = PRECISIONS.get("int8fp16")(src, d / "block.int8fp16.onnx", calib=calib, options=FAST)
    int8 = PRECISIONS.get("int8")(src, d / "block.int8.onnx", calib=calib, options=FAST)
    return {"opset": request.param, "src": src, "res": res, "int8": int8}


def _typed(path: Path) -> tuple[onnx.ModelProto, dict[str, int], dict[str, onnx.NodeProto]]:
    """Model, elem type of every tensor (strict inference) and the producer of every tensor."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)), check_type=True, strict_mode=True)
    g = model.graph
    types = {t.name: t.data_type for t in g.initializer}
    types.update({v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]})
    return model, types, {o: n for n in g.node for o in n.output}


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _float_io(node: onnx.NodeProto, types: dict[str, int]) -> list[int]:
    return [types[t] for t in [*node.input, *node.output] if t and types.get(t) in (FLOAT, HALF)]


def test_graph_is_fp16_except_kept_nodes(variant: dict[str, Any]) -> None:
    res = variant["res"]
    model, types, _ = _typed(res.path)
    kept = {k["node"]: k for k in res.kept_fp32}
    assert {k["op"] for k in kept.values()} == {"LayerNormalization", "Softmax", "ReduceMean"}
    assert all("FP32 list" in k["reason"] for k in kept.values())
    assert [i.type.tensor_type.elem_type for i in (*model.graph.input, *model.graph.output)] == [FLOAT, FLOAT]
    seen = set()
    for n in model.graph.node:
        if n.op_type in (*QDQ, "Cast", "Constant", "Shape"):
            continue
        seen.add(n.op_type)
        want = FLOAT if n.name in kept else HALF
        assert set(_float_io(n, types)) == {want}, (n.name, n.op_type, _float_io(n, types))
    assert {"MatMul", "Gemm", "Add", "Erf", "Mul", "Div", "Transpose"} <= seen  # quantized and unquantized FP16 ops
    # node counts are the FP32 graph's nodes (Q/DQ recorded apart), split as the fp16 variant splits them
    fp16 = PRECISIONS.get("fp16")(variant["src"], res.path.with_name("block.fp16.onnx"), options={"threads": 1})
    assert res.details["nodes"] == len(onnx.load(str(variant["src"])).graph.node) == fp16.details["nodes"]
    assert (res.details["nodes_fp16"], res.details["nodes_fp32"]) == (fp16.details["nodes_fp16"], len(kept))
    assert res.details["block_ops_source"] == "default"


def test_qdq_placement_and_dtypes_follow_the_opset(variant: dict[str, Any]) -> None:
    """Same quantized nodes as int8; Q/DQ in float16 at opset >= 19, else float32 between Casts."""
    res, native = variant["res"], variant["opset"] >= 19
    model, types, producer = _typed(res.path)
    inits = _inits(model)
    linears = sum(isinstance(m, nn.Linear) for m in Block().modules())  # attention's activation MatMuls are not
    assert res.details["quantized"] == variant["int8"].details["quantized"]
    assert res.details["quantized_nodes"] == linears
    qdq = [n for n in model.graph.node if n.op_type in QDQ]
    assert all(inits[n.input[2]].dtype == np.int8 and not inits[n.input[2]].any() for n in qdq)  # symmetric int8
    by_name = {n.name: n for n in model.graph.node}
    for name in res.details["quantized"]:
        for slot in (0, 1):
            dq = producer[by_name[name].input[slot]]
            if not native:  # DequantizeLinear-13 outputs float32: a Cast to float16 feeds the FP16 op
                assert dq.op_type == "Cast" and types[dq.output[0]] == HALF
                dq = producer[dq.input[0]]
            assert dq.op_type == "DequantizeLinear"
            q = producer[dq.input[0]]
            assert q.op_type == "QuantizeLinear" and q.input[1] == dq.input[1]
            dtype = HALF if native else FLOAT
            assert (types[q.input[0]], types[q.input[1]], types[dq.output[0]]) == (dtype, dtype, dtype), name
    rec = res.details["qdq"]
    assert rec["nodes"] == len(qdq) and rec["opset"] == variant["opset"]
    assert (rec["fp16_scales"], rec["fp32_scales"]) == ((len(qdq), 0) if native else (0, len(qdq)))
    assert ("float16 Q/DQ" if native else "between Casts") in rec["form"]


def test_scales_are_int8s_rounded_up_to_fp16_at_opset19(variant: dict[str, Any]) -> None:
    res, int8 = variant["res"].details, variant["int8"].details
    ours, theirs = res["activation_scales"], int8["activation_scales"]
    assert set(ours) == set(theirs)
    for t, s in theirs.items():
        if variant["opset"] >= 19:
            assert s <= ours[t] <= s * (1 + 2 ** -10) and float(np.float16(ours[t])) == ours[t]
        else:
            assert ours[t] == s
    graph = _inits(onnx.load(str(variant["res"].path)))
    q_scales = {n.input[0]: graph[n.input[1]] for n in onnx.load(str(variant["res"].path)).graph.node
                if n.op_type == "QuantizeLinear" and graph[n.input[1]].ndim == 0}
    assert sorted(float(v) for v in q_scales.values()) == sorted(ours.values())  # the record is what the graph holds


def test_onnx_runtime_matches_fp32_within_the_golden_tolerance(variant: dict[str, Any]) -> None:
    spec = precision_spec("int8fp16")
    x = np.random.default_rng(7).standard_normal((8, 6, 16)).astype(np.float32)
    ref = ort_session(variant["src"], threads=1).run(None, {"x": x})[0]
    out = ort_session(variant["res"].path, threads=1, optimization=spec.ort_level).run(None, {"x": x})[0]
    assert out.dtype == np.float32 and np.isfinite(out).all()
    frac, rtol = spec.golden_tolerance
    tol = Tolerance(atol=frac * float(np.abs(ref).max()), rtol=rtol)
    assert compare_outputs({"y": ref}, {"y": out}, tol, ref_name="fp32", cand_name="int8fp16").ok
    assert variant["res"].details["check"]["error"] < frac


@pytest.mark.parametrize("version", TRT_VERSIONS)
def test_static_parser_check_for_every_tensorrt_manifest(variant: dict[str, Any], version: str) -> None:
    errors = errors_of(check_onnx_for_trt(variant["res"].path, version))
    if variant["opset"] >= 19 and version.startswith("8."):  # 8.6 parses up to opset 17: the float32 form is for it
        assert [e.code for e in errors] == ["opset"]
    else:
        assert errors == [], [str(e) for e in errors]


def test_side_files_like_int8(variant: dict[str, Any]) -> None:
    res = variant["res"]
    paths = side_paths(res.path)
    assert paths["cache"].is_file() and paths["manifest"].is_file() and paths["statistics"].is_file()
    assert res.details["calibration_cache"] == str(paths["cache"]) and res.details["src"] == str(variant["src"])


def test_folded_int8_weights_dequantize_to_the_surrounding_dtype(variant: dict[str, Any], calib: Any,
                                                                tmp_path: Path) -> None:
    res = PRECISIONS.get("int8fp16")(variant["src"], tmp_path / "fold.onnx", calib=calib,
                                     options={"fold_weights": True, **FAST})
    model, types, producer = _typed(res.path)
    inits = _inits(model)
    want = HALF if variant["opset"] >= 19 else FLOAT
    for name in res.details["quantized"]:
        node = next(n for n in model.graph.node if n.name == name)
        dq = producer[node.input[1]]
        dq = producer[dq.input[0]] if dq.op_type == "Cast" else dq
        assert dq.op_type == "DequantizeLinear" and inits[dq.input[0]].dtype == np.int8
        assert types[dq.input[1]] == types[dq.output[0]] == want
    x = np.random.default_rng(3).standard_normal((4, 6, 16)).astype(np.float32)
    ref = ort_session(variant["src"], threads=1).run(None, {"x": x})[0]
    out = ort_session(res.path, threads=1, optimization="basic").run(None, {"x": x})[0]
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < precision_spec("int8fp16").golden_tolerance[1]


def test_qdq_of_a_kept_node_stays_fp32_with_it(tmp_path: Path, calib: Any) -> None:
    torch.manual_seed(0)
    src = _export(Block().eval(), tmp_path / "b.onnx", 19)
    res = PRECISIONS.get("int8fp16")(src, tmp_path / "b.i8.onnx", calib=calib,
                                     options={"block_nodes": ["/fc2/MatMul"], **FAST})
    model, types, producer = _typed(res.path)
    fc2 = next(n for n in model.graph.node if n.name == "/fc2/MatMul")
    assert set(_float_io(fc2, types)) == {FLOAT}
    for slot in (0, 1):
        dq = producer[fc2.input[slot]]
        assert dq.op_type == "DequantizeLinear" and types[dq.output[0]] == FLOAT and types[dq.input[1]] == FLOAT
        assert dq.name in res.details["qdq"]["kept_with_consumer"]
    assert [k["node"] for k in res.kept_fp32 if k["node"] == "/fc2/MatMul"]


def test_a_quantized_input_beyond_fp16_keeps_its_consumer_fp32(tmp_path: Path) -> None:
    """DQ outputs carry the bound 128 x scale into the range check, as the tensor they stand for would."""
    rng = np.random.default_rng(1)
    w = (0.01 * rng.standard_normal((8, 4))).astype(np.float32)  # mm's output stays in range, its input not
    nodes = [onnx.helper.make_node("Mul", ["x", "big"], ["h"], name="scale_up"),
             onnx.helper.make_node("MatMul", ["h", "w"], ["m"], name="mm"),
             onnx.helper.make_node("Mul", ["m", "small"], ["y"], name="scale_down")]
    graph = onnx.helper.make_graph(nodes, "g", [onnx.helper.make_tensor_value_info("x", FLOAT, ["n", 8])],
                                   [onnx.helper.make_tensor_value_info("y", FLOAT, ["n", 4])],
                                   [numpy_helper.from_array(np.float32(1e5), "big"), numpy_helper.from_array(w, "w"),
                                    numpy_helper.from_array(np.float32(1e-5), "small")])
    src = tmp_path / "big.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 19)], ir_version=9), str(src))
    x = rng.standard_normal((32, 8)).astype(np.float32)
    res = PRECISIONS.get("int8fp16")(src, tmp_path / "big.i8.onnx", calib=[{"x": x}], options=FAST)
    reasons = {k["node"]: k["reason"] for k in res.kept_fp32}
    assert reasons["mm"].startswith("input 'h_DequantizeLinear_Output' reached") and "> 65504" in reasons["mm"]
    model, types, _ = _typed(res.path)
    assert set(_float_io(next(n for n in model.graph.node if n.name == "mm"), types)) == {FLOAT}
    ref = ort_session(src, threads=1).run(None, {"x": x})[0]
    out = ort_session(res.path, threads=1, optimization="basic").run(None, {"x": x})[0]
    assert np.isfinite(out).all() and np.linalg.norm(out - ref) / np.linalg.norm(ref) < 0.05


@pytest.mark.parametrize(("calib_arg", "options", "text"), [
    (None, {}, "--calib-data"),
    ("ok", {"methd": "max"}, "unknown int8fp16 option"),
    ("ok", {"block_nodes": ["/nope"]}, "--fp16-keep-nodes"),
    ("ok", {"exclude_nodes": ["/nope/MatMul"]}, "unknown node"),
    ("ok", {"range_margin": 2}, "--fp16-range-margin"),
])
def test_bad_inputs_leave_no_files(variant: dict[str, Any], calib: Any, tmp_path: Path, calib_arg: Any,
                                   options: dict[str, Any], text: str) -> None:
    dst = tmp_path / "out" / "bad.int8fp16.onnx"
    with pytest.raises(OptionError, match=text):
        PRECISIONS.get("int8fp16")(variant["src"], dst, calib=calib if calib_arg == "ok" else None,
                                   options={**options, **FAST})
    assert not dst.parent.exists() or not any(dst.parent.iterdir())


def test_fp16_ceil_rounds_scales_up_into_float16() -> None:
    s = np.array([1e-12, 3e-8, 1e-4, 0.1, 1 / 3, 1.0, 7e4], dtype=np.float32)
    c = fp16_ceil(s)
    assert c.dtype == np.float32 and (c >= s).all() and (c > 0).all()
    finite = s <= 65504
    assert (c[finite].astype(np.float16).astype(np.float32) == c[finite]).all()  # exact in float16
    assert c[0] == FP16_TINY and c[-1] == s[-1]  # never 0; beyond float16 left as is (kept FP32 anyway)
    assert (fp16_ceil(c) == c).all()


def test_default_precisions_pick_int8fp16_and_an_explicit_int8_is_kept() -> None:
    assert default_precisions() == ("fp16", "int8fp16")
    chosen, note = resolve_precisions(None)
    assert chosen == ("fp16", "int8fp16") and note is not None
    assert note.startswith("--precision not given: fp16,int8fp16") and "--precision int8" in note
    for explicit in (("int8",), ("fp16", "int8"), ("int8", "int8fp16")):
        assert resolve_precisions(explicit) == (explicit, None)


def test_cli_precision_int8_is_honoured() -> None:
    for argv, want in ((["--precision", "int8"], ("int8",)), (["--precision", "fp16,int8fp16"], ("fp16", "int8fp16")),
                       (["--precision", "int8", "--fp16-keep-ops", "Softmax"], None)):
        ns = build_parser().parse_args(["run", "default:digits", "--out", "o", *argv])
        if want is None:  # an fp16 flag no selected precision reads is refused, not applied to int8
            with pytest.raises(OptionError, match="only used with --precision fp16 or int8fp16"):
                config_from_args(ns)
            continue
        cfg = config_from_args(ns)
        assert cfg.precision.precisions == want and set(cfg.precision.options) == set(want)
