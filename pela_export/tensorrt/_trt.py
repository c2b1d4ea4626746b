"""Lazy access to the optional heavy dependencies (``tensorrt``, ``torch``).

``import pela_export.tensorrt`` must work on machines without TensorRT (CI,
x86 laptops): nothing here imports it at module load. Every entry point takes
an optional ``trt`` module so tests can inject a fake generated from the API
manifests.
"""
from __future__ import annotations

import re
from types import ModuleType
from typing import Any

from ..errors import DependencyError

TRT_MISSING = "TensorRT Python bindings are not installed"
TRT_FIX = ("on Jetson install JetPack (it ships python3-libnvinfer); on a desktop GPU run "
           "`pip install tensorrt` (NVIDIA's index: --extra-index-url https://pypi.nvidia.com); "
           "or copy the ONNX file to the device and run `pela-export build` there")


def load_tensorrt(trt: ModuleType | None = None) -> ModuleType:
    """Return ``trt`` if given, else import ``tensorrt`` or raise DependencyError with the fix."""
    if trt is not None:
        return trt
    try:
        import tensorrt
    except ImportError as exc:
        raise DependencyError(f"{TRT_MISSING} ({exc})", fix=TRT_FIX) from None
    if not hasattr(tensorrt, "__version__") or not hasattr(tensorrt, "Builder"):
        # e.g. a folder named "tensorrt" on sys.path imported as a namespace package
        where = list(getattr(tensorrt, "__path__", [])) or getattr(tensorrt, "__file__", "?")
        raise DependencyError(f"{TRT_MISSING} (`import tensorrt` found {where}, which is not NVIDIA's bindings)",
                              fix=TRT_FIX)
    return tensorrt


def tensorrt_available() -> bool:
    """True when NVIDIA's ``tensorrt`` package is importable (checked without importing it).

    A plain folder named ``tensorrt`` on sys.path (namespace package, no origin) does not count.
    """
    import importlib.util

    try:
        spec = importlib.util.find_spec("tensorrt")
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.origin is not None and spec.loader is not None


def load_torch() -> Any:
    """Import torch (the runner's CUDA memory and stream provider)."""
    try:
        import torch
    except ImportError as exc:
        raise DependencyError(f"PyTorch is not importable ({exc})",
                              fix="install torch with CUDA support (on Jetson: NVIDIA's JetPack wheel)") from None
    return torch


def parse_version(text: str) -> tuple[int, ...]:
    """Leading numeric components of a version string: '10.3.0.post1' -> (10, 3, 0)."""
    parts: list[int] = []
    for piece in str(text).strip().split("."):
        m = re.match(r"\d+", piece)
        if not m:
            break
        parts.append(int(m.group()))
        if m.end() != len(piece):
            break
    if not parts:
        raise ValueError(f"not a version string: {text!r}")
    return tuple(parts)


def version_of(trt: ModuleType) -> str:
    """The module's ``__version__`` (every TensorRT release defines it)."""
    return str(trt.__version__)
