"""Thin, version-aware TensorRT adapter (8.6 on JetPack 6.0 through 11.x).

Importing this package needs neither TensorRT nor a GPU: ``tensorrt`` (and
cuda-python or torch for the runner) are imported only when a build or run starts, and every
entry point accepts an injected ``trt`` module (the contract tests pass fakes
generated from each version's API manifest).

Public API::

    build_engine(onnx_path, out_plan, options, *, trt=None, log=None, gpu=None, rebuild_command=None) -> EngineRecord
    BuildOptions(...), parse_profiles(["input:1x3x224x224,8x3x224x224,32x3x224x224"])
    check_profiles(options, io) -> {input: ShapeRange}; with_model_axes(options, io) (defaults from an IOSpec)
    check_onnx_for_trt(onnx_model_or_path, "10.3") -> list[Finding]
    trtexec_command(onnx_path, plan_path, options, "8.6") -> list[str]; trtexec_shell(argv) -> str
    TrtRunner(plan_path, *, trt=None, backend=None).run(feeds) / .benchmark(feeds, warmup, runs) / .compare_with_onnxruntime(...)
    default_backend() -> CudaPythonBackend (cuda-python) | TorchCudaBackend (torch); HostBackend for tests
    detect_features(trt) / features_for_version("10.13") -> TrtFeatures
"""
from __future__ import annotations

from .builder import EngineRecord, build_engine, parser_errors
from .device import (
    CudaBuffer,
    CudaPythonBackend,
    DeviceBackend,
    GpuInfo,
    HostBackend,
    TorchCudaBackend,
    default_backend,
    gpu_info,
)
from .errors import TensorRTError
from .features import TrtFeatures, detect_features, features_for_version
from .graph import GraphInfo, inspect_onnx
from .options import (
    FLAGS,
    HARDWARE_COMPAT,
    PRECISIONS,
    BuildOptions,
    ShapeRange,
    parse_profile,
    parse_profiles,
)
from .parse_check import (
    TABLE_VERSIONS,
    Finding,
    check_onnx_for_trt,
    format_findings,
    nearest_table,
)
from .plan import BuildPlan, plan_build
from .profiles import check_profiles, resolve_profiles, with_model_axes
from .runner import TrtRunner
from .sidecar import compatibility_problems, read_sidecar, sidecar_path
from .trtexec import (
    script_path_for,
    trtexec_command,
    trtexec_shell,
    write_trtexec_script,
)

__all__ = [
    "FLAGS", "HARDWARE_COMPAT", "PRECISIONS", "TABLE_VERSIONS",
    "BuildOptions", "BuildPlan", "CudaBuffer", "CudaPythonBackend", "DeviceBackend", "EngineRecord", "Finding",
    "GpuInfo", "GraphInfo", "HostBackend", "ShapeRange", "TensorRTError", "TorchCudaBackend", "TrtFeatures",
    "TrtRunner",
    "build_engine", "check_onnx_for_trt", "check_profiles", "compatibility_problems", "default_backend", "detect_features",
    "features_for_version",
    "format_findings", "gpu_info", "inspect_onnx", "nearest_table", "parse_profile", "parse_profiles",
    "parser_errors", "plan_build", "read_sidecar", "resolve_profiles", "script_path_for", "sidecar_path", "trtexec_command",
    "trtexec_shell", "with_model_axes", "write_trtexec_script",
]
