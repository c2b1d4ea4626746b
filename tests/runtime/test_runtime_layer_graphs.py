"""The one-layer graphs a latency table times: valid ONNX with the layer's output shape, timed by the workstation's
ONNX Runtime measure and by the device's runner measure alike."""
import numpy as np
import pytest

from pela_export.export.runtime import ort_session
from pela_export.runtime.backends import OrtRunner
from pela_export.runtime.latency_table import LayerOp, RuntimeEnv
from pela_export.runtime.layer_graphs import OrtMeasure, RunnerMeasure, layer_feeds, layer_graph

ENV = RuntimeEnv("onnxruntime-cpu", "x", "y", 1)


@pytest.mark.parametrize("op", [LayerOp("linear", 16, 24, True, rows=3),
                                LayerOp("conv", 4, 8, True, input_shape=(1, 4, 9, 9), kernel=(3, 3), stride=(2, 2),
                                        padding=(1, 1)),
                                LayerOp("conv", 4, 8, False, input_shape=(1, 4, 9, 9), kernel=(3, 3), padding=(1, 1),
                                        decomposition="spatial")])
def test_layer_graphs_run_dense_and_factorized(op):
    """The graphs the table times are valid ONNX and give the layer's output shape (one real ORT run each)."""
    shapes = []
    for rank in (None, 3):
        sess = ort_session(layer_graph(op, rank).SerializeToString(), threads=1)
        shapes.append(sess.run(None, {"x": np.zeros(op.feed_shape, np.float32)})[0].shape)
    assert shapes[0] == shapes[1]
    assert OrtMeasure(warmup=0, runs=2)(op, 2, ENV) > 0


def test_runner_measure_opens_each_graph_and_times_it() -> None:
    opened: list[bytes] = []

    def open_(path):
        opened.append(path.read_bytes())
        return OrtRunner(path, use_cuda=False, threads=1)

    op = LayerOp("linear", 16, 24, True, rows=3)
    assert RunnerMeasure(open_, warmup=0, runs=3)(op, 4, ENV) > 0
    assert opened == [layer_graph(op, 4).SerializeToString()]
    assert layer_feeds(op)["x"].shape == (3, 16) and np.array_equal(layer_feeds(op)["x"], layer_feeds(op)["x"])
