"""Run one bundle variant on the device: TensorRT, or ONNX Runtime where TensorRT is absent.

Both backends take and return numpy arrays keyed by tensor name and time
``runs`` inferences after ``warmup`` untimed ones, so the benchmark treats them
alike. The choice is explicit: ``backend="tensorrt"`` fails with the install
fix when TensorRT cannot run here; only ``"auto"`` falls back to ONNX Runtime,
and then the reason is returned so the report says so.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from ..errors import DependencyError, OptionError
from .bundle import Bundle

BACKEND_CHOICES = ("auto", "tensorrt", "onnxruntime")
CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"
LogFn = Callable[[str], None]


class Runner(Protocol):
    """One variant ready to run: ``run`` for outputs, ``time`` for per-run seconds."""

    backend: str

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...
    def time(self, feeds: Mapping[str, np.ndarray], warmup: int, runs: int) -> list[float]: ...
    def describe(self) -> dict[str, Any] | None: ...


class OrtRunner:
    """ONNX Runtime session (CUDA EP when installed and asked for, else CPU) at the golden outputs' optimisation level."""

    backend = "onnxruntime"

    def __init__(self, onnx_path: str | Path, *, optimization: str = "all", use_cuda: bool = True,
                 threads: int | None = None) -> None:
        from ..export.runtime import _onnxruntime, ort_session

        ort = _onnxruntime()
        providers = [CUDA_EP, CPU_EP] if use_cuda and CUDA_EP in ort.get_available_providers() else [CPU_EP]
        self.session = ort_session(onnx_path, threads=threads, providers=providers, optimization=optimization)
        self.providers = list(self.session.get_providers())
        self.optimization = optimization
        self.names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..export.runtime import ort_run

        return ort_run(self.session, feeds)

    def time(self, feeds: Mapping[str, np.ndarray], warmup: int, runs: int) -> list[float]:
        feeds = dict(feeds)
        for _ in range(warmup):
            self.session.run(self.names, feeds)
        out = []
        for _ in range(runs):
            t0 = time.perf_counter()
            self.session.run(self.names, feeds)
            out.append(time.perf_counter() - t0)
        return out

    def describe(self) -> dict[str, Any] | None:
        return None


class TrtEngineRunner:
    """A cached-or-built TensorRT engine run through :class:`~pela_export.tensorrt.TrtRunner`."""

    backend = "tensorrt"

    def __init__(self, onnx_path: str | Path, precision: str, options: Any, *, trt: ModuleType | None = None,
                 device_backend: Any = None, gpu: Any = None, cache_dir: str | Path | None = None,
                 log: LogFn | None = None, onnx_sha256: str | None = None) -> None:
        from ..tensorrt import TrtRunner
        from .engines import build_or_reuse

        self.plan, self.engine = build_or_reuse(onnx_path, precision, options, trt=trt, gpu=gpu, cache_dir=cache_dir,
                                                log=log, onnx_sha256=onnx_sha256)
        self.runner = TrtRunner(self.plan, trt=trt, backend=device_backend or default_device_backend(), gpu=gpu)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.runner.run(feeds)

    def time(self, feeds: Mapping[str, np.ndarray], warmup: int, runs: int) -> list[float]:
        self.runner.bind(feeds)
        return list(self.runner.backend.time_runs(self.runner.execute, warmup, runs))

    def describe(self) -> dict[str, Any] | None:
        return self.engine


def default_device_backend() -> Any:
    """CUDA memory for TensorRT: cuda-python when installed, else torch (``tensorrt.device.default_backend``)."""
    from ..tensorrt import device as trt_device

    factory = getattr(trt_device, "default_backend", None)
    if factory is not None:
        return factory()
    return trt_device.TorchCudaBackend()  # older adapter: torch only


def build_options(bundle: Bundle) -> Any:
    """TensorRT build options equal to the bundle's trtexec scripts: the run's recorded options
    (workspace, opt level, ...) with the recorded profile of every input."""
    from dataclasses import replace

    from ..tensorrt import BuildOptions, ShapeRange

    recorded = (bundle.deploy.get("tensorrt") or {}).get("build_options")
    base = BuildOptions.from_dict(recorded) if isinstance(recorded, dict) else BuildOptions()
    profiles = {t["name"]: ShapeRange(tuple(t["profile"]["min"]), tuple(t["profile"]["opt"]), tuple(t["profile"]["max"]))
                for t in bundle.inputs if t.get("profile")}
    return replace(base, precision="auto", profiles=profiles, timing_cache=None, calibration_cache=None)


@dataclass
class BackendChoice:
    """What will run: ``kind`` (tensorrt | onnxruntime) and, for an automatic fallback, why."""

    kind: str
    fallback_reason: str | None = None
    trt: ModuleType | None = None
    gpu: Any = None


def check_backend(requested: str) -> None:
    """OptionError naming the choices for an unknown ``--backend`` (before any bundle is unpacked)."""
    if requested not in BACKEND_CHOICES:
        raise OptionError(f"unknown backend {requested!r}", fix=f"pass --backend one of: {', '.join(BACKEND_CHOICES)}")


def choose_backend(requested: str, *, trt: ModuleType | None = None, gpu: Any = None) -> BackendChoice:
    """Resolve ``auto|tensorrt|onnxruntime`` on this machine; ``tensorrt`` is never silently replaced."""
    from ..tensorrt._trt import TRT_FIX, TRT_MISSING, tensorrt_available

    check_backend(requested)
    if requested == "onnxruntime":
        return BackendChoice("onnxruntime")
    reason = None
    if trt is None and not tensorrt_available():
        reason = f"{TRT_MISSING} (`import tensorrt` failed)"
        fix = TRT_FIX
    else:
        if gpu is None:
            from .device import local_gpu

            gpu = local_gpu()
        if not gpu.known:
            from ..tensorrt.cuda_versions import CUDA_PYTHON_FIX

            reason = "no CUDA GPU was found (cuda-python and nvidia-smi report none)"
            fix = f"run on the Jetson/GPU machine, with the NVIDIA driver; {CUDA_PYTHON_FIX}"
    if reason is None:
        return BackendChoice("tensorrt", trt=trt, gpu=gpu)
    if requested == "tensorrt":
        raise DependencyError(f"--backend tensorrt was asked for, but {reason}", fix=f"{fix}; or pass --backend auto to "
                              "measure with ONNX Runtime instead (the report then says so)")
    return BackendChoice("onnxruntime", fallback_reason=f"{reason}: measured with ONNX Runtime instead of TensorRT",
                         gpu=gpu)


def open_variant(bundle: Bundle, name: str, choice: BackendChoice, *, device_backend: Any = None,
                 cache_dir: str | Path | None = None, threads: int | None = None, log: LogFn | None = None) -> Runner:
    """A :class:`Runner` for variant ``name`` of ``bundle`` on the chosen backend."""
    v = bundle.variant(name)
    onnx = bundle.onnx_path(name)
    if choice.kind == "tensorrt":
        return TrtEngineRunner(onnx, v["precision"], build_options(bundle), trt=choice.trt,
                               device_backend=device_backend, gpu=choice.gpu, cache_dir=cache_dir, log=log,
                               onnx_sha256=v["sha256"])
    return OrtRunner(onnx, optimization=bundle.ort_optimization(name), threads=threads)


def run_variant(bundle: Bundle, name: str, feeds: Mapping[str, np.ndarray] | None = None,
                backend: str = "onnxruntime", **kw: Any) -> dict[str, np.ndarray]:
    """Outputs of variant ``name`` on ``feeds`` (default: its golden inputs) as numpy arrays."""
    if feeds is None:
        feeds, _ = bundle.golden(name)
    return open_variant(bundle, name, choose_backend(backend), **kw).run(feeds)
