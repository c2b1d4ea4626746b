"""Real TensorRT (on a Jetson or GPU machine): build a tiny engine, then run it on the torch-free runner.

Skipped where the ``tensorrt`` bindings are absent (CI, this dev machine); run
on the device with ``python -m pytest -q -m tensorrt tests/tensorrt``. Running
an engine is gated on the cuda-python backend starting (the ``torch_free_cuda``
fixture, tests/conftest.py), never on torch seeing CUDA: the device runtime
runs without torch.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from trt_testutil import relu_model, save

from pela_export.tensorrt import (
    BuildOptions,
    CudaPythonBackend,
    TrtRunner,
    build_engine,
    check_onnx_for_trt,
    sidecar_path,
)
from pela_export.tensorrt._trt import tensorrt_available
from pela_export.tensorrt.parse_check import errors_of

pytestmark = [
    pytest.mark.tensorrt,
    pytest.mark.skipif(not tensorrt_available(), reason="TensorRT Python bindings not installed"),
]


def test_real_build_and_run(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    import tensorrt

    onnx_path = save(relu_model(), tmp_path / "relu.onnx")
    assert errors_of(check_onnx_for_trt(onnx_path, tensorrt.__version__)) == []
    rec = build_engine(onnx_path, tmp_path / "relu.plan", BuildOptions(workspace_mib=64, max_batch=4), log=print)
    assert rec.plan_path.stat().st_size > 0 and rec.trtexec_script.is_file()
    meta = json.loads(sidecar_path(rec.plan_path).read_text())
    assert meta["tensorrt_version"] == tensorrt.__version__
    backend = request.getfixturevalue("torch_free_cuda")  # skips here, after the build, where it does not start
    runner = TrtRunner(rec.plan_path, backend=backend)
    assert isinstance(runner.backend, CudaPythonBackend)
    x = np.linspace(-1, 1, 2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    np.testing.assert_allclose(runner.run({"input": x})["output"], np.maximum(x, 0), atol=1e-6)
    assert runner.compare_with_onnxruntime(onnx_path, {"input": x}).ok
    assert runner.benchmark({"input": x}, warmup=2, runs=5).n_runs == 5


@pytest.mark.gpu
def test_real_gpu_info_is_known(torch_free_cuda: CudaPythonBackend) -> None:
    from pela_export.tensorrt.device import _from_cuda_python

    assert torch_free_cuda.gpu().known
    found = _from_cuda_python()  # what device-bench records without torch
    assert found is not None and found.known and found.source == "cuda-python"
