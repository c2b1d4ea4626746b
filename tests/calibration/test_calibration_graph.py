"""Statistics through ONNX Runtime, Q/DQ placement rules and the sensitivity report on
hand-built ONNX graphs (no export needed: fast and explicit about axes)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pela_export.calibration import (ActivationStatistics, collect_statistics, find_targets, insert_qdq, int8_sensitivity,
                         weight_scales)
from pela_export.calibration.graph import activation_tensors, session
from pela_export.calibration.qdq import quantized_nodes
from pela_export.errors import DatasetError, OptionError

RNG = np.random.default_rng(0)


def _init(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), name)


def tiny_graph(batch: int | str = "N") -> onnx.ModelProto:
    """x[N,8] -MatMul W1[8,6]-> Relu -Gemm(transB) W2[4,6]-> -MatMul(W3 @ .T)-> y; plus a Conv branch."""
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h1"], name="mm1"),
        helper.make_node("Relu", ["h1"], ["r1"], name="relu"),
        helper.make_node("Gemm", ["r1", "W2", "b2"], ["h2"], name="gemm", transB=1),
        helper.make_node("Transpose", ["h2"], ["h2t"], name="tr", perm=[1, 0]),
        helper.make_node("MatMul", ["W3", "h2t"], ["h3"], name="mm_left"),  # W3 [5,4] @ [4,N]
        helper.make_node("MatMul", ["h2", "h2t"], ["gram"], name="mm_act"),  # activation x activation
        helper.make_node("Reshape", ["x", "shape"], ["img"], name="reshape"),
        helper.make_node("Conv", ["img", "Wc"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["W2", "two"], ["W2x2"], name="const_mul"),  # constant-only branch
    ]
    inits = [_init("W1", (8, 6)), _init("W2", (4, 6)), numpy_helper.from_array(np.zeros(4, np.float32), "b2"),
             _init("W3", (5, 4)), _init("Wc", (3, 2, 3, 3)), numpy_helper.from_array(np.array([-1, 2, 2, 2]), "shape"),
             numpy_helper.from_array(np.array(2.0, np.float32), "two")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 8])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in
                               (("h3", [5, batch]), ("gram", [batch, batch]), ("c", [batch, 3, 2, 2]),
                                                  ("W2x2", [4, 6]))],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def feeds(n: int = 3, batch: int = 4) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((batch, 8)).astype(np.float32)} for _ in range(n)]


def test_activation_tensors_skip_constants() -> None:
    names = activation_tensors(tiny_graph())
    assert names[:3] == ["x", "h1", "r1"] and "W2x2" not in names and "shape" not in names


def test_statistics_match_numpy_and_round_trip(tmp_path) -> None:
    model = tiny_graph()
    stats = collect_statistics(model, feeds(), bins=256, threads=1)
    xs = np.concatenate([f["x"] for f in feeds()])
    h1 = xs @ numpy_helper.to_array(model.graph.initializer[0])
    assert stats.samples == 12 and stats.batches == 3
    assert stats.tensors["x"].absmax == pytest.approx(np.abs(xs).max())
    assert stats.tensors["h1"].absmax == pytest.approx(np.abs(h1).max(), rel=1e-5)
    assert stats.tensors["r1"].min == 0.0 and stats.tensors["h1"].count == h1.size
    path = stats.write(tmp_path / "s.json")
    back = ActivationStatistics.read(path)
    assert back.scales("entropy") == stats.scales("entropy")


def test_micro_batches_and_static_batch_models() -> None:
    stats = collect_statistics(tiny_graph(), feeds(1, batch=5), micro_batch=2, bins=64)
    assert stats.samples == 5 and stats.tensors["x"].count == 40 and stats.extra["dropped_samples"] == 0
    static = collect_statistics(tiny_graph(batch=2), feeds(2, batch=5), bins=64)  # 2+2 per batch, 1 dropped
    assert static.samples == 8 and static.extra["dropped_samples"] == 2
    with pytest.raises(DatasetError, match="static batch 2"):
        collect_statistics(tiny_graph(batch=2), feeds(1, batch=1))
    rows = int8_sensitivity(tiny_graph(batch=2), feeds(1, batch=4), method="max")
    assert len(rows) == 4


def test_infinite_values_are_counted_and_left_out() -> None:
    """-inf attention-mask scores (where(mask, scores, -inf) before Softmax) are not an error."""
    from pela_export.calibration import TensorStats

    s = TensorStats.empty("scores", bins=8)
    s.update(np.array([[1.0, -np.inf], [-2.0, 0.0]], np.float32))
    assert (s.infinite, s.count, s.zeros, s.absmax, s.min, s.max) == (1, 3, 1, 2.0, -2.0, 1.0)
    assert TensorStats.from_dict(s.to_dict()).infinite == 1
    s.update(np.full(3, np.inf, np.float32))
    assert s.infinite == 4 and s.count == 3


def test_statistics_errors() -> None:
    with pytest.raises(DatasetError, match="empty"):
        collect_statistics(tiny_graph(), [])
    bad = [{"x": np.full((2, 8), np.nan, np.float32)}]
    with pytest.raises(DatasetError, match="NaN"):
        collect_statistics(tiny_graph(), bad)
    with pytest.raises(OptionError, match="lack model input"):
        collect_statistics(tiny_graph(), [{"y": np.zeros((2, 8), np.float32)}])
    with pytest.raises(OptionError, match="does not fit"):
        collect_statistics(tiny_graph(), [{"x": np.zeros((2, 7), np.float32)}])


def test_targets_and_output_channel_axes() -> None:
    targets, skipped = find_targets(tiny_graph())
    by = {t.node: t for t in targets}
    assert (by["mm1"].weight, by["mm1"].axis, by["mm1"].activations) == ("W1", 1, ("x",))  # [in, out]
    assert (by["gemm"].axis, by["gemm"].activations) == (0, ("r1",))  # transB: [out, in]
    assert (by["mm_left"].weight, by["mm_left"].axis, by["mm_left"].activations) == ("W3", 0, ("h2t",))
    assert by["conv"].axis == 0
    assert {s["node"]: s["reason"] for s in skipped}["mm_act"].startswith("both inputs are activations")
    with_act, _ = find_targets(tiny_graph(), activation_matmul=True)
    assert [t.activations for t in with_act if t.node == "mm_act"] == [("h2", "h2t")]
    assert weight_scales(np.array([[1.0, -254.0], [0.0, 0.0]]), 1).tolist() == pytest.approx([1 / 127, 2.0])


@pytest.mark.parametrize("fold", [False, True])
def test_insert_qdq_is_valid_and_close(fold: bool) -> None:
    model = tiny_graph()
    stats = collect_statistics(model, feeds(), bins=256, threads=1)
    scales = stats.scales("max")
    targets, _ = find_targets(model, activation_matmul=True)
    q = insert_qdq(model, targets, scales, fold_weights=fold)
    onnx.checker.check_model(q)
    assert set(quantized_nodes(q)) == {"mm1", "gemm", "mm_left", "mm_act", "conv"}
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    for n in q.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = inits[n.input[2]]
            assert zp.dtype == np.int8 and not zp.any()
    n_x = sum(1 for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "h2t")
    assert n_x == 1  # one activation pair shared by both consumers of h2t
    assert ("W1" in inits) != fold and (inits.get("W1_quantized", np.zeros(1, np.int8)).dtype == np.int8)
    ref, out = session(model).run(None, feeds()[0]), session(q).run(None, feeds()[0])
    for r, o in zip(ref, out, strict=True):
        assert np.linalg.norm(o - r) / np.linalg.norm(r) < 0.05


def test_sensitivity_report_ranks_every_quantizable_node() -> None:
    rows = int8_sensitivity(tiny_graph(), feeds(2), method="max", threads=1)
    assert sorted(r["node"] for r in rows) == ["conv", "gemm", "mm1", "mm_left"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    errors = [r["error"] for r in rows]
    assert errors == sorted(errors, reverse=True) and all(e > 0 for e in errors)
