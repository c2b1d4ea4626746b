"""Run a built plan with TensorRT's name-based I/O API (8.6 through 11).

Checks the build record first (same TensorRT release and GPU, plan checksum),
then deserialises, binds every I/O tensor by name (``set_input_shape``,
``set_tensor_address``) and enqueues with ``execute_async_v3`` on a
non-default CUDA stream. Shape-tensor inputs (``is_shape_inference_io``) are
read by TensorRT on the host, so they are bound to host memory, as Polygraphy's
runner does. Memory and streams come from a
:class:`~.device.DeviceBackend` (``default_backend()``: cuda-python, else torch
CUDA), which lets the contract tests drive these exact TensorRT calls with
host memory.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ArtifactError, InputShapeError, PelaExportError
from ._trt import load_tensorrt, version_of
from .callbacks import shared_logger
from .device import DeviceBackend, GpuInfo, default_backend
from .errors import TensorRTError
from .features import detect_features
from .options import BuildOptions
from .sidecar import compatibility_problems, read_sidecar
from .trtexec import trtexec_command, trtexec_shell

if TYPE_CHECKING:
    from ..measure.stats import LatencyStats
    from ..export.compare import Comparison
    from ..tolerance import Tolerance

#: Every TensorRT name the runner touches (a contract test checks them against each manifest).
RUNNER_API: dict[str, tuple[str, ...]] = {
    "ILogger": ("__init__", "Severity"),
    "Runtime": ("__init__", "deserialize_cuda_engine", "engine_host_code_allowed"),
    "ICudaEngine": ("num_io_tensors", "get_tensor_name", "get_tensor_mode", "get_tensor_shape",
                    "get_tensor_dtype", "get_tensor_profile_shape", "create_execution_context",
                    "is_shape_inference_io"),
    "IExecutionContext": ("set_input_shape", "get_tensor_shape", "set_tensor_address", "execute_async_v3"),
    "TensorIOMode": ("INPUT", "OUTPUT"),
    "DataType": ("FLOAT", "HALF", "INT8", "INT32", "BOOL"),
}
#: DataType members mapped when the version has them (INT64/UINT8 are newer or optional).
NUMPY_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32,
                "INT64": np.int64, "BOOL": np.bool_, "UINT8": np.uint8}


@dataclass(frozen=True)
class IOTensor:
    name: str
    is_input: bool
    shape: tuple[int, ...]  # -1 where dynamic
    dtype: Any  # numpy dtype, or None if the runner cannot hold it (BF16, FP8, ...)
    trt_dtype: str
    host: bool = False  # a shape tensor TensorRT reads on the host (is_shape_inference_io)


class TrtRunner:
    """A deserialised engine plus one execution context, driven by tensor names."""

    def __init__(self, plan_path: str | os.PathLike[str], *, trt: ModuleType | None = None,
                 backend: DeviceBackend | None = None, gpu: GpuInfo | None = None, check_sidecar: bool = True) -> None:
        self.plan_path = Path(plan_path)
        if not self.plan_path.is_file():
            raise ArtifactError("TensorRT plan not found", fix="build it first with `pela-export build`",
                                where=str(self.plan_path))
        self.trt = load_tensorrt(trt)
        self.features = detect_features(self.trt)
        self.version = version_of(self.trt)
        self.backend: DeviceBackend = backend if backend is not None else default_backend()
        data = self.plan_path.read_bytes()
        self.meta: dict[str, Any] = {}
        if check_sidecar:
            self.meta = read_sidecar(self.plan_path)
            self._check(data, gpu or self.backend.gpu())
        self._logger = shared_logger(self.trt)
        self.runtime = self.trt.Runtime(self._logger)
        if self.meta.get("options", {}).get("version_compatible") and self.features.engine_host_code_allowed:
            self.runtime.engine_host_code_allowed = True  # VC plans embed the lean runtime (host code)
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            errors = "; ".join(self._logger.errors) or "no message"
            raise ArtifactError(f"TensorRT {self.version} could not deserialise the plan ({errors})",
                                fix=self._rebuild_fix(), where=str(self.plan_path))
        self.context = self.engine.create_execution_context()
        if self.context is None:  # e.g. not enough device memory for the engine's activations
            errors = "; ".join(self._logger.errors) or "TensorRT logged no error"
            raise TensorRTError(f"TensorRT {self.version} could not create an execution context ({errors})",
                                fix="free GPU memory (other processes, other engines) and retry, or rebuild with a "
                                    "smaller --max-batch / --profile", where=str(self.plan_path))
        self.io = self._describe_io()
        self._buffers: dict[str, Any] = {}

    # -- checks ---------------------------------------------------------------------------------
    def _rebuild_fix(self) -> str:
        """The exact command to rebuild here: the recorded `pela-export build` line, else trtexec for this version."""
        cmd = self.meta.get("rebuild_command") or self._local_trtexec()
        script = (self.meta.get("trtexec") or {}).get("script")
        how = f": {cmd}" if cmd else ""
        extra = f" (or edit and run {script} there)" if script else ""
        return f"rebuild the engine on this device{how}{extra}"

    def _local_trtexec(self) -> str | None:
        """trtexec for the *local* TensorRT from the recorded options, if the source ONNX is still next to the plan."""
        rel = (self.meta.get("onnx") or {}).get("path")
        onnx = self.plan_path.parent / rel if rel else None
        if onnx is not None and onnx.is_file():
            try:
                opts = BuildOptions.from_dict(self.meta.get("options") or {})
                return trtexec_shell(trtexec_command(onnx, self.plan_path, opts, self.version))
            except PelaExportError:  # e.g. the recorded precision flags do not exist on this version
                pass
        return (self.meta.get("trtexec") or {}).get("command")

    def _check(self, data: bytes, gpu: GpuInfo) -> None:
        problems = compatibility_problems(self.meta, self.version, gpu)
        if problems:
            raise ArtifactError("the plan was built for another TensorRT/GPU: " + "; ".join(problems),
                                fix=self._rebuild_fix(), where=str(self.plan_path))
        want = (self.meta.get("plan") or {}).get("sha256")
        if want and hashlib.sha256(data).hexdigest() != want:
            raise ArtifactError("the plan's checksum does not match its build record (file changed or truncated)",
                                fix=self._rebuild_fix(), where=str(self.plan_path))

    # -- I/O ------------------------------------------------------------------------------------
    def _describe_io(self) -> list[IOTensor]:
        trt, eng = self.trt, self.engine
        dtypes = {getattr(trt.DataType, n): (n, np.dtype(t)) for n, t in NUMPY_DTYPES.items() if hasattr(trt.DataType, n)}
        out = []
        for i in range(int(eng.num_io_tensors)):
            name = eng.get_tensor_name(i)
            is_input = eng.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            tname, npdt = dtypes.get(eng.get_tensor_dtype(name), (str(eng.get_tensor_dtype(name)), None))
            host = bool(is_input and eng.is_shape_inference_io(name))
            out.append(IOTensor(name, is_input, tuple(int(d) for d in eng.get_tensor_shape(name)), npdt, tname, host))
        return out

    @property
    def inputs(self) -> list[IOTensor]:
        return [t for t in self.io if t.is_input]

    @property
    def outputs(self) -> list[IOTensor]:
        return [t for t in self.io if not t.is_input]

    def _profile_hint(self, name: str) -> str:
        try:
            lo, opt, hi = self.engine.get_tensor_profile_shape(name, 0)
            return f"; the engine accepts {tuple(lo)} .. {tuple(hi)} (opt {tuple(opt)})"
        except Exception:  # noqa: BLE001 - static input or no profile: no hint
            return ""

    def bind(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Upload inputs, set their shapes, allocate outputs and set every tensor address."""
        missing = [t.name for t in self.inputs if t.name not in feeds]
        extra = [k for k in feeds if k not in {t.name for t in self.inputs}]
        if missing or extra:
            raise InputShapeError(f"feeds do not match the engine inputs (missing: {missing}, unexpected: {extra})",
                                  fix=f"pass exactly: {', '.join(t.name for t in self.inputs)}", where=str(self.plan_path))
        self._buffers = {}
        for t in self.inputs:
            arr = np.asarray(feeds[t.name])
            if t.dtype is None:
                raise TensorRTError(f"input {t.name!r} has TensorRT type {t.trt_dtype}, which the runner cannot feed")
            if arr.dtype != t.dtype:
                if not np.can_cast(arr.dtype, t.dtype, casting="same_kind"):
                    raise InputShapeError(f"input {t.name!r} is {arr.dtype}, the engine expects {t.dtype}",
                                          fix=f"pass {t.dtype} data", where=str(self.plan_path))
                arr = arr.astype(t.dtype)
            if len(arr.shape) != len(t.shape) or any(d not in (-1, s) for d, s in zip(t.shape, arr.shape, strict=True)):
                raise InputShapeError(f"input {t.name!r} has shape {arr.shape}, the engine expects {t.shape}",
                                      fix="pass data of the engine's input shape (-1 = any within the profile)",
                                      where=str(self.plan_path))
            if not self.context.set_input_shape(t.name, tuple(arr.shape)):
                raise InputShapeError(f"shape {arr.shape} for {t.name!r} is outside the engine's profile"
                                      f"{self._profile_hint(t.name)}",
                                      fix="rebuild with a wider --profile, or feed a shape inside the range",
                                      where=str(self.plan_path))
            if t.host:  # TensorRT reads shape tensors on the host: keep the array alive and pass its address
                host = np.ascontiguousarray(arr)
                self._buffers[t.name] = host
                self.context.set_tensor_address(t.name, int(host.ctypes.data))
                continue
            buf = self.backend.upload(arr)
            self._buffers[t.name] = buf
            self.context.set_tensor_address(t.name, self.backend.pointer(buf))
        for t in self.outputs:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(t.name))
            if any(d < 0 for d in shape) or t.dtype is None:
                raise TensorRTError(f"output {t.name!r} has data-dependent shape {shape} or type {t.trt_dtype}, "
                                    "which this runner does not support")
            buf = self.backend.empty(shape, t.dtype)
            self._buffers[t.name] = buf
            self.context.set_tensor_address(t.name, self.backend.pointer(buf))

    def execute(self) -> None:
        """Enqueue one inference on the backend's stream (asynchronous)."""
        if not self.context.execute_async_v3(self.backend.stream_handle):
            raise TensorRTError(f"TensorRT {self.version} failed to enqueue the inference (execute_async_v3)")

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference; returns every output by name as numpy arrays."""
        self.bind(feeds)
        self.execute()
        self.backend.synchronize()
        return {t.name: self.backend.download(self._buffers[t.name]) for t in self.outputs}

    def benchmark(self, feeds: Mapping[str, np.ndarray], warmup: int = 10, runs: int = 100) -> LatencyStats:
        """Latency of ``execute`` alone (inputs already on the device): LatencyStats with p50/p90/p99."""
        from ..measure.stats import LatencyStats
        from ..errors import OptionError

        if warmup < 0 or runs < 1:
            raise OptionError(f"warmup {warmup} / runs {runs} invalid", fix="pass --warmup >= 0 and --runs >= 1")
        self.bind(feeds)
        seconds = self.backend.time_runs(self.execute, warmup, runs)
        first = np.asarray(feeds[self.inputs[0].name]) if self.inputs else np.zeros(1)
        batch = int(first.shape[0]) if first.ndim else 1
        return LatencyStats.from_seconds(seconds, batch=max(batch, 1))

    def compare_with_onnxruntime(self, onnx_path: str | os.PathLike[str], feeds: Mapping[str, np.ndarray],
                                 tol: Tolerance | None = None) -> Comparison:
        """Outputs of this engine vs ONNX Runtime (CPU) on the same feeds: a Comparison (never raises on mismatch)."""
        from ..export.compare import compare_outputs
        from ..export.runtime import ort_run, ort_session
        from ..tolerance import Tolerance

        ref = ort_run(ort_session(onnx_path), feeds)
        cand = self.run(feeds)
        return compare_outputs(ref, cand, tol if tol is not None else Tolerance(),
                               ref_name="onnxruntime", cand_name=f"tensorrt {self.version}")

    def describe(self) -> dict[str, Any]:
        return {"plan": str(self.plan_path), "tensorrt_version": self.version,
                "io": [{"name": t.name, "input": t.is_input, "shape": list(t.shape), "dtype": t.trt_dtype}
                       for t in self.io]}
