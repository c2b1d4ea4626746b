"""Build a TensorRT plan from an ONNX file, version-aware, with a build record.

Steps: plan the build (pure, :mod:`.plan`), create builder/network/parser
(parser flags from the plan), parse (every parser error reported with node name
and operator), pin the layers the graph keeps FP32 on weakly typed FP16 builds,
configure (:mod:`.configure`), build the serialized network, then write
atomically the raw plan (no header: trtexec and other tools must load it), the
JSON sidecar (:mod:`.sidecar`, with how the graph's precision was honoured) and
the equivalent trtexec script (:mod:`.trtexec`).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

from .. import __version__ as TOOL_VERSION
from .._io import atomic_path, sha256_file
from ..errors import OnnxCheckError
from ._trt import load_tensorrt, version_of
from .callbacks import shared_logger
from .configure import configure, network_flags, pin_fp32_layers, serialized_timing_cache
from .device import GpuInfo, gpu_info
from .errors import TensorRTError
from .features import TrtFeatures, detect_features
from .graph import GraphInfo, inspect_onnx
from .options import BuildOptions
from .parse_check import check_onnx_for_trt, errors_of
from .plan import BuildPlan, plan_build
from .sidecar import sidecar_path, write_sidecar
from .trtexec import script_path_for, trtexec_argv, trtexec_shell, write_trtexec_script

LogFn = Callable[[str], None]


@dataclass
class EngineRecord:
    """What :func:`build_engine` wrote and decided (for the report and the runner)."""

    plan_path: Path
    sidecar_path: Path
    trtexec_script: Path
    tensorrt_version: str
    precision: str
    strongly_typed: bool
    plan_sha256: str
    plan_bytes: int
    decisions: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    precision_mode: str = ""  # BuildPlan.precision_mode: strongly typed / precision constraints / builder flags

    def to_dict(self) -> dict[str, Any]:
        return {"plan": str(self.plan_path), "sidecar": str(self.sidecar_path),
                "trtexec_script": str(self.trtexec_script), "tensorrt_version": self.tensorrt_version,
                "precision": self.precision, "strongly_typed": self.strongly_typed,
                "precision_mode": self.precision_mode,
                "plan_sha256": self.plan_sha256, "plan_bytes": self.plan_bytes, "decisions": list(self.decisions)}


def parser_errors(parser: Any, features: TrtFeatures, graph: GraphInfo) -> list[str]:
    """Every parser error as 'node NAME (OP): description [CODE]'.

    10.x+ exposes ``node_name()``/``node_operator()``; 8.6 only the node index,
    which is mapped back to the ONNX graph's node list.
    """
    lines = []
    for i in range(int(parser.num_errors)):
        err = parser.get_error(i)
        name: str | None = None
        op: str | None = None
        if features.parser_error_node_name:
            name, op = str(err.node_name()) or None, str(err.node_operator()) or None
        else:
            node = graph.node_at(int(err.node()))
            if node is not None:
                name, op = node.name or f"#{err.node()}", node.op_type
        where = f"node {name or '?'} ({op or '?'})" if (name or op) else "graph"
        lines.append(f"{where}: {err.desc()} [{err.code()}]")
    return lines


def _parse(parser: Any, onnx_path: Path, features: TrtFeatures, graph: GraphInfo) -> None:
    ok = parser.parse_from_file(str(onnx_path)) if features.parse_from_file \
        else parser.parse(onnx_path.read_bytes(), str(onnx_path))
    if ok:
        return
    details = parser_errors(parser, features, graph)
    static = [str(f) for f in errors_of(check_onnx_for_trt(onnx_path, features.version))]
    raise TensorRTError(
        f"TensorRT {features.version}'s ONNX parser rejected the graph ({len(details)} error(s))",
        details=details + [f"static check: {s}" for s in static],
        fix="replace or re-export the listed nodes (try another --opset, --simplifier, or a newer TensorRT); "
            "`check_onnx_for_trt` lists every op TensorRT cannot parse",
        where=str(onnx_path))


def build_engine(onnx_path: str | os.PathLike[str], out_plan: str | os.PathLike[str], options: BuildOptions,
                 *, trt: ModuleType | None = None, log: LogFn | None = None, gpu: GpuInfo | None = None,
                 rebuild_command: str | None = None) -> EngineRecord:
    """Build ``onnx_path`` into ``out_plan`` with the installed (or given) TensorRT.

    ``gpu`` overrides GPU detection (tests); ``rebuild_command`` (the exact
    ``pela-export build ...`` line) is stored so a mismatch error can quote it.
    """
    say = log or (lambda _msg: None)
    onnx_path, out_plan = Path(onnx_path), Path(out_plan)
    options.validate()
    if not onnx_path.is_file():
        raise OnnxCheckError("ONNX file not found", fix="run the export stage first, or pass an existing .onnx file",
                             where=str(onnx_path))
    trt = load_tensorrt(trt)
    features = detect_features(trt)
    graph = inspect_onnx(onnx_path)
    plan = plan_build(options, features, graph)
    for d in plan.decisions:
        say(f"decision: {d}")
    logger = shared_logger(trt, log)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, plan))
    parser = trt.OnnxParser(network, logger)
    for flag in plan.parser_flags:
        parser.set_flag(getattr(trt.OnnxParserFlag, flag))
    _parse(parser, onnx_path, features, graph)
    pinned = pin_fp32_layers(trt, network, plan)
    config = builder.create_builder_config()
    configured = configure(trt, builder, config, plan)
    for d in pinned + configured.decisions:
        plan.decisions.append(d)
        say(f"decision: {d}")
    for w in configured.warnings:
        say(f"warning: {w}")
    say(f"building TensorRT {features.version} engine ({plan.precision}, {plan.precision_mode}); "
        "this can take minutes")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTError(f"TensorRT {features.version} could not build the engine",
                            details=logger.errors or ["TensorRT logged no error; re-run with verbose logging"],
                            fix="see the messages above; try a larger --workspace, another --trt-precision, "
                                "or leave --dla-core out", where=str(onnx_path))
    with atomic_path(out_plan) as tmp:
        tmp.write_bytes(memoryview(serialized))
    if plan.timing_cache is not None:
        cache = serialized_timing_cache(config)
        if cache:
            with atomic_path(plan.timing_cache) as tmp:
                tmp.write_bytes(cache)
    return _record(onnx_path, out_plan, options, plan, trt, gpu or gpu_info(), rebuild_command)


def _record(onnx_path: Path, out_plan: Path, options: BuildOptions, plan: BuildPlan, trt: ModuleType,
            gpu: GpuInfo, rebuild_command: str | None) -> EngineRecord:
    script = write_trtexec_script(onnx_path, out_plan, plan, script=script_path_for(out_plan), tool_version=TOOL_VERSION)
    plan_sha = sha256_file(out_plan)
    size = out_plan.stat().st_size
    meta: dict[str, Any] = {
        "tensorrt_version": version_of(trt),
        "gpu": gpu.to_dict(),
        "precision": plan.precision,
        "requested_precision": options.precision,
        "strongly_typed": plan.strongly_typed,
        "precision_mode": plan.precision_mode,
        "quantization": plan.quantization,
        "profiles": {k: r.to_dict() for k, r in plan.profiles.items()},
        "options": options.to_dict(),
        "build_plan": plan.to_dict(),
        "decisions": list(plan.decisions),
        "onnx": {"path": os.path.relpath(onnx_path.resolve(), out_plan.parent.resolve()),
                 "sha256": sha256_file(onnx_path)},
        "plan": {"file": out_plan.name, "sha256": plan_sha, "bytes": size},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tool": {"name": "pela-export", "version": TOOL_VERSION},
        "trtexec": {"script": script.name, "command": trtexec_shell(trtexec_argv(onnx_path, out_plan, plan))},
        "rebuild_command": rebuild_command,
    }
    sc = write_sidecar(out_plan, meta)
    return EngineRecord(plan_path=out_plan, sidecar_path=sc, trtexec_script=script,
                        tensorrt_version=meta["tensorrt_version"], precision=plan.precision,
                        strongly_typed=plan.strongly_typed, plan_sha256=plan_sha, plan_bytes=size,
                        decisions=list(plan.decisions), metadata=meta, precision_mode=plan.precision_mode)


__all__ = ["EngineRecord", "build_engine", "parser_errors", "sidecar_path"]
