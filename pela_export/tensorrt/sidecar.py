"""The JSON sidecar next to every plan: how, where and from what it was built.

The plan file itself stays the raw TensorRT serialisation (trtexec and other
tools must load it), so metadata lives in ``<plan>.json``. The runner reads it
to refuse a plan built for another TensorRT version or GPU with a clear error
instead of TensorRT's opaque deserialisation failure.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .._io import write_json_atomic
from ..errors import ArtifactError
from ._trt import parse_version
from .device import GpuInfo

FORMAT = "pela-export.tensorrt-plan/1"
REQUIRED = ("format", "tensorrt_version", "gpu", "plan", "onnx", "options")


def sidecar_path(plan_path: str | os.PathLike[str]) -> Path:
    """``model.plan`` -> ``model.plan.json``."""
    p = Path(plan_path)
    return p.with_name(p.name + ".json")


def write_sidecar(plan_path: str | os.PathLike[str], meta: dict[str, Any]) -> Path:
    return write_json_atomic(sidecar_path(plan_path), {"format": FORMAT, **meta})


def read_sidecar(plan_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The sidecar of ``plan_path``, or ArtifactError saying what is wrong."""
    sc = sidecar_path(plan_path)
    if not sc.is_file():
        raise ArtifactError(f"no build record {sc.name} next to the plan",
                            fix="rebuild with `pela-export build` (it writes the record), or pass check_sidecar=False",
                            where=str(plan_path))
    try:
        meta = json.loads(sc.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"build record is unreadable ({exc})", fix="rebuild the engine", where=str(sc)) from None
    missing = [k for k in REQUIRED if k not in meta] if isinstance(meta, dict) else list(REQUIRED)
    if missing or meta.get("format") != FORMAT:
        raise ArtifactError(f"build record is not a {FORMAT} record (missing: {', '.join(missing) or 'none'})",
                            fix="rebuild the engine with this version of pela-export", where=str(sc))
    return meta


def _same_release(built: str, local: str) -> bool:
    """Standard plans need the same major.minor.patch (NVIDIA: "version numbers must match")."""
    return (parse_version(built) + (0, 0, 0))[:3] == (parse_version(local) + (0, 0, 0))[:3]


def compatibility_problems(meta: dict[str, Any], local_version: str, gpu: GpuInfo) -> list[str]:
    """Why this plan cannot run here (empty when it can)."""
    problems: list[str] = []
    built = str(meta["tensorrt_version"])
    opts = meta.get("options") or {}
    if not _same_release(built, local_version):
        vc_ok = (opts.get("version_compatible") and parse_version(local_version)[0] == parse_version(built)[0]
                 and parse_version(local_version) >= parse_version(built))
        if not vc_ok:
            why = " (version-compatible plans run only on the same or a newer release of the same major)" \
                if opts.get("version_compatible") else ""
            problems.append(f"built with TensorRT {built}, this device has TensorRT {local_version}{why}")
    bgpu = meta.get("gpu") or {}
    bcc, bname = str(bgpu.get("compute_capability", "unknown")), str(bgpu.get("name", "unknown"))
    if gpu.known and bcc != "unknown":
        level = opts.get("hardware_compat", "none")
        if level == "ampere+":
            if parse_version(gpu.compute_capability) < (8, 0):
                problems.append(f"built with --hardware-compat ampere+, but this GPU ({gpu.name}) "
                                f"is compute capability {gpu.compute_capability} (< 8.0)")
        elif gpu.compute_capability != bcc:
            problems.append(f"built for {bname} (compute capability {bcc}), this GPU is {gpu.name} "
                            f"(compute capability {gpu.compute_capability})")
        elif level == "none" and bname != "unknown" and gpu.name != bname:
            problems.append(f"built for {bname}, this GPU is {gpu.name} (plans are GPU-model specific "
                            "unless built with --hardware-compat)")
    return problems
