"""Turn a build request into the concrete, version-specific build steps.

:func:`plan_build` is pure (no TensorRT calls): it combines
:class:`~.options.BuildOptions`, the TensorRT :class:`~.features.TrtFeatures`
and the ONNX :class:`~.graph.GraphInfo` into a :class:`BuildPlan`. The builder
executes the plan through the Python API and :mod:`.trtexec` renders the same
plan as a command line, so both always agree. Every automatic choice is
recorded in ``decisions`` for the report; every unsupported request raises
OptionError naming the flag.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import OnnxCheckError, OptionError
from ._trt import parse_version
from .features import HARDWARE_COMPAT_ENUM, TrtFeatures
from .graph import GraphInfo
from .options import BuildOptions, ShapeRange
from .profiles import inputs_of_graph, resolve_profiles

CACHE_HEADER = re.compile(r"^TRT-(\d+)-(\w+)$")
#: The calibrator that replays a cache (ours and trtexec --calib's): the header must name it.
CACHE_CALIBRATOR = "EntropyCalibration2"


@dataclass
class BuildPlan:
    """What to set on the network/config for one TensorRT version."""

    tensorrt_version: str
    precision: str  # effective precision: fp32 | fp16 | int8 | fp16+int8
    strongly_typed: bool
    explicit_batch: bool
    builder_flags: list[str]  # BuilderFlag member names, in the order they are set
    quantization: str | None  # "explicit" (Q/DQ graph) | "implicit" (calibration cache) | None
    calibration_cache: Path | None
    profiles: dict[str, ShapeRange]
    workspace_bytes: int | None
    opt_level: int | None
    timing_cache: Path | None
    dla_core: int | None
    hardware_compat: str | None  # HardwareCompatibilityLevel member name, None = leave default
    version_compatible: bool
    decisions: list[str] = field(default_factory=list)
    #: weakly typed FP16 builds: BuilderFlag name pinning the graph's FP32 nodes (also in builder_flags)
    precision_constraints: str | None = None
    fp32_layers: tuple[str, ...] = ()  # ONNX nodes (= parser layer names) pinned to FP32
    parser_flags: list[str] = field(default_factory=list)  # OnnxParserFlag member names to set

    @property
    def precision_mode(self) -> str:
        """How the graph's precision is honoured, for the sidecar and the report."""
        if self.strongly_typed:
            return "strongly typed: every layer runs in the type the ONNX graph gives it"
        lower = "/".join(f for f in self.builder_flags if f in ("FP16", "INT8"))
        if self.precision_constraints:
            return (f"weakly typed, {self.precision_constraints}: {len(self.fp32_layers)} node(s) the graph keeps "
                    f"FP32 pinned to FP32, builder flags {lower} elsewhere")
        if lower:
            return f"weakly typed: builder flags {lower} let TensorRT choose lower-precision kernels per layer"
        return "weakly typed, FP32"

    def to_dict(self) -> dict[str, Any]:
        return {
            "tensorrt_version": self.tensorrt_version, "precision": self.precision,
            "strongly_typed": self.strongly_typed, "explicit_batch": self.explicit_batch,
            "builder_flags": list(self.builder_flags), "quantization": self.quantization,
            "calibration_cache": str(self.calibration_cache) if self.calibration_cache else None,
            "profiles": {k: r.to_dict() for k, r in self.profiles.items()},
            "workspace_bytes": self.workspace_bytes, "opt_level": self.opt_level,
            "timing_cache": str(self.timing_cache) if self.timing_cache else None,
            "dla_core": self.dla_core, "hardware_compat": self.hardware_compat,
            "version_compatible": self.version_compatible, "decisions": list(self.decisions),
            "precision_constraints": self.precision_constraints, "fp32_layers": list(self.fp32_layers),
            "parser_flags": list(self.parser_flags), "precision_mode": self.precision_mode,
        }


def _unsupported(flag: str, what: str, feats: TrtFeatures, fix: str) -> OptionError:
    return OptionError(f"{flag}: {what} is not available in TensorRT {feats.version}", fix=fix)


def _strong_typing(opts: BuildOptions, feats: TrtFeatures, graph: GraphInfo, decisions: list[str]) -> bool:
    """11: always. 10.x: on request, and by default for a graph that carries its precision (FP16 tensors or
    Q/DQ nodes) built as it is: weak typing may run the nodes the graph keeps FP32 in FP16 or ignore its
    casts. 8.6 has no strong typing (precision constraints pin the FP32 nodes instead, see _constraints)."""
    if feats.strongly_typed_only:
        if opts.strongly_typed is False:
            raise _unsupported("--strongly-typed", "a weakly typed network", feats,
                               "leave --strongly-typed out: TensorRT 11 builds every network strongly typed")
        decisions.append(f"strongly typed network: TensorRT {feats.version} has no weak typing, "
                         "so precision comes from the ONNX graph")
        return True
    if opts.strongly_typed:
        if not feats.strongly_typed_flag:
            raise _unsupported("--strongly-typed", "NetworkDefinitionCreationFlag.STRONGLY_TYPED", feats,
                               "leave --strongly-typed out and use --trt-precision (builder flags), or use TensorRT >= 10")
        return True
    carried = graph.has_fp16 or graph.has_qdq
    as_built = opts.precision in ("auto", graph.precision)
    if opts.strongly_typed is None and feats.strongly_typed_flag and carried and as_built:
        if opts.dla_core is not None:  # DLA on 10.x is built with the FP16/INT8 flags (trtexec --useDLACore --fp16)
            decisions.append("weakly typed network despite a graph that carries its precision: --dla-core on "
                             f"TensorRT {feats.version} builds with builder flags")
            return False
        decisions.append(f"strongly typed network (automatic on TensorRT {feats.version} for a graph that carries "
                         f"its precision, {graph.precision}): layers run in the graph's types, so the nodes it keeps "
                         "FP32 stay FP32; no FP16/INT8 builder flags")
        return True
    return False


def _constraints(opts: BuildOptions, feats: TrtFeatures, graph: GraphInfo, flags: list[str],
                 decisions: list[str]) -> tuple[str | None, tuple[str, ...]]:
    """Weakly typed FP16 build of a graph with FP32-kept nodes: pin them (8.6's answer to strong typing)."""
    if "FP16" not in flags or not graph.fp32_nodes:
        return None, ()
    n = len(graph.fp32_nodes)
    if opts.precision_constraints == "none" or not feats.precision_constraints:
        why = "precision_constraints none" if opts.precision_constraints == "none" else \
            f"TensorRT {feats.version} has no precision constraints"
        decisions.append(f"{n} node(s) the graph keeps FP32 are not pinned ({why}): TensorRT may run them in FP16")
        return None, ()
    flag = f"{opts.precision_constraints.upper()}_PRECISION_CONSTRAINTS"
    flags.append(flag)
    decisions.append(f"{flag}: the {n} node(s) the graph keeps FP32 (e.g. {', '.join(graph.fp32_nodes[:3])}) get "
                     "layer precision and output type FP32, since a weakly typed FP16 build may otherwise run them "
                     "in FP16")
    return flag, graph.fp32_nodes


def trt_version_number(version: str) -> int:
    """NV_TENSORRT_VERSION as written in calibration-cache headers: 8.6.2 -> 8602, 10.3.0 -> 100300
    (NvInferVersion.h: major*1000 + minor*100 + patch before 10, major*10000 + minor*100 + patch from 10)."""
    major, minor, patch = (parse_version(version) + (0, 0, 0))[:3]
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def cache_header(version: str) -> str:
    """The first line TensorRT ``version``'s entropy-2 calibrator accepts: ``TRT-8602-EntropyCalibration2``."""
    return f"TRT-{trt_version_number(version)}-{CACHE_CALIBRATOR}"


def retarget_cache(data: bytes, version: str) -> bytes:
    """``data`` with its header rewritten for TensorRT ``version``'s entropy-2 calibrator.

    TensorRT skips a cache whose header names another version or calibrator, and the build then
    fails with "no scaling factors" (or trtexec silently calibrates on random data). The scales
    themselves are version independent, so the replaying side stamps its own version.
    """
    first, nl, rest = data.partition(b"\n")
    if CACHE_HEADER.match(first.decode("ascii", "replace").strip()) is None:
        return data  # not a header we know: leave it for TensorRT to judge (plan_build checked the file)
    return cache_header(version).encode("ascii") + (nl or b"\n") + rest


def _check_calibration_cache(path: Path, feats: TrtFeatures, decisions: list[str]) -> None:
    """The cache must start with a ``TRT-<version>-<calibrator>`` header; the calibrator replays it with its
    header rewritten for this TensorRT (:func:`retarget_cache`), which is recorded when it differs."""
    with open(path, "rb") as f:
        first = f.readline(200).decode("ascii", "replace").strip()
    if CACHE_HEADER.match(first) is None:
        raise OptionError(f"--calib-cache {path}: not a TensorRT calibration cache (first line {first[:40]!r})",
                          fix="pass the cache written by the calibration stage (header TRT-<version>-EntropyCalibration2)")
    want = cache_header(feats.version)
    if first != want:
        decisions.append(f"calibration cache header {first} is replayed as {want} (TensorRT skips a cache whose "
                         f"header names another version or calibrator; the scales are the same)")


def _precision(opts: BuildOptions, feats: TrtFeatures, graph: GraphInfo, strong: bool,
               decisions: list[str]) -> tuple[str, list[str], str | None]:
    """Effective precision, BuilderFlags to set, quantization mode."""
    carried = graph.precision
    want = opts.precision
    if strong:
        if want == "auto":
            decisions.append(f"precision {carried}: taken from the graph (strongly typed)")
            return carried, [], "explicit" if graph.has_qdq else None
        if want != carried:
            fix = ("convert the ONNX first (the precision stage writes FP16 / Q/DQ INT8 graphs) and build that, "
                   "or pass --trt-precision auto")
            if not feats.strongly_typed_only:
                fix += ", or leave --strongly-typed out to use builder flags"
            raise OptionError(f"--trt-precision {want} needs a graph that carries {want}, but this ONNX is {carried} "
                              f"and a strongly typed TensorRT {feats.version} network takes precision from the graph",
                              fix=fix)
        return carried, [], "explicit" if graph.has_qdq else None
    # weakly typed (<= 10): builder flags allow lower precision kernels
    eff = carried if want == "auto" else want
    if want == "auto":
        decisions.append(f"precision {eff}: taken from the graph ({'Q/DQ nodes' if graph.has_qdq else 'tensor types'})")
    if graph.has_qdq and "int8" not in eff:
        raise OptionError(f"--trt-precision {want}: the graph has Q/DQ nodes, which need the INT8 builder flag",
                          fix="pass --trt-precision int8 (or fp16+int8 / auto), or build the FP32/FP16 ONNX instead")
    flags = [f for f, on in (("FP16", "fp16" in eff), ("INT8", "int8" in eff)) if on]
    if graph.has_fp16 and "fp16" not in eff:
        decisions.append("the graph carries FP16 tensors but --trt-precision has no fp16: "
                         "TensorRT may run those layers in FP32")
    quant = None
    if "int8" in eff:
        if graph.has_qdq:
            quant = "explicit"
            decisions.append("INT8 by explicit quantization (Q/DQ nodes in the graph); no calibrator")
        else:
            if opts.calibration_cache is None:
                raise OptionError(f"--trt-precision {want}: the graph has no Q/DQ nodes, so INT8 needs a calibration cache",
                                  fix="pass --calib-cache FILE, or build the Q/DQ ONNX from the precision stage")
            if not feats.int8_calibrator:
                raise _unsupported("--calib-cache", "implicit INT8 calibration (IInt8EntropyCalibrator2)", feats,
                                   "build the Q/DQ INT8 ONNX from the precision stage instead")
            quant = "implicit"
            _check_calibration_cache(opts.calibration_cache, feats, decisions)
            decisions.append(f"INT8 by implicit calibration from cache {opts.calibration_cache} "
                             "(calibrators are deprecated since TensorRT 10.1; prefer a Q/DQ graph)")
    return eff, flags, quant


def plan_build(options: BuildOptions, features: TrtFeatures, graph: GraphInfo) -> BuildPlan:
    """Validate ``options`` against ``features`` and ``graph``; return the steps for this version."""
    options.validate()
    decisions: list[str] = []
    if graph.int8_weight_dq and not features.int8_weight_initializers:
        nodes = ", ".join(graph.int8_weight_dq[:3]) + (" ..." if len(graph.int8_weight_dq) > 3 else "")
        raise OnnxCheckError(f"TensorRT {features.version}'s ONNX parser rejects INT8 weight initializers behind "
                             f"DequantizeLinear ('invalid weights type of Int8'; nodes {nodes})",
                             fix="build the INT8 variant with FP32 weights behind QuantizeLinear -> DequantizeLinear "
                                 "(the int8 default; leave the fold_weights option off), or target TensorRT >= 10 "
                                 "(--trt-version 10.3)", where=str(graph.path) if graph.path else None)
    strong = _strong_typing(options, features, graph, decisions)
    precision, flags, quant = _precision(options, features, graph, strong, decisions)
    constraint, fp32_layers = (None, ()) if strong else _constraints(options, features, graph, flags, decisions)
    if options.calibration_cache is not None and quant != "implicit":
        if quant != "explicit":
            why = "it has no implicit INT8 calibration" if not features.int8_calibrator \
                else f"precision {precision} does not use INT8"
            raise OptionError(f"--calib-cache given, but this TensorRT {features.version} build cannot use it ({why})",
                              fix="leave --calib-cache out, or pass --trt-precision int8 on TensorRT <= 10")
        decisions.append(f"calibration cache {options.calibration_cache} not used: the Q/DQ nodes carry the scales")
    profiles = resolve_profiles(inputs_of_graph(graph), options, decisions)
    if options.workspace_mib is not None and not features.memory_pool_limit:
        raise _unsupported("--workspace", "IBuilderConfig.set_memory_pool_limit", features, "leave --workspace out")
    if options.opt_level is not None and not features.builder_optimization_level:
        raise _unsupported("--opt-level", "builder_optimization_level", features, "leave --opt-level out")
    if options.timing_cache is not None and not features.timing_cache:
        raise _unsupported("--timing-cache", "the timing cache API", features, "leave --timing-cache out")
    if options.version_compatible:
        if not features.version_compatible:
            raise _unsupported("--version-compatible", "BuilderFlag.VERSION_COMPATIBLE", features,
                               "leave --version-compatible out and rebuild per TensorRT version")
        flags.append("VERSION_COMPATIBLE")
    hw = None
    if options.hardware_compat != "none":
        if not features.supports_hardware_compat(options.hardware_compat):
            have = ["none"] + [k for k, v in HARDWARE_COMPAT_ENUM.items() if v in features.hardware_compat_levels]
            raise _unsupported("--hardware-compat", f"level {options.hardware_compat!r}", features,
                               f"pass --hardware-compat one of {', '.join(have)}")
        hw = HARDWARE_COMPAT_ENUM[options.hardware_compat]
    parser_flags: list[str] = []
    if (options.version_compatible or hw) and features.native_instancenorm_flag \
            and not features.native_instancenorm_default:
        parser_flags.append("NATIVE_INSTANCENORM")  # trtexec 8.6 sets it for these builds too
        decisions.append("ONNX parser flag NATIVE_INSTANCENORM: a version/hardware-compatible plan cannot carry the "
                         f"InstanceNormalization plugin TensorRT {features.version} uses by default"
                         + (" (this graph has InstanceNormalization)" if graph.has_op("InstanceNormalization") else ""))
    if options.dla_core is not None:
        if not features.dla:
            raise _unsupported("--dla-core", "DLA (DeviceType.DLA)", features, "leave --dla-core out to build for the GPU")
        if precision == "fp32":
            raise OptionError("--dla-core: DLA runs FP16 or INT8 only, and this build is FP32",
                              fix="pass --trt-precision fp16 (or int8), or leave --dla-core out")
        if options.gpu_fallback:
            if not features.gpu_fallback:
                raise _unsupported("--gpu-fallback", "BuilderFlag.GPU_FALLBACK", features, "pass --no-gpu-fallback")
            flags.append("GPU_FALLBACK")
        else:
            decisions.append("DLA without GPU fallback: the build fails if a layer cannot run on DLA")
    explicit = features.explicit_batch_required
    if explicit:
        decisions.append(f"explicit-batch network (required before TensorRT 10; this is {features.version})")
    return BuildPlan(
        tensorrt_version=features.version, precision=precision, strongly_typed=strong, explicit_batch=explicit,
        builder_flags=flags, quantization=quant,
        calibration_cache=options.calibration_cache if quant == "implicit" else None,
        profiles=profiles,
        workspace_bytes=options.workspace_mib << 20 if options.workspace_mib is not None else None,
        opt_level=options.opt_level, timing_cache=options.timing_cache, dla_core=options.dla_core,
        hardware_compat=hw, version_compatible=options.version_compatible, decisions=decisions,
        precision_constraints=constraint, fp32_layers=fp32_layers, parser_flags=parser_flags,
    )
