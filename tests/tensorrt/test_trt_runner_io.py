"""TrtRunner edge cases a real device hits (issue 14, item 8): an execution context TensorRT cannot create
(None, e.g. out of device memory) is a clear error, and shape-tensor inputs (``is_shape_inference_io``) are
bound to host memory, which TensorRT reads on the CPU (Polygraphy's runner does the same)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_tensorrt import make_fake_tensorrt
from onnx import TensorProto, helper
from trt_testutil import ORIN, make_model, save

from pela_export.tensorrt import BuildOptions, HostBackend, TensorRTError, TrtRunner, build_engine

X = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)


class RecordingBackend(HostBackend):
    """Host memory that remembers which arrays went to the "device"."""

    def __init__(self) -> None:
        super().__init__(ORIN)
        self.uploaded: list[np.ndarray] = []

    def upload(self, array: np.ndarray) -> Any:
        self.uploaded.append(np.array(array))
        return super().upload(array)


def _plan(onnx_path: Path, tmp_path: Path, version: str) -> Path:
    rec = build_engine(onnx_path, tmp_path / version / "m.plan", BuildOptions(), trt=make_fake_tensorrt(version),
                       gpu=ORIN)
    return rec.plan_path


@pytest.mark.parametrize("version", ["8.6.1", "10.3.0", "11.1"])
def test_no_execution_context_is_a_clear_error(version: str, models: dict[str, Path], tmp_path: Path) -> None:
    plan = _plan(models["fp32"], tmp_path, version)
    with pytest.raises(TensorRTError, match="could not create an execution context") as exc:
        TrtRunner(plan, trt=make_fake_tensorrt(version, context_fails=True), backend=HostBackend(ORIN))
    assert "--max-batch" in exc.value.fix


@pytest.mark.parametrize("version", ["8.6.1", "10.3.0", "11.1"])
def test_shape_tensor_inputs_are_bound_to_host_memory(version: str, tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 4, 4])
    shape = helper.make_tensor_value_info("shape", TensorProto.INT32, [2])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 48])
    onnx_path = save(make_model([helper.make_node("Reshape", ["input", "shape"], ["output"], name="r0")],
                                inputs=[x, shape], outputs=[y]), tmp_path / "reshape.onnx")
    plan = _plan(onnx_path, tmp_path, version)
    trt = make_fake_tensorrt(version, shape_inputs=frozenset({"shape"}),
                             kernel=lambda ins: {"output": ins["input"].reshape(tuple(ins["shape"]))})
    backend = RecordingBackend()
    runner = TrtRunner(plan, trt=trt, backend=backend)
    assert [t.host for t in runner.inputs] == [False, True]
    feeds = {"input": X, "shape": np.array([2, 48], np.int32)}
    out = runner.run(feeds)
    np.testing.assert_array_equal(out["output"], X.reshape(2, 48))
    assert [a.shape for a in backend.uploaded] == [X.shape]  # the shape tensor never went to the device
    address = {c.args[0]: c.args[1] for c in trt._fake.called("IExecutionContext", "set_tensor_address")}
    assert address["shape"] == runner._buffers["shape"].ctypes.data  # a host array the runner keeps alive
