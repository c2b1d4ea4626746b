"""pela-export: low-rank (PELA) compression, verified ONNX export and benchmarks for NVIDIA edge GPUs.

Importing this package needs neither TensorRT nor a GPU; heavy stages import
their optional dependencies lazily.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import PelaExportError  # noqa: E402

__all__ = ["__version__", "PelaExportError", "api"]


def __getattr__(name: str):  # lazy: `pela_export.api` pulls in torch/onnx only when used
    if name == "api":
        import importlib

        return importlib.import_module(f"{__name__}.api")
    raise AttributeError(name)
