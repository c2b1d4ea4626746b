"""The cudart names CudaPythonBackend touches: every one declared in ``CUDART_API``, present in the fake
cuda-python runtime, and (where cuda-python is installed) in the real one with the same enum values."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_cuda import cudaError_t, make_fake_cudart

import pela_export.tensorrt.cuda_backend as cb
import pela_export.tensorrt.device as device_mod
from pela_export.errors import DependencyError
from pela_export.tensorrt import CudaPythonBackend
from pela_export.tensorrt.cuda_backend import CUDART_API, DRIVER_ERRORS, ERROR_FIXES

X = np.linspace(-1, 1, 2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)


def _resolve(module: Any, dotted: str) -> Any:
    obj = module
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


# --- the cudart names the backend touches ---------------------------------------------------------
def _names_used(path: Path) -> set[str]:
    """cudart names in a source file: ``_call("X", ...)``/``cuda_call(rt, "X", ...)`` and ``<cudart>.X[.Y]``."""
    holders = {"_rt", "cudart", "rt"}
    used: set[str] = set()
    tree = ast.parse(path.read_text())
    inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr.startswith("cuda")}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            fname = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            pos = {"_call": 0, "cuda_call": 1}.get(fname)
            if pos is not None and len(node.args) > pos and isinstance(node.args[pos], ast.Constant):
                used.add(str(node.args[pos].value))
        if isinstance(node, ast.Attribute) and node.attr.startswith("cuda") and id(node) not in inner:
            chain = [node.attr]
            cur: ast.AST = node.value
            while isinstance(cur, ast.Attribute) and cur.attr.startswith("cuda"):
                chain.append(cur.attr)
                cur = cur.value
            root = cur.attr if isinstance(cur, ast.Attribute) else cur.id if isinstance(cur, ast.Name) else ""
            if root in holders:
                used.add(".".join(reversed(chain)))
    return used


def test_backend_source_uses_only_declared_cudart_names() -> None:
    used = _names_used(Path(cb.__file__)) | _names_used(Path(device_mod.__file__))
    assert {"cudaMalloc", "cudaMemcpyAsync", "cudaMemcpyKind.cudaMemcpyHostToDevice", "cudaStreamNonBlocking",
            "cudaError_t.cudaSuccess", "cudaGetDeviceProperties"} <= used
    assert used <= set(CUDART_API), sorted(used - set(CUDART_API))


def test_every_declared_cudart_name_exists_in_the_fake() -> None:
    rt = make_fake_cudart()
    for name in CUDART_API:
        _resolve(rt, name)
    for name in [*DRIVER_ERRORS, *ERROR_FIXES]:
        assert hasattr(rt.cudaError_t, name), name
    with pytest.raises(AttributeError, match="fake cudart has no attribute 'cudaMallocHost'"):
        rt.cudaMallocHost  # noqa: B018 - the fake is strict


def test_declared_names_and_fake_enums_match_real_cuda_python() -> None:
    """Where cuda-python is installed (it comes with recent torch wheels), check the names against it."""
    real = cb.import_cudart()
    if real is None:
        pytest.skip("cuda-python is not installed")
    for name in CUDART_API:
        _resolve(real, name)
    for name in [*DRIVER_ERRORS, *ERROR_FIXES]:
        assert hasattr(real.cudaError_t, name), name
    for member in cudaError_t:
        assert int(getattr(real.cudaError_t, member.name)) == member.value, member
    assert int(real.cudaMemcpyKind.cudaMemcpyHostToDevice) == 1 and int(real.cudaStreamNonBlocking) == 1


def test_real_cuda_python_without_a_gpu_is_a_dependency_error() -> None:
    """On a machine with cuda-python but no usable GPU the real module's error codes become a clear error."""
    real = cb.import_cudart()
    if real is None:
        pytest.skip("cuda-python is not installed")
    err, count = real.cudaGetDeviceCount()
    if int(err) == 0 and count:
        b = CudaPythonBackend()  # a real GPU: the round trip must work for real
        np.testing.assert_array_equal(b.download(b.upload(X)), X)
        assert len(b.time_runs(lambda: None, 1, 3)) == 3 and b.gpu().known
        b.close()
        return
    no_driver = int(real.cudaDriverGetVersion()[1]) == 0  # start-up check: named before any CUDA call
    with pytest.raises(DependencyError, match="no NVIDIA driver is loaded" if no_driver
                       else "CUDA runtime call cudaGetDeviceCount failed with cudaError"):
        CudaPythonBackend()
