"""The GPU side: which GPU we are on, and CUDA memory/streams for the runner.

A TensorRT plan only runs on the GPU (and TensorRT version) it was built for,
so the builder records the GPU name and compute capability and the runner
compares them. CUDA memory comes from NVIDIA cuda-python
(:class:`~.cuda_backend.CudaPythonBackend`, no PyTorch needed: the Jetson
path) or torch (:class:`TorchCudaBackend`); :func:`default_backend` picks one.
The runner talks to a small :class:`DeviceBackend` protocol so its TensorRT
calls can be contract-tested with host memory.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from ..errors import DependencyError, PelaExportError
from ._trt import load_torch
from .cuda_backend import (
    CUDA_PYTHON_FIX,
    CudaBuffer,
    CudaPythonBackend,
    decode_cstr,
    import_cudart,
)

UNKNOWN = "unknown"


@dataclass(frozen=True)
class GpuInfo:
    """GPU name and compute capability ("8.7"); "unknown" where no CUDA query worked."""

    name: str = UNKNOWN
    compute_capability: str = UNKNOWN
    source: str = "none"  # torch | cuda-python | none

    @property
    def known(self) -> bool:
        return self.compute_capability != UNKNOWN

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _from_torch() -> GpuInfo | None:
    try:
        import torch
    except ImportError:
        return None
    try:
        if not torch.cuda.is_available():
            return None
        major, minor = torch.cuda.get_device_capability(0)
        return GpuInfo(torch.cuda.get_device_name(0), f"{major}.{minor}", "torch")
    except Exception:  # noqa: BLE001 - broken driver: report unknown rather than fail a build
        return None


def gpu_from_props(props: Any) -> GpuInfo:
    """GpuInfo from a cudart ``cudaDeviceProp`` (cuda-python gives the name as NUL-padded bytes)."""
    return GpuInfo(decode_cstr(props.name).strip("\x00 "), f"{props.major}.{props.minor}", "cuda-python")


def _from_cuda_python() -> GpuInfo | None:
    cudart = import_cudart()  # cuda-python >= 12.6 names it cuda.bindings.runtime; older releases cuda.cudart
    if cudart is None:
        return None
    try:
        err, props = cudart.cudaGetDeviceProperties(0)
        if int(err) != 0:
            return None
        return gpu_from_props(props)
    except Exception:  # noqa: BLE001 - no usable CUDA: GPU stays "unknown"
        return None


def gpu_info() -> GpuInfo:
    """GPU 0 via torch.cuda, else cuda-python, else unknown."""
    return _from_torch() or _from_cuda_python() or GpuInfo()


class DeviceBuffer(Protocol):
    ptr: int


class DeviceBackend(Protocol):
    """Memory, stream and timing for the runner (CUDA via cuda-python or torch in production)."""

    stream_handle: int

    def gpu(self) -> GpuInfo: ...
    def upload(self, array: np.ndarray) -> Any: ...
    def empty(self, shape: Sequence[int], dtype: np.dtype) -> Any: ...
    def pointer(self, buf: Any) -> int: ...
    def download(self, buf: Any) -> np.ndarray: ...
    def synchronize(self) -> None: ...
    def time_runs(self, step: Callable[[], None], warmup: int, runs: int) -> list[float]: ...


class TorchCudaBackend:
    """CUDA tensors and a non-default stream from torch; timings with CUDA events."""

    def __init__(self) -> None:
        torch = load_torch()
        if not torch.cuda.is_available():
            raise DependencyError("running a TensorRT engine needs a CUDA GPU, and torch sees none",
                                  fix="run on the Jetson/GPU machine the engine was built for (with CUDA-enabled torch)")
        self._torch = torch
        self._device = torch.device("cuda", 0)
        self._stream = torch.cuda.Stream(device=self._device)  # not the legacy default stream
        self.stream_handle = int(self._stream.cuda_stream)

    def gpu(self) -> GpuInfo:
        return _from_torch() or GpuInfo()

    def upload(self, array: np.ndarray) -> Any:
        with self._torch.cuda.stream(self._stream):
            return self._torch.from_numpy(np.ascontiguousarray(array)).to(self._device, non_blocking=False)

    def empty(self, shape: Sequence[int], dtype: np.dtype) -> Any:
        tdtype = self._torch.from_numpy(np.zeros(0, dtype=dtype)).dtype
        with self._torch.cuda.stream(self._stream):
            return self._torch.empty(tuple(shape), dtype=tdtype, device=self._device)

    def pointer(self, buf: Any) -> int:
        return int(buf.data_ptr())

    def download(self, buf: Any) -> np.ndarray:
        self._stream.synchronize()
        return buf.cpu().numpy()

    def synchronize(self) -> None:
        self._stream.synchronize()

    def time_runs(self, step: Callable[[], None], warmup: int, runs: int) -> list[float]:
        """Per-run seconds measured with CUDA events on the runner's stream."""
        torch = self._torch
        for _ in range(warmup):
            step()
        self._stream.synchronize()
        out: list[float] = []
        for _ in range(runs):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(self._stream)
            step()
            end.record(self._stream)
            end.synchronize()
            out.append(start.elapsed_time(end) / 1e3)
        return out


class HostBackend:
    """Host (numpy) memory with fake pointers: for contract tests of the runner's TensorRT calls."""

    stream_handle = 0x5EED

    def __init__(self, gpu: GpuInfo | None = None) -> None:
        self._gpu = gpu or GpuInfo()

    def gpu(self) -> GpuInfo:
        return self._gpu

    def upload(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array).copy()

    def empty(self, shape: Sequence[int], dtype: np.dtype) -> np.ndarray:
        return np.zeros(tuple(shape), dtype=dtype)

    def pointer(self, buf: np.ndarray) -> int:
        return int(buf.ctypes.data)

    def download(self, buf: np.ndarray) -> np.ndarray:
        return buf.copy()

    def synchronize(self) -> None:
        return None

    def time_runs(self, step: Callable[[], None], warmup: int, runs: int) -> list[float]:
        for _ in range(warmup):
            step()
        out: list[float] = []
        for _ in range(runs):
            t0 = time.perf_counter()
            step()
            out.append(time.perf_counter() - t0)
        return out


def _torch_has_cuda() -> bool:
    """True when torch imports and sees a CUDA GPU (imports torch only when asked)."""
    try:
        import torch
    except ImportError:
        return False
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - broken CUDA install: treat as no GPU
        return False


def default_backend() -> DeviceBackend:
    """The runner's CUDA provider: cuda-python (no torch needed), else torch with CUDA, else DependencyError.

    cuda-python comes first because it is the Jetson deployment path; if it is
    installed but cannot start (e.g. built for a newer CUDA than the driver)
    and torch sees a GPU, torch is used instead, otherwise its error is raised.
    """
    if import_cudart() is not None:
        try:
            return CudaPythonBackend()
        except PelaExportError:
            if _torch_has_cuda():
                return TorchCudaBackend()
            raise
    if _torch_has_cuda():
        return TorchCudaBackend()
    try:
        import torch  # noqa: F401 - only to word the error
        torch_state = "torch is installed but sees no CUDA GPU"
    except ImportError:
        torch_state = "torch is not installed"
    raise DependencyError(f"running a TensorRT engine needs CUDA memory and streams from NVIDIA cuda-python or "
                          f"PyTorch: cuda-python is not importable and {torch_state}",
                          fix=f"{CUDA_PYTHON_FIX}; or install torch with CUDA support (on Jetson: NVIDIA's "
                              "JetPack wheel)")


__all__ = ["CudaBuffer", "CudaPythonBackend", "DeviceBackend", "DeviceBuffer", "GpuInfo", "HostBackend",
           "TorchCudaBackend", "default_backend", "gpu_from_props", "gpu_info"]
