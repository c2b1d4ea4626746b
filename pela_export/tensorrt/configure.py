"""Apply a :class:`~.plan.BuildPlan` to TensorRT builder objects.

Every TensorRT name used here is guarded by the plan, which
:func:`~.plan.plan_build` only fills with features the installed version has,
so e.g. ``BuilderFlag.FP16`` is never touched on 11 and ``EXPLICIT_BATCH``
never from 10 on (the contract tests run this against each version's API).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from ..errors import OptionError
from .callbacks import make_cache_calibrator
from .plan import BuildPlan

LogFn = Callable[[str], None]


@dataclass
class Configured:
    """Objects TensorRT holds by reference during the build (keep them alive) and notes."""

    calibrator: Any = None
    timing_cache: Any = None
    profile: Any = None
    decisions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def network_flags(trt: ModuleType, plan: BuildPlan) -> int:
    """Bit mask for ``Builder.create_network``."""
    flags = 0
    if plan.explicit_batch:  # only planned before 10.0 (deprecated and ignored in 10, gone in 11)
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if plan.strongly_typed:  # required on 10.x; accepted and ignored on 11 (always strongly typed)
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return flags


def _timing_cache(trt: ModuleType, config: Any, plan: BuildPlan, out: Configured) -> None:
    """Load the cache file, or start an empty cache; never let a bad file stop the build.

    ``create_timing_cache`` returns None for a blob it rejects (corrupt, or another TensorRT's), and
    ``set_timing_cache(None, ...)`` raises TypeError, so a rejected blob falls back to
    ``create_timing_cache(b"")`` with a warning, as Polygraphy's CreateConfig does.
    """
    path = plan.timing_cache
    assert path is not None  # caller checked
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is None:
        if data:
            out.warnings.append(f"timing cache {path} ({len(data)} bytes) was rejected by TensorRT "
                                f"{plan.tensorrt_version} (corrupt or from another version); starting a fresh one")
            out.decisions.append(f"timing cache {path} rejected by TensorRT; a fresh one is written after the build")
        data = b""
        cache = config.create_timing_cache(b"")
    if not config.set_timing_cache(cache, False) and data:
        out.decisions.append(f"timing cache {path} was made by another TensorRT/GPU; starting a new one")
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    elif data:
        out.decisions.append(f"timing cache loaded from {path} ({len(data)} bytes)")
    out.timing_cache = cache


def configure(trt: ModuleType, builder: Any, config: Any, plan: BuildPlan) -> Configured:
    """Set flags, memory, profiles, optimisation level, compatibility, DLA and caches."""
    out = Configured()
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if plan.workspace_bytes is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    if plan.profiles:
        profile = builder.create_optimization_profile()
        for name, rng in plan.profiles.items():
            profile.set_shape(name, rng.min, rng.opt, rng.max)
        config.add_optimization_profile(profile)
        out.profile = profile
    if plan.opt_level is not None:
        config.builder_optimization_level = plan.opt_level
    if plan.hardware_compat is not None:
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, plan.hardware_compat)
    if plan.dla_core is not None:
        available = int(builder.num_DLA_cores)
        if plan.dla_core >= available:
            raise OptionError(f"--dla-core {plan.dla_core}: this device has {available} DLA core(s)",
                              fix="leave --dla-core out to build for the GPU" if available == 0
                              else f"pass --dla-core 0..{available - 1}")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = plan.dla_core
    if plan.quantization == "implicit":
        assert plan.calibration_cache is not None  # plan_build guarantees it
        out.calibrator = make_cache_calibrator(trt, plan.calibration_cache.read_bytes())
        config.int8_calibrator = out.calibrator
        if out.profile is not None and hasattr(config, "set_calibration_profile"):
            config.set_calibration_profile(out.profile)
    if plan.timing_cache is not None:
        _timing_cache(trt, config, plan, out)
    return out


_ONNX_LAYER = re.compile(r"^\[ONNX Layer: (.+?)(?: \| .*)?\]$", re.DOTALL)


def _node_of(layer: Any, wanted: set[str]) -> str | None:
    """The ONNX node a parsed layer comes from, if it is one of ``wanted``.

    onnx-tensorrt (8.6+) stores ``[ONNX Layer: NODE | doc]`` as every layer's metadata, including the
    extra layers of one node (named ``NODE_<n>``); without metadata the layer's own name is used.
    """
    m = _ONNX_LAYER.match(str(layer.metadata or ""))
    name = m.group(1) if m else str(layer.name)
    return name if name in wanted else None


def pin_fp32_layers(trt: ModuleType, network: Any, plan: BuildPlan) -> list[str]:
    """Layer precision and float output types FP32 for the nodes the graph keeps FP32 (after parsing).

    Only planned for weakly typed FP16 builds (with PREFER/OBEY_PRECISION_CONSTRAINTS set); layers
    reading a shape tensor are skipped, as trtexec's ``--layerPrecisions`` does. Returns decisions.
    """
    if not plan.fp32_layers:
        return []
    wanted = set(plan.fp32_layers)
    fp32 = trt.DataType.FLOAT
    floats = (trt.DataType.FLOAT, trt.DataType.HALF)
    found: set[str] = set()
    layers = 0
    for i in range(int(network.num_layers)):
        layer = network.get_layer(i)
        node = _node_of(layer, wanted)
        if node is None:
            continue
        first = layer.get_input(0) if int(layer.num_inputs) else None
        if first is not None and first.is_shape_tensor:
            continue
        layer.precision = fp32
        for j in range(int(layer.num_outputs)):
            if layer.get_output(j).dtype in floats:
                layer.set_output_type(j, fp32)
        found.add(node)
        layers += 1
    missing = sorted(wanted - found)
    note = f"; not found among the parsed layers: {', '.join(missing[:5])}" if missing else ""
    return [f"{layers} layer(s) of {len(found)} node(s) kept FP32 by the graph pinned to FP32 "
            f"({plan.precision_constraints}){note}"]


def serialized_timing_cache(config: Any) -> bytes | None:
    """The builder's timing cache after a build, to save for the next one."""
    cache = config.get_timing_cache()
    if cache is None:
        return None
    return bytes(memoryview(cache.serialize()))
