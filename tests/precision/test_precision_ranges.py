"""observe_ranges / fp16_overflow_nodes on hand-built graphs whose activations are known exactly."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pela_export.errors import OnnxCheckError, OptionError
from pela_export.precision.ranges import FP16_MAX, TensorRange, fp16_overflow_nodes, observe_ranges


def _scale_graph(path: Path) -> Path:
    """x → a = 3x → b = relu(a) → y = b - 10, plus an int Shape branch that must not be observed."""
    nodes = [helper.make_node("Mul", ["x", "three"], ["a"], name="scale"),
             helper.make_node("Relu", ["a"], ["b"], name="relu"),
             helper.make_node("Sub", ["b", "ten"], ["y"], name="shift"),
             helper.make_node("Shape", ["a"], ["shape"], name="shape")]
    graph = helper.make_graph(
        nodes, "scale", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [numpy_helper.from_array(np.array(3.0, np.float32), "three"),
         numpy_helper.from_array(np.array(10.0, np.float32), "ten")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def scale_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _scale_graph(tmp_path_factory.mktemp("ranges") / "scale.onnx")


FEEDS = [{"x": np.array([[-2.0, 1.0, 0.5, 4.0]], np.float32)},
         {"x": np.array([[3.0, -7.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]], np.float32)}]


def test_observe_ranges_exact(scale_onnx: Path) -> None:
    ranges = observe_ranges(scale_onnx, FEEDS, threads=1)
    x = np.concatenate([f["x"].ravel() for f in FEEDS])
    expect = {"x": x, "a": 3 * x, "b": np.maximum(3 * x, 0), "y": np.maximum(3 * x, 0) - 10}
    assert set(ranges) == set(expect)  # int 'shape' and the initializers are not observed
    for name, values in expect.items():
        r = ranges[name]
        assert (r.min, r.max) == pytest.approx((values.min(), values.max()))
        assert r.absmax == pytest.approx(np.abs(values).max())
        assert (r.count, r.batches, r.nonfinite) == (values.size, 2, 0)
    assert ranges["a"].to_dict()["absmax"] == pytest.approx(21.0)


def test_node_filter_limits_observed_tensors(scale_onnx: Path) -> None:
    ranges = observe_ranges(scale_onnx, FEEDS[:1], node_filter=lambda n: n.op_type == "Relu", threads=1)
    assert set(ranges) == {"x", "b"}


def test_nonfinite_values_are_counted_not_ranged() -> None:
    r = TensorRange(min=float("inf"), max=float("-inf"))
    r.update(np.array([1.0, np.inf, -3.0, np.nan], np.float32))
    assert (r.min, r.max, r.absmax, r.nonfinite, r.count) == (-3.0, 1.0, 3.0, 2, 4)


@pytest.mark.parametrize(("feeds", "match"), [([], "no calibration batches"),
                                              ([{"z": np.zeros((1, 4), np.float32)}], "lacks model input"),
                                              ([FEEDS[0], {"x": np.zeros((1, 4))}], "batch 1 does not fit")])
def test_bad_feeds(scale_onnx: Path, feeds: list[dict[str, np.ndarray]], match: str) -> None:
    with pytest.raises(OptionError, match=match):
        observe_ranges(scale_onnx, feeds)


def test_missing_model(tmp_path: Path) -> None:
    with pytest.raises(OnnxCheckError, match="not found"):
        observe_ranges(tmp_path / "nope.onnx", FEEDS)


def test_overflow_nodes_report_producer_and_consumer(scale_onnx: Path) -> None:
    model = onnx.load(str(scale_onnx))
    big = {"x": TensorRange(-1.0, 1.0, 4), "a": TensorRange(-1.0, 7e4, 4),
           "b": TensorRange(0.0, 8e4, 4), "y": TensorRange(-10.0, 1e-6, 4)}
    found = fp16_overflow_nodes(model, big)
    assert [(o.node, o.tensor) for o in found] == [("scale", "a"), ("relu", "b"), ("shift", "b"),
                                                   ("shape", "a")]
    assert found[0].absmax == pytest.approx(7e4)
    # the margin tightens the limit: 0.25 * 65504 < 2e4
    small = {**big, "a": TensorRange(0.0, 2e4, 4), "b": TensorRange(0.0, 1.0, 4)}
    assert [o.node for o in fp16_overflow_nodes(model, small)] == []
    assert [o.node for o in fp16_overflow_nodes(model, small, margin=0.25)] == ["scale", "relu", "shape"]
    assert FP16_MAX == float(np.finfo(np.float16).max)


@pytest.mark.parametrize("margin", [0.0, -1.0, 1.5])
def test_overflow_margin_validated(scale_onnx: Path, margin: float) -> None:
    with pytest.raises(OptionError, match="margin"):
        fp16_overflow_nodes(onnx.load(str(scale_onnx)), {}, margin=margin)
