"""Apply a :class:`~.plan.BuildPlan` to TensorRT builder objects.

Every TensorRT name used here is guarded by the plan, which
:func:`~.plan.plan_build` only fills with features the installed version has,
so e.g. ``BuilderFlag.FP16`` is never touched on 11 and ``EXPLICIT_BATCH``
never from 10 on (the contract tests run this against each version's API).
"""
from __future__ import annotations

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


def network_flags(trt: ModuleType, plan: BuildPlan) -> int:
    """Bit mask for ``Builder.create_network``."""
    flags = 0
    if plan.explicit_batch:  # only planned before 10.0 (deprecated and ignored in 10, gone in 11)
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if plan.strongly_typed:  # required on 10.x; accepted and ignored on 11 (always strongly typed)
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return flags


def _timing_cache(trt: ModuleType, config: Any, plan: BuildPlan, out: Configured) -> None:
    path = plan.timing_cache
    assert path is not None  # caller checked
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
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


def serialized_timing_cache(config: Any) -> bytes | None:
    """The builder's timing cache after a build, to save for the next one."""
    cache = config.get_timing_cache()
    if cache is None:
        return None
    return bytes(memoryview(cache.serialize()))
