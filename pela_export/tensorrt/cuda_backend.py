"""Torch-free CUDA for the runner: memory, a stream and event timing from NVIDIA cuda-python.

On a Jetson the device runtime should need only TensorRT's Python bindings and
cuda-python, not a multi-GB PyTorch install. :class:`CudaPythonBackend`
implements :class:`~.device.DeviceBackend` with the CUDA runtime API (cudart):
``cudaMalloc``/``cudaFree`` buffers, ``cudaMemcpyAsync`` on a non-blocking
stream, and CUDA events for timing. Every cudart call returns
``(err, *values)``; :func:`cuda_call` checks each ``err`` and turns a failure
into an error naming the call, the CUDA error and the fix.

``cuda`` is imported only when a backend is created (``pela_export.tensorrt``
stays importable without it), and tests inject a fake cudart (``cudart=``).
This module imports neither torch nor :mod:`.device` at load time, so
``device.py`` can re-export it without an import cycle.
"""
from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from ..errors import DependencyError, OptionError, PelaExportError
from .cuda_versions import (
    CUDA_PYTHON_FIX,
    NO_GPU_FIX,
    CudaVersions,
    cuda_python_package,
    is_tegra,
    read_versions,
    startup_problem,
)
from .errors import TensorRTError

if TYPE_CHECKING:
    from .device import GpuInfo

#: Every cudart name this module touches (contract-tested against the fake and, when installed, the real module).
CUDART_API: tuple[str, ...] = (
    "cudaGetDeviceCount", "cudaSetDevice", "cudaGetDeviceProperties", "cudaGetErrorName", "cudaGetErrorString",
    "cudaMalloc", "cudaFree", "cudaMemcpyAsync", "cudaStreamCreateWithFlags", "cudaStreamDestroy",
    "cudaStreamSynchronize", "cudaEventCreate", "cudaEventDestroy", "cudaEventRecord", "cudaEventSynchronize",
    "cudaEventElapsedTime", "cudaStreamNonBlocking", "cudaError_t.cudaSuccess",
    "cudaMemcpyKind.cudaMemcpyHostToDevice", "cudaMemcpyKind.cudaMemcpyDeviceToHost",
    "cudaDriverGetVersion", "cudaRuntimeGetVersion",
)

#: CUDA errors that mean "no usable GPU/driver here" rather than a failed operation: DependencyError with the fix.
DRIVER_ERRORS: dict[str, str] = {
    "cudaErrorInsufficientDriver": "the NVIDIA driver is missing or supports an older CUDA than the runtime this "
                                   "cuda-python bundles: " + CUDA_PYTHON_FIX + "; with no driver: " + NO_GPU_FIX,
    "cudaErrorCallRequiresNewerDriver": "this cuda-python needs a newer driver: " + CUDA_PYTHON_FIX,
    "cudaErrorStubLibrary": "only the CUDA stub library is present, not the driver: " + NO_GPU_FIX,
    "cudaErrorNoDevice": NO_GPU_FIX,
    "cudaErrorInvalidDevice": "use a CUDA device index that exists on this machine (0 for a Jetson)",
}
#: Fixes for operation failures (TensorRTError); anything else gets GENERIC_FIX.
ERROR_FIXES: dict[str, str] = {
    "cudaErrorMemoryAllocation": ("free GPU memory (other processes; on Jetson the GPU shares system RAM, see "
                                  "`tegrastats`) or run a smaller batch"),
    "cudaErrorLaunchFailure": "the engine crashed on the GPU: rebuild it on this device and rerun",
}
GENERIC_FIX = ("check the GPU state (`nvidia-smi`, or `tegrastats` on Jetson) and rerun; "
               "CUDA_LAUNCH_BLOCKING=1 makes the failing call report its own error")


def import_cudart() -> ModuleType | None:
    """cuda-python's runtime module (``cuda.bindings.runtime`` >= 12.6, else ``cuda.cudart``), or None."""
    try:
        from cuda.bindings import runtime  # type: ignore[import-not-found]
        return runtime  # type: ignore[no-any-return]
    except (ImportError, OSError):
        pass
    try:
        from cuda import cudart  # type: ignore[import-not-found]
        return cudart  # type: ignore[no-any-return]
    except (ImportError, OSError):
        return None


def load_cudart(cudart: ModuleType | Any | None = None) -> Any:
    """Return ``cudart`` if given, else cuda-python's runtime module, else DependencyError with the fix."""
    if cudart is not None:
        return cudart
    found = import_cudart()
    if found is None or not hasattr(found, "cudaMalloc"):
        raise DependencyError("running a TensorRT engine without PyTorch needs NVIDIA cuda-python, which is not "
                              "importable (neither cuda.bindings.runtime nor cuda.cudart)", fix=CUDA_PYTHON_FIX)
    return found


def decode_cstr(raw: Any) -> str:
    """Text of a NUL-terminated C string as cuda-python returns it (bytes), or str(raw)."""
    if isinstance(raw, (bytes, bytearray)):
        return bytes(raw).split(b"\x00", 1)[0].decode(errors="replace")
    return str(raw)


def error_name(cudart: Any, err: Any) -> str:
    """``cudaErrorMemoryAllocation`` for an error code (enum name, else cudaGetErrorName, else the number)."""
    name = getattr(err, "name", None)
    if isinstance(name, str) and name:
        return name
    with contextlib.suppress(Exception):  # describing an error must not raise another
        status, raw = cudart.cudaGetErrorName(err)
        if int(status) == 0 and raw:
            return decode_cstr(raw)
    return f"cudaError {int(err)}"


def cuda_error(cudart: Any, call: str, err: Any) -> PelaExportError:
    """The user-facing error for cudart ``call`` returning ``err``: names the call, the CUDA error and the fix."""
    name = error_name(cudart, err)
    text = ""
    with contextlib.suppress(Exception):  # the name alone still identifies the error
        status, raw = cudart.cudaGetErrorString(err)
        text = f": {decode_cstr(raw)}" if int(status) == 0 and raw else ""
    problem = f"CUDA runtime call {call} failed with {name} ({int(err)}){text}"
    if name in DRIVER_ERRORS:
        return DependencyError(problem, fix=DRIVER_ERRORS[name])
    return TensorRTError(problem, fix=ERROR_FIXES.get(name, GENERIC_FIX))


def cuda_call(cudart: Any, name: str, *args: Any) -> tuple[Any, ...]:
    """Call cudart ``name``; return the values after the error code, or raise the error naming the call."""
    fn = getattr(cudart, name, None)
    if fn is None:
        version = getattr(cudart, "__version__", None) or getattr(cudart, "__name__", "?")
        raise DependencyError(f"this cuda-python ({version}) has no {name}", fix=CUDA_PYTHON_FIX)
    result = fn(*args)
    result = result if isinstance(result, tuple) else (result,)
    if int(result[0]) != int(cudart.cudaError_t.cudaSuccess):
        raise cuda_error(cudart, name, result[0])
    return tuple(result[1:])


class CudaBuffer:
    """One cudaMalloc allocation holding an array of ``shape``/``dtype``; freed once, on close() or collection."""

    def __init__(self, cudart: Any, ptr: int, shape: tuple[int, ...], dtype: np.dtype[Any], nbytes: int) -> None:
        self._rt = cudart
        self.ptr = ptr
        self.shape = shape
        self.dtype = dtype
        self.nbytes = nbytes  # the array's bytes (the allocation holds at least one byte)
        self.closed = False

    def close(self) -> None:
        """cudaFree the memory (idempotent); raises if CUDA reports a failure."""
        if self.closed:
            return
        self.closed = True
        cuda_call(self._rt, "cudaFree", self.ptr)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown or a destroyed context: nothing left to free
            self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "freed" if self.closed else f"0x{self.ptr:x}"
        return f"CudaBuffer({state}, shape={self.shape}, dtype={self.dtype}, nbytes={self.nbytes})"


class CudaPythonBackend:
    """DeviceBackend on the CUDA runtime API via cuda-python: no PyTorch needed (the Jetson deployment path).

    Uploads and downloads are ``cudaMemcpyAsync`` on the backend's own
    non-blocking stream followed by a stream synchronize (pageable host
    memory, like torch's blocking copies); only ``execute`` is asynchronous.
    cudaSetDevice applies to the creating thread: use the backend there.
    Start-up first compares the driver's CUDA with the runtime cuda-python bundles
    (:func:`~.cuda_versions.startup_problem`; ``tegra`` overrides the Jetson detection).
    """

    def __init__(self, device: int = 0, *, cudart: ModuleType | Any | None = None, tegra: bool | None = None) -> None:
        self._closed = True  # until the stream exists: close()/__del__ have nothing to destroy
        self._rt = load_cudart(cudart)
        self.device = int(device)
        self._live: weakref.WeakSet[CudaBuffer] = weakref.WeakSet()
        #: driver and bundled-runtime CUDA versions, checked before any call that initialises CUDA
        self.versions: CudaVersions = read_versions(self._rt)
        problem = startup_problem(self.versions, tegra=is_tegra() if tegra is None else tegra,
                                  package=cuda_python_package() if cudart is None else None)
        if problem is not None:
            raise problem
        (count,) = self._call("cudaGetDeviceCount")
        if int(count) < 1:
            raise DependencyError("running a TensorRT engine needs a CUDA GPU, and the CUDA runtime sees none",
                                  fix=NO_GPU_FIX)
        if not 0 <= self.device < int(count):
            raise OptionError(f"CUDA device {self.device} does not exist (this machine has {int(count)})",
                              fix=f"use a device index from 0 to {int(count) - 1}")
        self._call("cudaSetDevice", self.device)
        (stream,) = self._call("cudaStreamCreateWithFlags", self._rt.cudaStreamNonBlocking)
        self._stream = stream
        self.stream_handle = int(stream)
        self._closed = False
        if self.stream_handle == 0:  # TensorRT warns about (and serialises on) the legacy default stream
            raise TensorRTError("cudaStreamCreateWithFlags returned the default stream (handle 0)", fix=GENERIC_FIX)

    def _call(self, name: str, *args: Any) -> tuple[Any, ...]:
        return cuda_call(self._rt, name, *args)

    @property
    def stream(self) -> Any:
        """The backend's ``cudaStream_t`` (non-blocking, never the legacy default stream)."""
        if self._closed:
            raise TensorRTError("this CudaPythonBackend was closed (its stream and buffers are freed)",
                                fix="create a new backend (or TrtRunner) for further runs")
        return self._stream

    # -- DeviceBackend --------------------------------------------------------------------------
    def gpu(self) -> GpuInfo:
        """Name and compute capability of this backend's device (cudaGetDeviceProperties)."""
        from .device import gpu_from_props

        (props,) = self._call("cudaGetDeviceProperties", self.device)
        return gpu_from_props(props)

    def empty(self, shape: Sequence[int], dtype: np.dtype[Any] | type) -> CudaBuffer:
        """Uninitialised device memory for an array (at least one byte, so even empty tensors get an address)."""
        dt = np.dtype(dtype)
        dims = tuple(int(d) for d in shape)
        if any(d < 0 for d in dims):
            raise TensorRTError(f"cannot allocate a tensor of shape {dims} (negative dimension)")
        nbytes = int(np.prod(dims, dtype=np.int64)) * dt.itemsize
        (ptr,) = self._call("cudaMalloc", max(nbytes, 1))
        buf = CudaBuffer(self._rt, int(ptr), dims, dt, nbytes)
        self._live.add(buf)
        return buf

    def upload(self, array: np.ndarray) -> CudaBuffer:
        """Copy a host array to new device memory; returns once the copy is done."""
        host = np.asarray(array)
        if not host.flags.c_contiguous:  # (np.ascontiguousarray would turn a 0-d array into 1-d)
            host = host.copy(order="C")
        buf = self.empty(host.shape, host.dtype)
        if buf.nbytes:
            self._call("cudaMemcpyAsync", buf.ptr, int(host.ctypes.data), buf.nbytes,
                       self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream)
            self.synchronize()  # ``host`` may be a temporary: finish before it can be freed
        return buf

    def pointer(self, buf: CudaBuffer) -> int:
        return int(buf.ptr)

    def download(self, buf: CudaBuffer) -> np.ndarray:
        """The buffer's contents as a new numpy array (waits for the stream, so earlier work is included)."""
        if buf.closed:
            raise TensorRTError(f"cannot download {buf!r}: its memory was freed")
        out = np.empty(buf.shape, dtype=buf.dtype)
        if buf.nbytes:
            self._call("cudaMemcpyAsync", int(out.ctypes.data), buf.ptr, buf.nbytes,
                       self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream)
        self.synchronize()
        return out

    def synchronize(self) -> None:
        """Wait for everything queued on this backend's stream."""
        self._call("cudaStreamSynchronize", self.stream)

    def time_runs(self, step: Callable[[], None], warmup: int, runs: int) -> list[float]:
        """Per-run seconds from CUDA events recorded around each ``step`` on this stream (after ``warmup`` runs)."""
        stream = self.stream
        for _ in range(warmup):
            step()
        self.synchronize()
        events: list[Any] = []
        out: list[float] = []
        try:
            for _ in range(2):
                events.append(self._call("cudaEventCreate")[0])
            start, end = events
            for _ in range(runs):
                self._call("cudaEventRecord", start, stream)
                step()
                self._call("cudaEventRecord", end, stream)
                self._call("cudaEventSynchronize", end)
                (ms,) = self._call("cudaEventElapsedTime", start, end)
                out.append(float(ms) / 1e3)
        finally:
            for event in events:
                with contextlib.suppress(PelaExportError):  # never hide the error that ended the loop
                    self._call("cudaEventDestroy", event)
        return out

    # -- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        """Free every live buffer of this backend and destroy its stream (idempotent; raises the first failure)."""
        if self._closed:
            return
        self._closed = True
        steps: list[Callable[[], Any]] = [lambda: self._call("cudaStreamSynchronize", self._stream),
                                          *(buf.close for buf in list(self._live)),
                                          lambda: self._call("cudaStreamDestroy", self._stream)]
        failures: list[PelaExportError] = []
        for step in steps:
            try:
                step()
            except PelaExportError as exc:  # keep going: free what can be freed
                failures.append(exc)
        if failures:
            raise failures[0]

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown or a destroyed context
            self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
