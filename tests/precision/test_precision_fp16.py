"""FP16 converter: numerics vs FP32, what stays FP32 and why, options, and failure modes."""
from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pela_export._io import sha256_file
from pela_export.errors import OnnxCheckError, OptionError, OutputDirError, PelaExportError
from pela_export.export.runtime import ort_run, ort_session
from pela_export.models.base import Tolerance
from pela_export.precision import PRECISIONS
from pela_export.precision import fp16 as fp16_mod
from pela_export.precision.check import compare_precision
from pela_export.precision.fp16 import DEFAULT_FP32_OPS, convert_fp16

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
FP16_TOL = Tolerance(atol=1e-2, rtol=1e-2)


@pytest.fixture(scope="module")
def block_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Linear → LayerNorm → self-attention Softmax → GELU → Linear, legacy exporter, opset 17."""
    torch = pytest.importorskip("torch")
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.ln, self.fc2 = nn.Linear(16, 32), nn.LayerNorm(32), nn.Linear(32, 16)

        def forward(self, x: Any) -> Any:
            h = self.ln(self.fc1(x))
            attn = torch.softmax(h @ h.transpose(-1, -2) / 4.0, dim=-1)
            return self.fc2(nn.functional.gelu(attn @ h))

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("block") / "block.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Block().eval(), torch.randn(2, 5, 16), str(path), opset_version=17, dynamo=False,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    return path


@pytest.fixture(scope="module")
def feeds() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"x": rng.standard_normal((n, 5, 16)).astype(np.float32)} for n in (2, 3)]


def _save(nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray], path: Path, shape: list[int]) -> Path:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", FLOAT, shape)],
                              [helper.make_tensor_value_info("y", FLOAT, shape)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _types(path: Path) -> tuple[onnx.ModelProto, dict[str, int]]:
    """The model and the elem type of each of its tensors, by shape inference."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)), strict_mode=True)
    g = model.graph
    types = {t.name: t.data_type for t in g.initializer}
    types.update({v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]})
    return model, types


def _node(model: onnx.ModelProto, op: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.op_type == op)


def _listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_registered_without_calibration() -> None:
    assert PRECISIONS.get("fp16") is convert_fp16
    assert convert_fp16.needs_calibration is False


def test_transformer_block(block_onnx: Path, feeds: list[dict[str, np.ndarray]], tmp_path: Path) -> None:
    res = convert_fp16(block_onnx, tmp_path / "b16.onnx")
    onnx.checker.check_model(str(res.path))
    model, types = _types(res.path)
    assert [types[i.name] for i in model.graph.input] == [FLOAT]
    assert [types[o.name] for o in model.graph.output] == [FLOAT]
    for op in ("LayerNormalization", "Softmax"):  # computed in FP32 behind Casts
        node = _node(model, op)
        assert types[node.input[0]] == FLOAT and types[node.output[0]] == FLOAT
    ln = _node(model, "LayerNormalization")
    assert types[ln.input[1]] == types[ln.input[2]] == FLOAT  # its weights were not rounded
    matmul_weights = [n.input[1] for n in model.graph.node if n.op_type == "MatMul"
                      and n.input[1] in {t.name for t in model.graph.initializer}]
    assert len(matmul_weights) == 2 and all(types[w] == HALF for w in matmul_weights)
    assert {(k["op"], k["reason"]) for k in res.kept_fp32} == {
        ("LayerNormalization", "op type LayerNormalization in the FP32 list"),
        ("Softmax", "op type Softmax in the FP32 list")}
    d = res.details
    assert d["nodes_fp32"] == 2 and d["nodes_fp16"] >= 8 and d["casts_added"] >= 4
    assert d["block_ops"] == sorted(DEFAULT_FP32_OPS) and d["block_ops_source"] == "default"
    assert d["range_check"] == {"checked": False, "batches": 0}
    assert d["src_sha256"] == sha256_file(block_onnx) and res.to_dict()["precision"] == "fp16"
    cmp = compare_precision(block_onnx, res.path, feeds, FP16_TOL, threads=1)
    assert cmp.ok, cmp.failures()
    assert 0 < cmp.outputs[0].max_abs_err < 1e-2  # really FP16, but close


def test_fp16_io(block_onnx: Path, feeds: list[dict[str, np.ndarray]], tmp_path: Path) -> None:
    res = convert_fp16(block_onnx, tmp_path / "io16.onnx", options={"keep_io_fp32": False})
    sess = ort_session(res.path, threads=1)
    assert [i.type for i in sess.get_inputs()] == ["tensor(float16)"]
    assert [o.type for o in sess.get_outputs()] == ["tensor(float16)"]
    assert compare_precision(block_onnx, res.path, feeds, FP16_TOL, threads=1).ok


@pytest.mark.parametrize(("options", "kept"), [
    ({"block_ops": []}, {}),
    ({"block_ops": "Softmax"}, {"Softmax": "op type Softmax named by --fp16-keep-ops"}),
    ({"extra_block_ops": ["Erf"]}, {"LayerNormalization": "in the FP32 list", "Softmax": "in the FP32 list",
                                    "Erf": "op type Erf named by --fp16-keep-ops"}),
    ({"block_ops": [], "block_nodes": ["/fc2/MatMul"]}, {"MatMul": "named by --fp16-keep-nodes"}),
])
def test_block_options(block_onnx: Path, feeds: list[dict[str, np.ndarray]], tmp_path: Path,
                       options: dict[str, Any], kept: dict[str, str]) -> None:
    res = convert_fp16(block_onnx, tmp_path / "opt16.onnx", options=options)
    got = {k["op"]: k["reason"] for k in res.kept_fp32}
    assert set(got) == set(kept) and all(kept[op] in got[op] for op in kept)
    model, types = _types(res.path)
    ln = _node(model, "LayerNormalization")
    assert types[ln.input[0]] == (FLOAT if "LayerNormalization" in kept else HALF)
    if "block_nodes" in options:
        fc2 = next(n for n in model.graph.node if n.name == "/fc2/MatMul")
        assert types[fc2.input[0]] == types[fc2.input[1]] == FLOAT
    assert compare_precision(block_onnx, res.path, feeds, FP16_TOL, threads=1).ok


@pytest.fixture(scope="module")
def overflow_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """loud = relu(x * 1e3) reaches ~1.5e5 for x ~ 100 (beyond FP16); y = loud * 1e-3 + 0.5 is small again.

    ``loud`` is a graph output on purpose: ONNX Runtime's CPU provider runs FP16 ops that
    lack an FP16 kernel in FP32 and removes the fp32→fp16→fp32 Casts between them (even
    before an FP32 graph output), so on CPU only an FP16 graph output shows the overflow
    (on a GPU, ``y`` would be inf as well).
    """
    nodes = [helper.make_node("Mul", ["x", "k_up"], ["big"], name="amplify"),
             helper.make_node("Relu", ["big"], ["loud"], name="relu"),
             helper.make_node("Mul", ["loud", "k_down"], ["small"], name="shrink"),
             helper.make_node("Add", ["small", "half"], ["y"], name="offset")]
    inits = {"k_up": np.array(1e3, np.float32), "k_down": np.array(1e-3, np.float32),
             "half": np.array(0.5, np.float32)}
    path = _save(nodes, inits, tmp_path_factory.mktemp("overflow") / "overflow.onnx", [1, 8])
    model = onnx.load(str(path))
    model.graph.output.append(helper.make_tensor_value_info("loud", FLOAT, [1, 8]))
    onnx.save(model, str(path))
    return path


def test_overflow_kept_fp32_with_calibration(overflow_onnx: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    calib = [{"x": rng.uniform(50, 150, (1, 8)).astype(np.float32)} for _ in range(2)]
    naive = convert_fp16(overflow_onnx, tmp_path / "naive.onnx", options={"keep_io_fp32": False})
    assert np.isinf(ort_run(ort_session(naive.path, threads=1), {"x": calib[0]["x"].astype(np.float16)})["loud"]).any()
    assert not compare_precision(overflow_onnx, naive.path, calib, FP16_TOL, threads=1).ok

    res = convert_fp16(overflow_onnx, tmp_path / "safe.onnx", calib=calib)
    reasons = {k["node"]: k["reason"] for k in res.kept_fp32}
    assert set(reasons) == {"amplify", "relu", "shrink"}  # 'offset' only sees ~100: stays FP16
    assert reasons["amplify"].startswith("output 'big' reached 1.")
    assert reasons["amplify"].endswith("> 65504 on calibration data")
    assert reasons["shrink"].startswith("input 'loud' reached")  # the consumer must read it in FP32 too
    _, types = _types(res.path)
    assert types["big"] == types["loud"] == FLOAT and types["half"] == HALF
    rc = res.details["range_check"]
    assert rc["checked"] and rc["batches"] == 2 and rc["overflow_nodes"] == ["amplify", "relu", "shrink"]
    cmp = compare_precision(overflow_onnx, res.path, calib, FP16_TOL, threads=1)
    assert cmp.ok, cmp.failures()


def test_shared_weight_stays_fp32_for_kept_node(tmp_path: Path) -> None:
    """W feeds an FP16 MatMul and a kept Add: the Add reads the original FP32 W, the MatMul a Cast."""
    w = np.random.default_rng(2).standard_normal((4, 4)).astype(np.float32) + 1 / 3
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
             helper.make_node("Add", ["h", "W"], ["y"], name="add_w")]
    src = _save(nodes, {"W": w}, tmp_path / "shared.onnx", [4, 4])
    res = convert_fp16(src, tmp_path / "shared16.onnx", options={"block_nodes": ["add_w"]})
    model, types = _types(res.path)
    assert types["W"] == FLOAT
    add, mm = (next(n for n in model.graph.node if n.name == name) for name in ("add_w", "mm"))
    assert add.input[1] == "W" and mm.input[1] != "W" and types[mm.input[1]] == HALF
    x = {"x": np.eye(4, dtype=np.float32)}
    y = ort_run(ort_session(res.path, threads=1), x)["y"]
    np.testing.assert_allclose(y, 2 * w, rtol=2e-3)


def test_weight_beyond_fp16_keeps_its_node(tmp_path: Path) -> None:
    nodes = [helper.make_node("Mul", ["x", "huge"], ["h"], name="scale"),
             helper.make_node("Sub", ["h", "huge"], ["y"], name="sub")]
    src = _save(nodes, {"huge": np.full((1, 3), 1e5, np.float32)}, tmp_path / "huge.onnx", [1, 3])
    res = convert_fp16(src, tmp_path / "huge16.onnx")
    assert {k["node"] for k in res.kept_fp32} == {"scale", "sub"}
    assert "initializer 'huge' holds |values| up to 1e+05 > 65504" in res.kept_fp32[0]["reason"]
    y = ort_run(ort_session(res.path, threads=1), {"x": np.array([[1.0, 2.0, 0.5]], np.float32)})["y"]
    np.testing.assert_allclose(y, [[0.0, 1e5, -5e4]])


def test_spec_fp32_only_input_kept(tmp_path: Path) -> None:
    """ONNX Range has no float16 type: it stays FP32 whatever the block list says."""
    consts = [helper.make_node("Constant", [], [n], name=f"c_{n}", value=numpy_helper.from_array(
        np.array(v, np.float32), n)) for n, v in (("start", 0.0), ("limit", 3.0), ("delta", 1.0))]
    nodes = [*consts, helper.make_node("Range", ["start", "limit", "delta"], ["r"], name="range"),
             helper.make_node("Add", ["x", "r"], ["y"], name="add")]
    src = _save(nodes, {}, tmp_path / "range.onnx", [2, 3])
    res = convert_fp16(src, tmp_path / "range16.onnx", options={"block_ops": []})
    assert [(k["node"], "no float16 type" in k["reason"]) for k in res.kept_fp32] == [("range", True)]
    y = ort_run(ort_session(res.path, threads=1), {"x": np.ones((2, 3), np.float32)})["y"]
    np.testing.assert_allclose(y, [[1.0, 2.0, 3.0]] * 2)


def _missing_src(block: Path, tmp: Path) -> tuple[Path, Path, dict[str, Any]]:
    return tmp / "absent.onnx", tmp / "out" / "m.onnx", {}


def _dst_under_file(block: Path, tmp: Path) -> tuple[Path, Path, dict[str, Any]]:
    (tmp / "out").mkdir()
    (tmp / "out" / "a_file").write_text("x")
    return block, tmp / "out" / "a_file" / "m.onnx", {}


def _dst_is_dir(block: Path, tmp: Path) -> tuple[Path, Path, dict[str, Any]]:
    (tmp / "out" / "m.onnx").mkdir(parents=True)
    return block, tmp / "out" / "m.onnx", {}


def _opts(options: dict[str, Any]) -> Callable[[Path, Path], tuple[Path, Path, dict[str, Any]]]:
    return lambda block, tmp: (block, tmp / "out" / "m.onnx", options)


@pytest.mark.parametrize(("case", "error", "match"), [
    (_missing_src, OnnxCheckError, "not found"),
    (_dst_under_file, OutputDirError, "cannot write to output directory"),
    (_dst_is_dir, OutputDirError, "is a directory"),
    (_opts({"block_ops": ["Softmx"]}), OptionError, r"'Softmx'(.|\n)*LayerNormalization, MatMul"),
    (_opts({"extra_block_ops": "Gelu2"}), OptionError, "--fp16-keep-ops"),
    (_opts({"block_nodes": ["/nope"]}), OptionError, r"--fp16-keep-nodes(.|\n)*/fc1/MatMul"),
    (_opts({"block_ops": 3}), OptionError, "list of names"),
    (_opts({"keep_io_fp32": "yes"}), OptionError, "--fp16-io"),
    (_opts({"range_margin": 0}), OptionError, "range_margin"),
    (_opts({"keepio": True}), OptionError, "unknown fp16 option"),
], ids=["missing-src", "dst-under-file", "dst-is-dir", "unknown-op", "unknown-extra-op", "unknown-node",
        "ops-not-list", "io-not-bool", "bad-margin", "unknown-key"])
def test_bad_inputs(block_onnx: Path, tmp_path: Path, case: Callable[[Path, Path], tuple[Path, Path, dict[str, Any]]],
                    error: type[PelaExportError], match: str) -> None:
    src, dst, options = case(block_onnx, tmp_path)
    before = _listing(dst.parent) if dst.parent.is_dir() else None
    with pytest.raises(error, match=match):
        convert_fp16(src, dst, options=options)
    assert not dst.is_file()
    if before is not None:
        assert _listing(dst.parent) == before  # no temp file left behind


def test_failed_check_leaves_no_file(block_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def reject(tmp: Path, dst: Path, threads: int | None) -> list[str]:
        assert tmp.is_file() and not dst.exists()  # checked before the rename
        raise OnnxCheckError("ONNX Runtime cannot load the FP16 graph: boom", where=str(dst))

    monkeypatch.setattr(fp16_mod, "_check_written", reject)
    with pytest.raises(OnnxCheckError, match="boom"):
        convert_fp16(block_onnx, tmp_path / "m.onnx")
    assert _listing(tmp_path) == []


def test_missing_dst_dir_is_created(block_onnx: Path, tmp_path: Path) -> None:
    res = convert_fp16(block_onnx, tmp_path / "a" / "b" / "m.onnx", options={"block_ops": "LayerNormalization"})
    assert res.path.is_file() and _listing(res.path.parent) == ["m.onnx"]


def test_ort_message_names_node() -> None:
    msg = "Type Error: Type (tensor(float16)) of input parameter (a) of operator (LayerNormalization) in node (ln_1)"
    assert fp16_mod._node_in(RuntimeError(msg)) == "node 'ln_1'"
    assert fp16_mod._node_in(RuntimeError("no node here")) is None
