"""What the installed TensorRT Python API offers: the one place version differences live.

:func:`detect_features` asks the loaded module (presence of names, so it also
works for point releases we never saw); :func:`features_for_version` gives the
same answer from a version string alone, for planning without TensorRT (the
trtexec script, reports). A contract test checks that both agree on every
manifest in ``tests/fixtures/trt-api`` (8.6.1, 10.3.0, 10.13.3, 10.16, 11.1).

Sources for the version thresholds: the API manifests (names per tag of
NVIDIA/TensorRT) and NVIDIA's migration guides: EXPLICIT_BATCH is ignored from
10.0 and absent in 11; 11.x removed BuilderFlag.FP16/INT8/... and the INT8
calibrators ("strongly typed networks are now required"); STRONGLY_TYPED is
accepted but ignored in 11.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

from ._trt import parse_version, version_of

#: HardwareCompatibilityLevel member for each ``--hardware-compat`` value.
HARDWARE_COMPAT_ENUM = {"ampere+": "AMPERE_PLUS", "same-compute-capability": "SAME_COMPUTE_CAPABILITY"}


@dataclass(frozen=True)
class TrtFeatures:
    """Capabilities of one TensorRT Python API, by presence of names."""

    version: str
    explicit_batch_flag: bool  # NetworkDefinitionCreationFlag.EXPLICIT_BATCH exists
    explicit_batch_required: bool  # ... and must be set (before 10.0; ignored from 10.0)
    strongly_typed_flag: bool  # NetworkDefinitionCreationFlag.STRONGLY_TYPED exists
    weak_typing: bool  # BuilderFlag.FP16 and BuilderFlag.INT8 exist (gone in 11)
    int8_calibrator: bool  # IInt8EntropyCalibrator2 + IBuilderConfig.int8_calibrator (gone in 11)
    calibration_profile: bool  # IBuilderConfig.set_calibration_profile
    version_compatible: bool  # BuilderFlag.VERSION_COMPATIBLE
    hardware_compat_levels: tuple[str, ...]  # HardwareCompatibilityLevel members, if settable
    builder_optimization_level: bool
    dla: bool  # DeviceType.DLA + IBuilderConfig.DLA_core/default_device_type
    gpu_fallback: bool  # BuilderFlag.GPU_FALLBACK
    timing_cache: bool  # create_timing_cache / set_timing_cache / get_timing_cache + ITimingCache.serialize
    memory_pool_limit: bool  # IBuilderConfig.set_memory_pool_limit + MemoryPoolType.WORKSPACE
    parser_error_node_name: bool  # ParserError.node_name / node_operator (else only node() index)
    parse_from_file: bool
    engine_host_code_allowed: bool  # Runtime.engine_host_code_allowed (version-compatible plans)
    #: BuilderFlag.PREFER/OBEY_PRECISION_CONSTRAINTS + ILayer.precision/set_output_type (gone in 11)
    precision_constraints: bool = False
    #: OnnxParserFlag.NATIVE_INSTANCENORM + OnnxParser.set_flag (on by default from 10.0)
    native_instancenorm_flag: bool = False
    native_instancenorm_default: bool = False
    #: the ONNX parser takes INT8 weight initializers behind DequantizeLinear (from 10.0; 8.x:
    #: "invalid weights type of Int8")
    int8_weight_initializers: bool = False

    @property
    def major(self) -> int:
        return parse_version(self.version)[0]

    @property
    def strongly_typed_only(self) -> bool:
        """No weak typing: the network is strongly typed and precision comes from the graph."""
        return not self.weak_typing

    def supports_hardware_compat(self, value: str) -> bool:
        return value == "none" or HARDWARE_COMPAT_ENUM.get(value, "") in self.hardware_compat_levels

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _has(obj: Any, *names: str) -> bool:
    try:
        return all(hasattr(obj, n) for n in names)
    except Exception:  # noqa: BLE001 - a strict fake or odd binding may raise something else
        return False


def _get(mod: ModuleType, name: str) -> Any:
    return getattr(mod, name) if _has(mod, name) else None


def detect_features(trt: ModuleType) -> TrtFeatures:
    """Capabilities of a loaded ``tensorrt`` module (real or fake), by presence checks only."""
    version = version_of(trt)
    ndf = _get(trt, "NetworkDefinitionCreationFlag")
    flag = _get(trt, "BuilderFlag")
    cfg = _get(trt, "IBuilderConfig")
    hcl = _get(trt, "HardwareCompatibilityLevel")
    device = _get(trt, "DeviceType")
    pool = _get(trt, "MemoryPoolType")
    perr = _get(trt, "ParserError")
    parser = _get(trt, "OnnxParser")
    runtime = _get(trt, "Runtime")
    timing = _get(trt, "ITimingCache")
    layer = _get(trt, "ILayer")
    major = parse_version(version)[0]
    explicit = _has(ndf, "EXPLICIT_BATCH")
    levels: tuple[str, ...] = ()
    if hcl is not None and _has(cfg, "hardware_compatibility_level"):
        levels = tuple(n for n in ("NONE", "AMPERE_PLUS", "SAME_COMPUTE_CAPABILITY") if _has(hcl, n))
    return TrtFeatures(
        version=version,
        explicit_batch_flag=explicit,
        explicit_batch_required=explicit and major < 10,
        strongly_typed_flag=_has(ndf, "STRONGLY_TYPED"),
        weak_typing=_has(flag, "FP16", "INT8"),
        int8_calibrator=_has(trt, "IInt8EntropyCalibrator2") and _has(cfg, "int8_calibrator"),
        calibration_profile=_has(cfg, "set_calibration_profile"),
        version_compatible=_has(flag, "VERSION_COMPATIBLE"),
        hardware_compat_levels=levels,
        builder_optimization_level=_has(cfg, "builder_optimization_level"),
        dla=_has(device, "DLA") and _has(cfg, "DLA_core", "default_device_type"),
        gpu_fallback=_has(flag, "GPU_FALLBACK"),
        timing_cache=_has(cfg, "create_timing_cache", "set_timing_cache", "get_timing_cache")
        and _has(timing, "serialize"),
        memory_pool_limit=_has(cfg, "set_memory_pool_limit") and _has(pool, "WORKSPACE"),
        parser_error_node_name=_has(perr, "node_name", "node_operator"),
        parse_from_file=_has(parser, "parse_from_file"),
        engine_host_code_allowed=_has(runtime, "engine_host_code_allowed"),
        precision_constraints=_has(flag, "PREFER_PRECISION_CONSTRAINTS", "OBEY_PRECISION_CONSTRAINTS")
        and _has(layer, "precision", "set_output_type"),
        native_instancenorm_flag=_has(_get(trt, "OnnxParserFlag"), "NATIVE_INSTANCENORM") and _has(parser, "set_flag"),
        native_instancenorm_default=major >= 10,
        int8_weight_initializers=major >= 10,
    )


def features_for_version(version: str) -> TrtFeatures:
    """The same capabilities from a version string alone (no TensorRT needed).

    Thresholds are the first manifest version that shows a name (or the last that
    still has it); where a name may have appeared between two manifests the later
    one is used, so planning for an unseen point release errs towards "absent".
    """
    v = parse_version(version)
    v2 = (v + (0, 0))[:2]
    levels: list[str] = ["NONE", "AMPERE_PLUS"] if v2 >= (8, 6) else []
    if v2 >= (10, 13):
        levels.append("SAME_COMPUTE_CAPABILITY")
    pre11 = v2 < (11, 0)
    return TrtFeatures(
        version=str(version),
        explicit_batch_flag=pre11,
        explicit_batch_required=v2 < (10, 0),
        strongly_typed_flag=v2 >= (10, 0),
        weak_typing=pre11,
        int8_calibrator=pre11,
        calibration_profile=pre11,
        version_compatible=v2 >= (8, 6),
        hardware_compat_levels=tuple(levels),
        builder_optimization_level=v2 >= (8, 6),
        dla=True,
        gpu_fallback=True,
        timing_cache=True,
        memory_pool_limit=v2 >= (8, 4),
        parser_error_node_name=v2 >= (10, 0),
        parse_from_file=True,
        engine_host_code_allowed=v2 >= (8, 6),
        precision_constraints=pre11 and v2 >= (8, 2),
        native_instancenorm_flag=v2 >= (8, 6),
        native_instancenorm_default=v2 >= (10, 0),
        int8_weight_initializers=v2 >= (10, 0),
    )
