"""TensorRT calibration cache: the scales of the implicit-INT8 path (TensorRT <= 10).

Format (text, as written by TensorRT's calibrators)::

    TRT-8602-EntropyCalibration2
    input: 3c010a14
    /fc1/MatMul_output_0: 3d237c3a

The header is ``TRT-<NV_TENSORRT_VERSION>-<calibrator>``; the number is
``major*1000 + minor*100 + patch`` before TensorRT 10 and ``major*10000 +
minor*100 + patch`` from 10 on (NvInferVersion.h; real caches read
``TRT-8601-...`` and ``TRT-100300-...``). TensorRT skips a cache whose header
does not match its own version and the *reading* calibrator (NVIDIA/TensorRT#1378),
and the build then fails with "no scaling factors". The calibrator named is the one
that replays the cache, not how the scales were chosen: our cache-replaying
calibrator and ``trtexec --calib`` are both ``IInt8EntropyCalibrator2``, so every
cache says ``EntropyCalibration2`` whatever ``--calib-method`` computed (NVIDIA's
qdq-translator writes the same header). The version written here is a default
(``--trt-version``, else the installed TensorRT, else JetPack 6.0's 8.6.2): the
TensorRT builder rewrites it to the local version when replaying the cache, and
each trtexec script gets its own copy stamped for its target version. Each line
is an ONNX tensor name and the big-endian IEEE float32 bits of its scale
(``amax/127``). TensorRT 11 dropped implicit INT8: use the Q/DQ model there.
"""
from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pela_export._io import write_text_atomic
from pela_export.errors import ArtifactError, OptionError

DEFAULT_TRT_VERSION = "8.6.2"  # JetPack 6.0
#: The calibrator a written cache names: the one that reads it (ours and trtexec --calib's).
CALIBRATORS = ("EntropyCalibration2",)
#: Calibrator named in the header per scale method: always the reading one, whatever chose the scales
#: (a MinMaxCalibration header made our own build and trtexec skip the cache).
CALIBRATOR_BY_METHOD: dict[str, str] = {"entropy": "EntropyCalibration2", "max": "EntropyCalibration2",
                                        "percentile": "EntropyCalibration2"}
_HEADER = re.compile(r"^TRT-(\d+)-(\w+)$")


def trt_version_number(version: str) -> int:
    """``"8.6.2"`` -> 8602, ``"10.3.0"`` -> 100300 (NV_TENSORRT_VERSION of that release)."""
    parts = str(version).strip().split(".")
    try:
        major, minor, patch = (int(p) for p in [*parts, "0", "0"][:3])
    except ValueError:
        raise OptionError(f"TensorRT version {version!r} is not MAJOR.MINOR.PATCH",
                          fix=f"pass a version such as {DEFAULT_TRT_VERSION} or 10.3.0") from None
    if major >= 11:
        raise OptionError(f"TensorRT {version} has no implicit INT8 calibration, so no calibration cache",
                          fix="build the Q/DQ INT8 ONNX model (--precision int8) for TensorRT 11")
    if major < 7:
        raise OptionError(f"TensorRT {version} is not supported", fix="use TensorRT 8.6 or 10.x")
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def installed_trt_version() -> str | None:
    """The importable ``tensorrt`` package's version, or None."""
    try:
        import tensorrt  # type: ignore[import-not-found]
    except Exception:  # ImportError, or a broken CUDA install raising at import
        return None
    return str(getattr(tensorrt, "__version__", "")) or None


def format_scale(scale: float) -> str:
    """Big-endian float32 bits as 8 hex digits (``1.0`` -> ``3f800000``)."""
    return struct.pack(">f", float(scale)).hex()


def parse_scale(text: str) -> float:
    return struct.unpack(">f", bytes.fromhex(text.strip().zfill(8)))[0]


@dataclass
class CalibrationCache:
    """Header fields and per-tensor scales of one cache."""

    version_number: int
    calibrator: str
    scales: dict[str, float]

    @property
    def header(self) -> str:
        return f"TRT-{self.version_number}-{self.calibrator}"

    def for_version(self, trt_version: str) -> CalibrationCache:
        """The same scales with the header TensorRT ``trt_version``'s entropy-2 calibrator reads."""
        return CalibrationCache(trt_version_number(trt_version), CALIBRATORS[0], dict(self.scales))

    def to_text(self) -> str:
        lines = [self.header] + [f"{name}: {format_scale(s)}" for name, s in self.scales.items()]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str, where: str = "calibration cache") -> CalibrationCache:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        fix = "re-run the INT8 calibration to write a new cache"
        m = _HEADER.match(lines[0].strip()) if lines else None
        if m is None:
            raise ArtifactError(f"first line {lines[0][:60] if lines else ''!r} is not a TRT-<version>-<calibrator> "
                                "header", where=where, fix=fix)
        scales: dict[str, float] = {}
        for n, line in enumerate(lines[1:], start=2):
            name, sep, value = line.rpartition(":")
            try:
                if not sep or not name.strip():
                    raise ValueError("no 'name: hex'")
                scales[name.strip()] = parse_scale(value)
            except ValueError as exc:
                raise ArtifactError(f"line {n} {line[:80]!r} is not 'tensor: hexscale' ({exc})",
                                    where=where, fix=fix) from None
        return cls(int(m.group(1)), m.group(2), scales)


def make_cache(scales: Mapping[str, float], *, trt_version: str | None = None,
               calibrator: str = "EntropyCalibration2") -> CalibrationCache:
    """A cache for ``trt_version`` (default: installed tensorrt, else JetPack 6.0's 8.6.2)."""
    if calibrator not in CALIBRATORS:
        raise OptionError(f"calibrator {calibrator!r}: a written cache names the calibrator that reads it, and "
                          "TensorRT's cache replay and trtexec --calib read EntropyCalibration2 caches",
                          fix=f"leave the calibrator option out (or pass {CALIBRATORS[0]}); --calib-method "
                              "chooses the scales whatever the header says")
    version = trt_version or _default_version()
    bad = [n for n in scales if not n or "\n" in n]
    if bad:
        raise OptionError(f"tensor names {bad[:3]!r} cannot be written to a calibration cache",
                          fix="rename the tensors in the ONNX model")
    return CalibrationCache(trt_version_number(version), calibrator, {n: float(s) for n, s in scales.items()})


def _default_version() -> str:
    found = installed_trt_version()
    return found if found and not found.startswith(("11.", "12.")) else DEFAULT_TRT_VERSION


def write_cache(path: str | Path, scales: Mapping[str, float], *, trt_version: str | None = None,
                calibrator: str = "EntropyCalibration2") -> CalibrationCache:
    """Write ``scales`` (tensor name -> INT8 scale) as a TensorRT calibration cache, atomically."""
    cache = make_cache(scales, trt_version=trt_version, calibrator=calibrator)
    write_text_atomic(path, cache.to_text())
    return cache


def read_cache(path: str | Path) -> CalibrationCache:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArtifactError("calibration cache not found", where=str(p),
                            fix="pass the .calib.cache written next to the INT8 model") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"cannot read calibration cache ({exc})", where=str(p),
                            fix="re-run the INT8 calibration to write a new cache") from None
    return CalibrationCache.parse(text, where=str(p))
