"""The trtexec command equivalent to a Python-API build, per TensorRT version.

Rendered from the same :class:`~.plan.BuildPlan` the builder executes, so the
script next to every plan reproduces it on a device without Python. Flag
choices (checked against trtexec's sampleOptions.cpp help/parse code and
NVIDIA's migration guides):

* ``--explicitBatch`` only before 10 (8.6 accepts it as a no-op; 10 removed it).
* ``--stronglyTyped`` on 10.x strongly typed builds; omitted on 11, where strong
  typing is always on and the flag is no longer needed.
* ``--fp16`` / ``--int8`` / ``--calib=<cache>`` only on weakly typed builds
  (<= 10); 11 removed all precision flags and ``--calib``. The cache ``--calib``
  reads is ``<plan stem>.calib.cache`` beside the script, its header written for
  the script's TensorRT version and restamped from trtexec's own version
  (``[TensorRT v8602]``) when the script runs: trtexec's calibrator skips a cache
  whose header names another version and then calibrates on random data.
* ``--precisionConstraints=prefer|obey`` with ``--layerPrecisions`` and
  ``--layerOutputTypes`` (``NODE:fp32``) for the nodes the graph keeps FP32 on a
  weakly typed FP16 build.
* Shapes: ``scalar`` for a rank-0 shape only from 10.0 (8.6's parser has no such
  word and rank-0 inputs are static, so they are left out there).
* No parser-flag option: trtexec 8.6 sets NATIVE_INSTANCENORM itself for
  version/hardware-compatible builds (and 10.x by default), as the builder does.
* ``--memPoolSize=workspace:<N>`` with N in MiB and no unit suffix (8.6 reads
  MiB; 10.x defaults to 'M' when no suffix is given); not the old ``--workspace``.
* ``--builderOptimizationLevel=N``, ``--timingCacheFile=``, ``--useDLACore=N``
  with ``--allowGPUFallback``, ``--versionCompatible``,
  ``--hardwareCompatibilityLevel=ampere+|sameComputeCapability``.
"""
from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._io import atomic_path, write_text_atomic
from ._trt import parse_version
from .features import features_for_version
from .graph import GraphInfo, inspect_onnx
from .options import BuildOptions
from .plan import BuildPlan, plan_build, retarget_cache

TRTEXEC = "trtexec"
HW_COMPAT_VALUES = {"AMPERE_PLUS": "ampere+", "SAME_COMPUTE_CAPABILITY": "sameComputeCapability"}
FLAG_OF_BUILDER_FLAG = {"FP16": "--fp16", "INT8": "--int8", "VERSION_COMPATIBLE": "--versionCompatible",
                        "GPU_FALLBACK": "--allowGPUFallback"}

PathFn = Callable[[Any], str]


def _shapes(plan: BuildPlan, which: str) -> str:
    scalar = parse_version(plan.tensorrt_version)[0] >= 10  # 8.6 parses every shape as NxM...
    return ",".join(f"{name}:{'x'.join(str(d) for d in getattr(rng, which)) or 'scalar'}"
                    for name, rng in plan.profiles.items() if getattr(rng, which) or scalar)


def calib_cache_for(plan_path: Any) -> Path:
    """``out/model.plan`` -> ``out/model.calib.cache``: the per-target-version cache the script's --calib reads."""
    p = Path(plan_path)
    return p.with_name(p.stem + ".calib.cache")


def _layer_spec(plan: BuildPlan) -> str:
    """``a:fp32,b:fp32`` for --layerPrecisions/--layerOutputTypes (names with ',' or ':' cannot be written)."""
    return ",".join(f"{n}:fp32" for n in plan.fp32_layers if "," not in n and ":" not in n)


def trtexec_argv(onnx_path: Any, plan_path: Any, plan: BuildPlan, *, path: PathFn = str) -> list[str]:
    """argv for ``plan`` (already resolved for its TensorRT version)."""
    feats = features_for_version(plan.tensorrt_version)
    argv = [TRTEXEC, f"--onnx={path(onnx_path)}", f"--saveEngine={path(plan_path)}"]
    if plan.explicit_batch:
        argv.append("--explicitBatch")
    if plan.strongly_typed and not feats.strongly_typed_only:
        argv.append("--stronglyTyped")
    argv += [FLAG_OF_BUILDER_FLAG[f] for f in plan.builder_flags if f in ("FP16", "INT8")]
    if plan.precision_constraints:
        argv.append(f"--precisionConstraints={plan.precision_constraints.split('_')[0].lower()}")
        if _layer_spec(plan):
            argv += [f"--layerPrecisions={_layer_spec(plan)}", f"--layerOutputTypes={_layer_spec(plan)}"]
    if plan.quantization == "implicit" and plan.calibration_cache is not None:
        argv.append(f"--calib={path(calib_cache_for(plan_path))}")
    shapes = {w: _shapes(plan, w) for w in ("min", "opt", "max")}
    if shapes["min"]:
        argv += [f"--minShapes={shapes['min']}", f"--optShapes={shapes['opt']}", f"--maxShapes={shapes['max']}"]
    if plan.workspace_bytes is not None:
        argv.append(f"--memPoolSize=workspace:{plan.workspace_bytes >> 20}")
    if plan.opt_level is not None:
        argv.append(f"--builderOptimizationLevel={plan.opt_level}")
    if plan.timing_cache is not None:
        argv.append(f"--timingCacheFile={path(plan.timing_cache)}")
    if plan.dla_core is not None:
        argv.append(f"--useDLACore={plan.dla_core}")
        if "GPU_FALLBACK" in plan.builder_flags:
            argv.append("--allowGPUFallback")
    if "VERSION_COMPATIBLE" in plan.builder_flags:
        argv.append("--versionCompatible")
    if plan.hardware_compat is not None:
        argv.append(f"--hardwareCompatibilityLevel={HW_COMPAT_VALUES[plan.hardware_compat]}")
    return argv


def trtexec_command(onnx_path: str | os.PathLike[str], plan_path: str | os.PathLike[str], options: BuildOptions,
                    version: str, *, graph: GraphInfo | None = None) -> list[str]:
    """The trtexec argv that builds ``onnx_path`` like :func:`~.builder.build_engine` would on ``version``.

    Raises OptionError for requests that ``version`` cannot honour (same rules as the builder).
    """
    g = graph if graph is not None else inspect_onnx(onnx_path)
    plan = plan_build(options, features_for_version(version), g)
    return trtexec_argv(onnx_path, plan_path, plan)


def trtexec_shell(argv: list[str]) -> str:
    """The argv as one shell-quoted line."""
    return shlex.join(argv)


def script_path_for(plan_path: str | os.PathLike[str]) -> Path:
    """``out/model.plan`` -> ``out/model.trtexec.sh``."""
    p = Path(plan_path)
    return p.with_name(p.stem + ".trtexec.sh")


def _relative_to(base: Path) -> PathFn:
    def rel(p: Any) -> str:
        try:
            return os.path.relpath(Path(p).resolve(), base.resolve())
        except ValueError:  # other drive (Windows)
            return str(Path(p).resolve())
    return rel


def write_trtexec_script(onnx_path: str | os.PathLike[str], plan_path: str | os.PathLike[str], plan: BuildPlan,
                         *, script: str | os.PathLike[str] | None = None, tool_version: str = "") -> Path:
    """Write ``<plan stem>.trtexec.sh`` (paths relative to the script, so the folder can be copied)."""
    out = Path(script) if script is not None else script_path_for(plan_path)
    argv = trtexec_argv(onnx_path, plan_path, plan, path=_relative_to(out.parent))
    calib: list[str] = []
    if plan.quantization == "implicit" and plan.calibration_cache is not None:
        cache = calib_cache_for(plan_path)
        with open(plan.calibration_cache, "rb") as f:
            data = retarget_cache(f.read(), plan.tensorrt_version)
        with atomic_path(cache) as tmp:
            tmp.write_bytes(data)
        calib = [f"# {cache.name}: the calibration cache with its header for TensorRT {plan.tensorrt_version}; "
                 "restamped with this trtexec's version",
                 "# (TensorRT skips a cache whose header names another version, and trtexec then calibrates on "
                 "random data)",
                 f"calib={shlex.quote(_relative_to(out.parent)(cache))}",
                 "v=\"$(trtexec --help 2>&1 | grep -o '\\[TensorRT v[0-9]*\\]' | head -n 1 | tr -dc '0-9' || true)\"",
                 'if [ -n "$v" ]; then sed -i "1s/^TRT-[0-9]*-/TRT-$v-/" "$calib"; fi']
    lines = [
        "#!/usr/bin/env bash",
        (f"# Rebuild {Path(plan_path).name} from {Path(onnx_path).name} with trtexec for TensorRT "
         f"{plan.tensorrt_version} (precision {plan.precision}; {plan.precision_mode})."),
        f"# Generated by pela-export {tool_version}; equivalent to its Python-API build. Plans are specific to",
        "# the TensorRT version and GPU: run this on the target device.",
        *[f"# decision: {d}" for d in plan.decisions],
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        *calib,
        " \\\n  ".join(shlex.quote(a) for a in argv),
        "",
    ]
    write_text_atomic(out, "\n".join(lines))
    os.chmod(out, 0o755)
    return out
