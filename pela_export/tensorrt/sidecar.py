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


#: Version compatibility (``--version-compatible``) exists from TensorRT 8.6 on, for the plan and the runtime.
VC_MINIMUM = (8, 6)
#: Later majors a version-compatible plan of each major may run on, as NVIDIA documents them (see
#: :func:`version_problem`); every other change of major is unsupported.
VC_LATER_MAJORS: dict[int, tuple[int, ...]] = {8: (9, 10), 9: (10,), 10: (11,)}


def _release(version: str) -> tuple[int, ...]:
    """(major, minor, patch[, build]) of a version string, missing minor/patch as 0."""
    v = parse_version(version)
    return (v + (0, 0, 0))[:3] + v[3:4]


def same_release(built: str, local: str) -> bool:
    """Standard plans: major.minor.patch equal and, where both strings carry it, the build number too.

    NVIDIA: "By default, TensorRT engines are compatible only with the version of TensorRT used to build
    them" (developer guide, "Version Compatibility"); the version is the full major.minor.patch.build
    (10.3.0.30). pip wheels and JetPack's bindings sometimes report only major.minor.patch; then the
    build number cannot be compared and the three leading numbers decide.
    """
    b, v = _release(built), _release(local)
    return b[:3] == v[:3] and (len(b) < 4 or len(v) < 4 or b[3] == v[3])


def version_problem(built: str, local: str, version_compatible: bool) -> str | None:
    """Why a plan built with TensorRT ``built`` cannot run on TensorRT ``local`` (None: it can).

    The rule, from the TensorRT developer guide's "Version Compatibility" (docs.nvidia.com/deeplearning/
    tensorrt/10.16.1/inference-library/version-compatibility.html; for 11.x .../11.1.0/inference-library/
    engine-compatibility.html) and the 11.4.1 support matrix ("Engine Portability"):

    * without the version-compatible flag a plan runs only on the release that built it (:func:`same_release`);
    * a version-compatible plan needs TensorRT >= 8.6 to build and to run it ("the plan must be built with a
      version at least 8.6 or higher, and the runtime must be 8.6 or higher");
    * within a major it runs on the same or any later release ("engines built with version compatibility
      enabled using TensorRT 11.0 will be compatible with TensorRT 11.1 and later 11.x versions"), never on
      an earlier one ("engines built with newer versions ... do not work with older runtimes");
    * across majors only the documented pairs: TensorRT 8 plans on 9 and 10 runtimes ("engines built with
      TensorRT 8 work with TensorRT 9 and TensorRT 10 runtimes"), 10 on 11 ("engines built with TensorRT 10
      work with TensorRT 11"); "No other combination across major versions is supported. For example, a
      TensorRT 8 engine cannot run with a TensorRT 11 runtime" (support matrix 11.4).
    """
    head = f"built with TensorRT {built}, this device has TensorRT {local}"
    if not version_compatible:
        if same_release(built, local):
            return None
        return (f"{head} (a plan built without --version-compatible runs only on the TensorRT release that built it: "
                "major.minor.patch.build equal)")
    b, v = _release(built), _release(local)
    if b[:2] < VC_MINIMUM or v[:2] < VC_MINIMUM:
        return f"{head} (version-compatible plans need TensorRT 8.6 or later to build and to run them)"
    if v[:3] < b[:3] or (v[:3] == b[:3] and len(v) > 3 and len(b) > 3 and v[3] < b[3]):
        return f"{head} (version-compatible plans run on the same or a later TensorRT release, never an earlier one)"
    if v[0] != b[0] and v[0] not in VC_LATER_MAJORS.get(b[0], ()):
        later = VC_LATER_MAJORS.get(b[0], ())
        allowed = f"TensorRT {b[0]} plans run on {b[0]}.x" + "".join(f" and {m}.x" for m in later)
        return (f"{head} (NVIDIA documents version-compatible plans across majors only from 8 to 9/10 and from 10 "
                f"to 11: {allowed} runtimes)")
    return None


def compatibility_problems(meta: dict[str, Any], local_version: str, gpu: GpuInfo) -> list[str]:
    """Why this plan cannot run here (empty when it can): TensorRT version rules, then the GPU."""
    problems: list[str] = []
    opts = meta.get("options") or {}
    why = version_problem(str(meta["tensorrt_version"]), local_version, bool(opts.get("version_compatible")))
    if why:
        problems.append(why)
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
