"""CudaPythonBackend: the torch-free CUDA provider, contract-tested against a fake cuda-python runtime.

The fake (tests/fixtures/fake_cuda.py) keeps cuda-python's conventions (tuple
returns, error enums, opaque stream/event handles) and backs "device" memory
with host buffers addressed by real pointers, so the fake TensorRT engine can
read and write them: the runner's whole path runs here without a GPU.
"""
from __future__ import annotations

import ast
import gc
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_cuda import FakeCudart, cudaError_t, install_fake_cuda, make_fake_cudart
from fake_tensorrt import VERSIONS, make_fake_tensorrt
from trt_testutil import ORIN, relu_kernel

import pela_export.tensorrt.cuda_backend as cb
import pela_export.tensorrt.device as device_mod
from pela_export.errors import ArtifactError, DependencyError, OptionError
from pela_export.tensorrt import (
    BuildOptions,
    CudaBuffer,
    CudaPythonBackend,
    GpuInfo,
    TensorRTError,
    TrtRunner,
    build_engine,
    default_backend,
)

X = np.linspace(-1, 1, 2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
FIXTURES = Path(__file__).parents[1] / "fixtures"


def _backend(**knobs: Any) -> tuple[CudaPythonBackend, FakeCudart]:
    rt = make_fake_cudart(**knobs)
    return CudaPythonBackend(cudart=rt), rt


# --- memory and stream ----------------------------------------------------------------------------
@pytest.mark.parametrize("array", [X, np.arange(12, dtype=np.int32).reshape(3, 4), np.array([True, False]),
                                   np.arange(24, dtype=np.float16).reshape(4, 6)[:, ::2],  # non-contiguous
                                   np.zeros((0, 3), np.float32), np.array(7, np.int64)],
                         ids=["f32", "i32", "bool", "f16-strided", "empty", "scalar"])
def test_upload_download_round_trip(array: np.ndarray) -> None:
    b, rt = _backend()
    buf = b.upload(array)
    assert isinstance(buf, CudaBuffer) and buf.shape == array.shape and buf.dtype == array.dtype
    assert buf.nbytes == array.nbytes and b.pointer(buf) == buf.ptr and rt._fake.device_range(buf.ptr, max(buf.nbytes, 1))
    out = b.download(buf)
    np.testing.assert_array_equal(out, array)
    assert out.dtype == array.dtype and out.flags.c_contiguous and out.ctypes.data != buf.ptr
    kinds = [int(args[3]) for args in rt._fake.called("cudaMemcpyAsync")]
    assert kinds == ([1, 2] if array.nbytes else [])  # HostToDevice, then DeviceToHost


def test_stream_is_non_blocking_and_used_for_every_transfer() -> None:
    b, rt = _backend()
    (flags,) = rt._fake.called("cudaStreamCreateWithFlags")[0]
    assert flags == rt.cudaStreamNonBlocking == 1
    assert b.stream_handle != 0 and b.stream_handle in rt._fake.streams
    b.download(b.upload(X))
    used = [int(a[4]) for a in rt._fake.called("cudaMemcpyAsync")] + \
        [int(a[0]) for a in rt._fake.called("cudaStreamSynchronize")]
    assert used and set(used) == {b.stream_handle}
    assert rt._fake.current_device == 0


def test_empty_allocates_and_buffers_are_freed() -> None:
    b, rt = _backend()
    buf = b.empty((2, 5), np.float16)
    assert (buf.shape, buf.dtype, buf.nbytes) == ((2, 5), np.dtype(np.float16), 20)
    assert rt._fake.called("cudaMalloc") == [(20,)]
    zero = b.empty((0, 4), np.float32)
    assert zero.nbytes == 0 and zero.ptr != 0  # empty tensors still get an address
    buf.close()
    buf.close()  # idempotent: one cudaFree
    assert len(rt._fake.called("cudaFree")) == 1 and "freed" in repr(buf)
    with pytest.raises(TensorRTError, match="freed"):
        b.download(buf)
    del zero
    gc.collect()
    assert rt._fake.allocations == {}  # collected buffers are freed too
    with pytest.raises(TensorRTError, match="negative"):
        b.empty((-1, 3), np.float32)


def test_close_frees_everything_and_later_use_is_a_clear_error() -> None:
    b, rt = _backend()
    bufs = [b.upload(X), b.empty((4,), np.int32)]
    with b:
        pass
    assert rt._fake.allocations == {} and rt._fake.streams == {} and all(buf.closed for buf in bufs)
    b.close()  # idempotent
    assert len(rt._fake.called("cudaStreamDestroy")) == 1
    with pytest.raises(TensorRTError, match="closed") as exc:
        b.upload(X)
    assert "new backend" in exc.value.fix


def test_gpu_comes_from_device_properties() -> None:
    b, rt = _backend()
    assert b.gpu() == GpuInfo("Orin (nvgpu)", "8.7", "cuda-python")  # NUL padding stripped
    assert rt._fake.called("cudaGetDeviceProperties") == [(0,)]
    thor, _ = _backend(gpu_name=b"NVIDIA Thor", capability=(11, 0))
    assert thor.gpu().compute_capability == "11.0"


# --- errors ---------------------------------------------------------------------------------------
def test_cuda_errors_name_the_call_the_error_and_the_fix() -> None:
    b, rt = _backend(memory_limit=1024)
    with pytest.raises(TensorRTError) as exc:
        b.empty((1024,), np.float32)
    msg = str(exc.value)
    assert "CUDA runtime call cudaMalloc failed with cudaErrorMemoryAllocation (2): out of memory" in msg
    assert "tegrastats" in exc.value.fix
    rt._fake.inject("cudaMemcpyAsync", cudaError_t.cudaErrorLaunchFailure)
    with pytest.raises(TensorRTError, match=r"cudaMemcpyAsync failed with cudaErrorLaunchFailure \(719\)"):
        b.upload(X)
    rt._fake.clear()
    rt._fake.inject("cudaStreamSynchronize", cudaError_t.cudaErrorInvalidResourceHandle)
    with pytest.raises(TensorRTError, match="cudaStreamSynchronize failed") as exc:
        b.synchronize()
    assert "CUDA_LAUNCH_BLOCKING=1" in exc.value.fix


def test_no_gpu_or_driver_is_a_dependency_error_with_the_fix() -> None:
    with pytest.raises(DependencyError, match="cudaGetDeviceCount failed with cudaErrorNoDevice") as exc:
        _backend(device_count=0)
    assert "video" in exc.value.fix and "--runtime nvidia" in exc.value.fix
    rt = make_fake_cudart()
    rt._fake.inject("cudaGetDeviceCount", cudaError_t.cudaErrorInsufficientDriver)
    with pytest.raises(DependencyError, match="cudaErrorInsufficientDriver") as exc:
        CudaPythonBackend(cudart=rt)
    assert "pip install 'cuda-python>=12,<13'" in exc.value.fix and "JetPack 6" in exc.value.fix
    with pytest.raises(OptionError, match="CUDA device 3 does not exist"):
        CudaPythonBackend(3, cudart=make_fake_cudart(device_count=2))


def test_error_codes_without_names_are_described_via_cudaGetErrorName() -> None:
    """Older cuda-python releases / plain ints: the name comes from cudaGetErrorName."""
    rt = make_fake_cudart()
    err = cb.cuda_error(rt, "cudaFree", 1)
    assert isinstance(err, TensorRTError)
    assert "cudaFree failed with cudaErrorInvalidValue (1): invalid argument" in str(err)
    rt.__dict__["cudaMalloc"] = lambda size: (2, None)  # a bare int error code
    with pytest.raises(TensorRTError, match="cudaErrorMemoryAllocation"):
        CudaPythonBackend(cudart=rt).empty((4,), np.float32)


def test_missing_cudart_function_is_a_dependency_error() -> None:
    rt = make_fake_cudart()
    del rt.__dict__["cudaStreamCreateWithFlags"]
    with pytest.raises(DependencyError, match="has no cudaStreamCreateWithFlags") as exc:
        CudaPythonBackend(cudart=rt)
    assert "pip install" in exc.value.fix


def test_cuda_python_missing_is_a_dependency_error(monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_cuda(monkeypatch, None)
    assert cb.import_cudart() is None
    with pytest.raises(DependencyError, match="needs NVIDIA cuda-python") as exc:
        CudaPythonBackend()
    assert "pip install 'cuda-python>=12,<13'" in exc.value.fix


# --- timing ---------------------------------------------------------------------------------------
def test_time_runs_returns_per_run_seconds_from_events() -> None:
    b, rt = _backend()
    steps: list[int] = []

    def step() -> None:
        steps.append(1)
        rt._fake.advance(2.5 * len(steps))  # the i-th run "takes" 2.5*i ms of GPU time

    seconds = b.time_runs(step, warmup=3, runs=4)
    assert seconds == pytest.approx([0.0025 * i for i in (4, 5, 6, 7)])
    assert len(steps) == 7 and len(rt._fake.called("cudaEventRecord")) == 8
    assert len(rt._fake.called("cudaEventCreate")) == 2 and rt._fake.events == {}  # created once, destroyed
    assert {int(a[1]) for a in rt._fake.called("cudaEventRecord")} == {b.stream_handle}


def test_time_runs_error_still_destroys_events() -> None:
    b, rt = _backend()
    rt._fake.inject("cudaEventElapsedTime", cudaError_t.cudaErrorNotReady, after=1)
    with pytest.raises(TensorRTError, match="cudaEventElapsedTime failed with cudaErrorNotReady"):
        b.time_runs(lambda: None, warmup=0, runs=3)
    assert rt._fake.events == {}


# --- the runner, end to end -----------------------------------------------------------------------
def _plan(tmp_path: Path, onnx_path: Path, version: str) -> Path:
    return build_engine(onnx_path, tmp_path / "out" / "model.plan", BuildOptions(precision="auto"),
                        trt=make_fake_tensorrt(version), gpu=ORIN).plan_path


@pytest.mark.parametrize("version", VERSIONS)
def test_backend_drives_the_runner(version: str, models: dict[str, Path], tmp_path: Path) -> None:
    plan = _plan(tmp_path, models["fp32"], version)
    trt = make_fake_tensorrt(version, kernel=relu_kernel)
    backend, rt = _backend()
    r = TrtRunner(plan, trt=trt, backend=backend)  # the GPU check uses backend.gpu() (Orin 8.7: matches)
    out = r.run({"input": X})
    np.testing.assert_array_equal(out["output"], np.maximum(X, 0))
    assert trt._fake.called("IExecutionContext", "execute_async_v3")[0].args == (backend.stream_handle,)
    addresses = {c.args[0]: c.args[1] for c in trt._fake.called("IExecutionContext", "set_tensor_address")}
    assert all(rt._fake.device_range(p, 1) for p in addresses.values())  # device memory, not host arrays
    stats = r.benchmark({"input": X}, warmup=1, runs=5)
    assert stats.n_runs == 5 and stats.batch == 2
    assert len(rt._fake.called("cudaEventElapsedTime")) == 5
    backend.close()
    assert rt._fake.allocations == {}


def test_runner_gpu_check_uses_cuda_properties(models: dict[str, Path], tmp_path: Path) -> None:
    plan = _plan(tmp_path, models["fp32"], "10.3.0")
    backend, _ = _backend(gpu_name=b"NVIDIA Thor", capability=(11, 0))
    with pytest.raises(ArtifactError, match=r"this GPU is NVIDIA Thor \(compute capability 11.0\)"):
        TrtRunner(plan, trt=make_fake_tensorrt("10.3.0"), backend=backend)


def test_runner_defaults_to_cuda_python(monkeypatch: pytest.MonkeyPatch, models: dict[str, Path],
                                        tmp_path: Path) -> None:
    rt = make_fake_cudart()
    install_fake_cuda(monkeypatch, rt)
    plan = _plan(tmp_path, models["fp32"], "10.16")
    r = TrtRunner(plan, trt=make_fake_tensorrt("10.16", kernel=relu_kernel))
    assert isinstance(r.backend, CudaPythonBackend)
    np.testing.assert_array_equal(r.run({"input": X})["output"], np.maximum(X, 0))
    assert "cudaMemcpyAsync" in rt._fake.names_called()


# --- default_backend() ----------------------------------------------------------------------------
class _TorchStub:
    """Stands in for TorchCudaBackend (no CUDA torch here)."""


def _torch(monkeypatch: pytest.MonkeyPatch, has_cuda: bool) -> None:
    monkeypatch.setattr(device_mod, "_torch_has_cuda", lambda: has_cuda)
    monkeypatch.setattr(device_mod, "TorchCudaBackend", _TorchStub)


@pytest.mark.parametrize("legacy", [False, True], ids=["cuda.bindings.runtime", "cuda.cudart"])
def test_default_backend_prefers_cuda_python(monkeypatch: pytest.MonkeyPatch, legacy: bool) -> None:
    rt = make_fake_cudart()
    install_fake_cuda(monkeypatch, rt, legacy=legacy)
    _torch(monkeypatch, True)
    b = default_backend()
    assert isinstance(b, CudaPythonBackend) and b._rt is rt


def test_gpu_info_falls_back_to_cuda_python(monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_cuda(monkeypatch, make_fake_cudart(gpu_name=b"NVIDIA Jetson AGX Orin", capability=(8, 7)))
    monkeypatch.setattr(device_mod, "_from_torch", lambda: None)
    assert device_mod.gpu_info() == GpuInfo("NVIDIA Jetson AGX Orin", "8.7", "cuda-python")
    install_fake_cuda(monkeypatch, make_fake_cudart(device_count=0))
    assert not device_mod.gpu_info().known  # errors: unknown GPU, never an exception during a build


def test_default_backend_falls_back_to_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_cuda(monkeypatch, None)
    _torch(monkeypatch, True)
    assert isinstance(default_backend(), _TorchStub)
    install_fake_cuda(monkeypatch, make_fake_cudart(device_count=0))  # cuda-python present but unusable
    assert isinstance(default_backend(), _TorchStub)
    _torch(monkeypatch, False)
    with pytest.raises(DependencyError, match="cudaErrorNoDevice"):  # no torch either: cuda-python's own error
        default_backend()


def test_default_backend_without_either_names_both(monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_cuda(monkeypatch, None)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(DependencyError) as exc:
        default_backend()
    assert "cuda-python is not importable and torch is not installed" in str(exc.value)
    assert "pip install 'cuda-python>=12,<13'" in exc.value.fix and "torch with CUDA" in exc.value.fix


def test_cuda_backend_needs_no_torch() -> None:
    """A fresh interpreter where `import torch` fails runs the backend and default_backend() on the fake."""
    code = f"""
import sys
sys.modules['torch'] = None
sys.modules['tensorrt'] = None
sys.path.insert(0, {str(FIXTURES)!r})
import numpy as np
import pela_export.tensorrt
assert 'cuda' not in sys.modules, 'importing the package must not import cuda-python'
from fake_cuda import install_fake_cuda, make_fake_cudart

class MP:
    @staticmethod
    def setitem(d, k, v): d[k] = v

install_fake_cuda(MP, make_fake_cudart())
from pela_export.tensorrt import CudaPythonBackend, default_backend
b = default_backend()
assert isinstance(b, CudaPythonBackend), b
x = np.arange(6, dtype=np.float32).reshape(2, 3)
assert (b.download(b.upload(x)) == x).all()
assert len(b.time_runs(lambda: None, 1, 2)) == 2
assert sys.modules['torch'] is None
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    tree = ast.parse(Path(cb.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} | \
        {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(m.split(".")[0] == "torch" for m in imported), imported
