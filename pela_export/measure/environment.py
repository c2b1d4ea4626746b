"""Where a report was measured: tool and library versions, platform and CPU facts.

Split from :mod:`.report` because timings mean little without them and the device
side (merge, device reports) needs them without torch.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
from datetime import datetime, timezone
from typing import Any

TOOL_NAME = "pela-export"


def tool_version() -> str:
    """pela_export.__version__, else the installed distribution's version."""
    try:
        import pela_export  # noqa: PLC0415

        version = getattr(pela_export, "__version__", None)
        if isinstance(version, str) and version:
            return version
    except ImportError:
        pass
    try:
        return importlib.metadata.version(TOOL_NAME)
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0+unknown"


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment_info() -> dict[str, Any]:
    """Versions, platform and CPU facts needed to interpret (and reproduce) timings."""
    try:
        usable_cpus: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable_cpus = None
    info: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus,
    }
    for dist in ("torch", "onnx", "onnxruntime", "timm", "numpy"):
        info[dist] = _dist_version(dist)
    try:
        import torch  # noqa: PLC0415

        info["torch_threads"] = torch.get_num_threads()
        info["cuda_available"] = bool(torch.cuda.is_available())
        info["cuda_device"] = torch.cuda.get_device_name(0) if info["cuda_available"] else None
    except ImportError:
        info["torch_threads"] = info["cuda_available"] = info["cuda_device"] = None
    return info
