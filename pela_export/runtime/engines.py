"""TensorRT engines for a bundle's variants, built once per device and reused.

A plan runs only on the TensorRT release and GPU it was built for, and an
engine build takes minutes on a Jetson, so plans are cached under
``<cache>/engines`` keyed by (TensorRT version, GPU name, compute capability,
precision, ONNX sha256) plus a digest of the build options (the profile). A
cached plan is reused only after its build record agrees with the key and the
plan's checksum; otherwise it is rebuilt and the reason is logged.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .._io import sha256_file
from ..errors import ArtifactError
from .bundle import cache_root

ENGINE_CACHE_ENV = "PELA_EXPORT_ENGINE_CACHE"
LogFn = Callable[[str], None]


def engine_cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """``override``, else ``$PELA_EXPORT_ENGINE_CACHE``, else ``<cache>/engines``."""
    if override is not None:
        return Path(override)
    env = os.environ.get(ENGINE_CACHE_ENV)
    return Path(env).expanduser() if env else cache_root() / "engines"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "unknown"


@dataclass(frozen=True)
class EngineKey:
    """Everything a plan depends on; equal keys mean the cached plan is valid here."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    onnx_sha256: str
    options_digest: str = ""

    def relpath(self) -> Path:
        """``trt10.3.0/orin-nvgpu-cc8.7/int8-<onnx sha 16>-<options 8>.plan``: readable, one folder per device."""
        stem = f"{self.precision}-{self.onnx_sha256[:16]}" + (f"-{self.options_digest[:8]}" if self.options_digest else "")
        return Path(f"trt{_slug(self.tensorrt_version)}") / f"{_slug(self.gpu_name)}-cc{_slug(self.compute_capability)}" \
            / f"{stem}.plan"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def options_digest(options: Any) -> str:
    """Short hash of the build options (profiles etc.) so a different profile never reuses a plan."""
    blob = json.dumps(options.to_dict(), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def engine_key(trt_version: str, gpu: Any, precision: str, onnx_path: str | os.PathLike[str],
               options: Any = None, *, onnx_sha256: str | None = None) -> EngineKey:
    return EngineKey(tensorrt_version=str(trt_version), gpu_name=str(gpu.name),
                     compute_capability=str(gpu.compute_capability), precision=precision,
                     onnx_sha256=onnx_sha256 or sha256_file(onnx_path),
                     options_digest=options_digest(options) if options is not None else "")


def reuse_problem(plan: Path, key: EngineKey, gpu: Any) -> str | None:
    """Why the cached ``plan`` cannot serve ``key`` (None: reuse it)."""
    from ..tensorrt.sidecar import compatibility_problems, read_sidecar

    if not plan.is_file():
        return "no cached plan"
    try:
        meta = read_sidecar(plan)
    except ArtifactError as exc:
        return exc.problem
    if (meta.get("onnx") or {}).get("sha256") != key.onnx_sha256:
        return "its build record names another ONNX file"
    if (meta.get("pela_engine_key") or {}) != key.to_dict():
        return "its build record carries another engine key"
    problems = compatibility_problems(meta, key.tensorrt_version, gpu)
    if problems:
        return "; ".join(problems)
    if (meta.get("plan") or {}).get("sha256") != sha256_file(plan):
        return "the plan's checksum does not match its build record (truncated or changed)"
    return None


def build_or_reuse(onnx_path: str | os.PathLike[str], precision: str, options: Any, *, trt: ModuleType | None = None,
                   gpu: Any = None, cache_dir: str | os.PathLike[str] | None = None,
                   log: LogFn | None = None, onnx_sha256: str | None = None) -> tuple[Path, dict[str, Any]]:
    """The plan for ``onnx_path`` on this device: cached if valid, else built now (and cached).

    Returns (plan path, engine record: key, reused flag, sidecar facts) for the device report.
    """
    from ..tensorrt import build_engine
    from ..tensorrt._trt import load_tensorrt, version_of
    from ..tensorrt.sidecar import read_sidecar, sidecar_path, write_sidecar

    say = log or (lambda _m: None)
    trt = load_tensorrt(trt)
    if gpu is None:
        from .device import local_gpu

        gpu = local_gpu()
    key = engine_key(version_of(trt), gpu, precision, onnx_path, options, onnx_sha256=onnx_sha256)
    plan = engine_cache_dir(cache_dir) / key.relpath()
    why = reuse_problem(plan, key, gpu)
    reused = why is None
    if reused:
        say(f"reusing cached TensorRT engine {plan}")
        meta = read_sidecar(plan)
    else:
        if why != "no cached plan":
            say(f"rebuilding cached engine {plan.name}: {why}")
        say(f"building TensorRT {key.tensorrt_version} engine for {Path(onnx_path).name} ({precision}) on "
            f"{key.gpu_name} (compute capability {key.compute_capability}); this can take minutes")
        record = build_engine(onnx_path, plan, options, trt=trt, log=say, gpu=gpu)
        meta = dict(record.metadata)
        meta["pela_engine_key"] = key.to_dict()
        meta.pop("format", None)
        write_sidecar(plan, meta)
    engine = {"plan": str(plan), "sidecar": str(sidecar_path(plan)), "reused": reused, "key": key.to_dict(),
              "tensorrt_version": meta.get("tensorrt_version"), "precision": meta.get("precision"),
              "strongly_typed": meta.get("strongly_typed"), "plan_sha256": (meta.get("plan") or {}).get("sha256"),
              "plan_bytes": (meta.get("plan") or {}).get("bytes"), "decisions": list(meta.get("decisions") or []),
              "gpu": meta.get("gpu")}
    return plan, engine
