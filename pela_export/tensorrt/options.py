"""What the user asks of a TensorRT build, validated without TensorRT.

Value checks live here (each error names its CLI flag); version-dependent
choices (strong typing, flags, calibrator) are made in :mod:`.plan` against
:class:`~.features.TrtFeatures`, so asking for something the installed
TensorRT lacks is an error, never silently dropped.

Precision (``--trt-precision``; ``--precision`` is another option: which ONNX variants the
precision stage writes):

* ``auto``: whatever the ONNX graph carries (Q/DQ nodes -> INT8, FP16 casts or
  tensors -> FP16, else FP32), the default. The only meaning on TensorRT 11 (always
  strongly typed) and on 10.x with ``--strongly-typed``.
* ``fp32`` | ``fp16`` | ``int8`` | ``fp16+int8``: on weakly typed builds (<= 10)
  the builder flags FP16 / INT8; on strongly typed builds the graph must already
  carry that precision (checked, not assumed).
* INT8 with a Q/DQ graph is explicit quantization (INT8 flag, no calibrator);
  INT8 without Q/DQ needs ``--calib-cache`` (implicit calibration, <= 10 only).

Typing: a graph that carries its precision (FP16 tensors or Q/DQ nodes) is built
strongly typed on 10.x by default (``strongly_typed=None``), so TensorRT keeps the
graph's types; on 8.6 (no strong typing) the nodes the graph keeps FP32 are pinned
with ``precision_constraints`` (``prefer``, the default, or ``obey``).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import OptionError

PRECISIONS = ("auto", "fp32", "fp16", "int8", "fp16+int8")
#: How a weakly typed FP16 build pins the layers the graph keeps FP32 (BuilderFlag *_PRECISION_CONSTRAINTS).
PRECISION_CONSTRAINTS = ("prefer", "obey", "none")
HARDWARE_COMPAT = ("none", "ampere+", "same-compute-capability")
MAX_OPT_LEVEL = 5

#: The CLI flag each option is reported under.
FLAGS = {
    "precision": "--trt-precision", "strongly_typed": "--strongly-typed", "profiles": "--profile",
    "axes": "--profile",
    "max_batch": "--max-batch", "opt_batch": "--opt-batch", "workspace_mib": "--workspace",
    "opt_level": "--opt-level", "timing_cache": "--timing-cache", "calibration_cache": "--calib-cache",
    "dla_core": "--dla-core", "gpu_fallback": "--gpu-fallback", "version_compatible": "--version-compatible",
    "hardware_compat": "--hardware-compat", "bench_batches": "--batch-sizes",
    "precision_constraints": "--precision-constraints",
}

Shape = tuple[int, ...]


@dataclass(frozen=True)
class ShapeRange:
    """One input's optimisation-profile range (min <= opt <= max per dimension)."""

    min: Shape
    opt: Shape
    max: Shape

    def check(self, name: str, flag: str = "--profile") -> None:
        ranks = {len(self.min), len(self.opt), len(self.max)}
        if len(ranks) != 1:
            raise OptionError(f"profile for {name!r}: min/opt/max have different ranks "
                              f"({list(self.min)}, {list(self.opt)}, {list(self.max)})",
                              fix=f"pass {flag} {name}:MIN,OPT,MAX with shapes of equal rank, e.g. 1x3x224x224")
        for i, (lo, mid, hi) in enumerate(zip(self.min, self.opt, self.max, strict=True)):
            if lo > hi:
                raise OptionError(f"profile for {name!r}: min {list(self.min)} is larger than max {list(self.max)} "
                                  f"(dimension {i}: {lo} > {hi})",
                                  fix=f"write {flag} {name}:MIN,OPT,MAX with min <= opt <= max in every dimension")
            if lo < 0 or not lo <= mid <= hi:
                raise OptionError(f"profile for {name!r}: dimension {i} needs 0 <= min <= opt <= max, "
                                  f"got {lo}, {mid}, {hi}", fix=f"fix the shapes given to {flag}")

    def to_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ShapeRange:
        return cls(tuple(d["min"]), tuple(d["opt"]), tuple(d["max"]))


def parse_shape(text: str, flag: str = "--profile") -> Shape:
    """'8x3x224x224' -> (8, 3, 224, 224); 'scalar' -> ()."""
    t = text.strip()
    if t == "scalar":
        return ()
    if not re.fullmatch(r"\d+(x\d+)*", t):
        raise OptionError(f"{flag}: {text!r} is not a shape", fix=f"write shapes as NxCxHxW, e.g. {flag} input:1x3x224x224")
    return tuple(int(d) for d in t.split("x"))


def parse_profile(spec: str, flag: str = "--profile") -> tuple[str, ShapeRange]:
    """'input:1x3x224x224,8x3x224x224,32x3x224x224' -> ('input', ShapeRange); one shape = fixed."""
    name, sep, shapes = spec.rpartition(":")
    if not sep or not name:
        raise OptionError(f"{flag}: {spec!r} has no input name",
                          fix=f"write {flag} NAME:MIN,OPT,MAX, e.g. input:1x3x224x224,8x3x224x224,32x3x224x224")
    parts = [parse_shape(p, flag) for p in shapes.split(",")]
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3:
        raise OptionError(f"{flag}: {spec!r} gives {len(parts)} shapes", fix=f"give one shape or three (min,opt,max) to {flag}")
    rng = ShapeRange(*parts)
    rng.check(name, flag)
    return name, rng


def parse_profiles(specs: Iterable[str], flag: str = "--profile") -> dict[str, ShapeRange]:
    """Several ``--profile`` values (one input each) -> {input: ShapeRange}; duplicates are errors."""
    out: dict[str, ShapeRange] = {}
    for spec in specs:
        name, rng = parse_profile(spec, flag)
        if name in out:
            raise OptionError(f"{flag} given twice for input {name!r}", fix=f"pass one {flag} per input")
        out[name] = rng
    return out


@dataclass
class BuildOptions:
    """A TensorRT build request; ``None`` means "TensorRT's default" or "automatic"."""

    precision: str = "auto"
    strongly_typed: bool | None = None  # None: automatic (always on 11, off on <= 10)
    profiles: dict[str, ShapeRange] = field(default_factory=dict)
    #: default (min, opt, max) of named dynamic axes other than the batch, e.g. {"sequence": (1, 128, 512)};
    #: the pipeline fills it from the model's I/O description (see :mod:`.profiles`)
    axes: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    max_batch: int = 8  # default profile max for a dynamic batch axis
    opt_batch: int | None = None  # None: the batch the bench times most (see profiles.batch_opt), else 1
    #: the batch sizes the bench stage times (the pipeline fills it): the default profile's opt comes from them
    bench_batches: tuple[int, ...] = ()
    workspace_mib: int | None = None
    opt_level: int | None = None  # builder optimisation level 0-5 (TensorRT default 3)
    timing_cache: Path | None = None  # loaded if it exists, saved after the build
    calibration_cache: Path | None = None  # implicit INT8 (<= 10) without Q/DQ nodes
    dla_core: int | None = None
    gpu_fallback: bool = True  # with --dla-core: layers DLA cannot run go to the GPU
    version_compatible: bool = False
    hardware_compat: str = "none"
    #: weakly typed FP16 builds of a graph with FP32-kept nodes: prefer | obey | none (API only for now)
    precision_constraints: str = "prefer"

    def __post_init__(self) -> None:
        self.bench_batches = tuple(self.bench_batches)
        for name in ("timing_cache", "calibration_cache"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                setattr(self, name, Path(value))

    def validate(self) -> None:
        """Value checks that need no TensorRT; raises OptionError naming the flag."""
        if self.precision not in PRECISIONS:
            raise OptionError(f"unknown precision {self.precision!r}", fix=f"pass --trt-precision one of {', '.join(PRECISIONS)}")
        if self.strongly_typed not in (None, True, False):
            raise OptionError(f"strongly_typed must be True, False or None, got {self.strongly_typed!r}",
                              fix="pass --strongly-typed or leave it out (automatic)")
        for attr in ("max_batch", "opt_batch"):
            v = getattr(self, attr)
            if attr == "opt_batch" and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise OptionError(f"{FLAGS[attr]} must be a positive integer, got {v!r}", fix=f"pass {FLAGS[attr]} 1 or more")
        if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in self.bench_batches):
            raise OptionError(f"bench batch sizes must be positive integers, got {list(self.bench_batches)!r}",
                              fix="pass --batch-sizes with positive integers, e.g. 1,8")
        if self.precision_constraints not in PRECISION_CONSTRAINTS:
            raise OptionError(f"unknown precision constraints {self.precision_constraints!r}",
                              fix=f"use precision_constraints one of {', '.join(PRECISION_CONSTRAINTS)} "
                                  "(BuildOptions); the default prefer keeps the graph's FP32 nodes in FP32")
        if self.opt_batch is not None and self.opt_batch > self.max_batch:
            raise OptionError(f"--opt-batch {self.opt_batch} exceeds --max-batch {self.max_batch}",
                              fix="pass an --opt-batch no larger than --max-batch")
        for axis, sizes in self.axes.items():
            ok = (isinstance(sizes, (tuple, list)) and len(sizes) == 3
                  and all(isinstance(v, int) and not isinstance(v, bool) for v in sizes))
            if not ok or not 1 <= sizes[0] <= sizes[1] <= sizes[2]:
                raise OptionError(f"axis {axis!r} needs sizes 1 <= min <= opt <= max, got {sizes!r}",
                                  fix=f"pass --profile INPUT:MIN,OPT,MAX for an input with the {axis!r} axis")
        for name, rng in self.profiles.items():
            if not isinstance(rng, ShapeRange):
                raise OptionError(f"profile for {name!r} is not a ShapeRange", fix="build profiles with parse_profiles()")
            rng.check(name)
        w = self.workspace_mib
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
            raise OptionError(f"--workspace must be a positive number of MiB, got {w!r}", fix="pass --workspace 1024 (MiB)")
        lvl = self.opt_level
        if lvl is not None and (isinstance(lvl, bool) or not isinstance(lvl, int) or not 0 <= lvl <= MAX_OPT_LEVEL):
            raise OptionError(f"--opt-level must be 0-{MAX_OPT_LEVEL}, got {lvl!r}",
                              fix="pass --opt-level 3 (TensorRT's default; 5 searches longest)")
        if self.timing_cache is not None and self.timing_cache.is_dir():
            raise OptionError(f"--timing-cache {self.timing_cache} is a directory", fix="pass a file path, e.g. out/timing.cache")
        if self.calibration_cache is not None and not self.calibration_cache.is_file():
            raise OptionError(f"--calib-cache {self.calibration_cache} does not exist",
                              fix="pass the INT8 calibration cache file written by the calibration stage")
        d = self.dla_core
        if d is not None and (isinstance(d, bool) or not isinstance(d, int) or d < 0):
            raise OptionError(f"--dla-core must be a DLA index >= 0, got {d!r}", fix="pass --dla-core 0 (Orin has DLA 0 and 1)")
        if self.hardware_compat not in HARDWARE_COMPAT:
            raise OptionError(f"unknown hardware compatibility {self.hardware_compat!r}",
                              fix=f"pass --hardware-compat one of {', '.join(HARDWARE_COMPAT)}")
        if not isinstance(self.version_compatible, bool) or not isinstance(self.gpu_fallback, bool):
            raise OptionError("version_compatible and gpu_fallback must be True or False",
                              fix="pass --version-compatible or leave it out; --no-gpu-fallback turns GPU fallback off")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (sidecar, report); :meth:`from_dict` reverses it."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "profiles":
                v = {k: r.to_dict() for k, r in v.items()}
            elif f.name == "axes":
                v = {k: list(r) for k, r in v.items()}
            elif f.name == "bench_batches":
                v = list(v)
            elif isinstance(v, Path):
                v = str(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BuildOptions:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["profiles"] = {k: ShapeRange.from_dict(r) for k, r in (d.get("profiles") or {}).items()}
        kw["axes"] = {str(k): (int(r[0]), int(r[1]), int(r[2])) for k, r in (d.get("axes") or {}).items()}
        kw["bench_batches"] = tuple(int(b) for b in d.get("bench_batches") or ())
        for k in ("timing_cache", "calibration_cache"):
            if kw.get(k) is not None:
                kw[k] = Path(kw[k])
        return cls(**kw)
