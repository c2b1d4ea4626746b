"""Python implementations of TensorRT callback interfaces (logger, INT8 calibrator).

They subclass the classes of the *given* module, so they are created per call
(TensorRT is imported lazily, or a fake is injected). Only methods listed as
Python-overridable in the API manifests are overridden.
"""
from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from ._trt import version_of

LogFn = Callable[[str], None]

#: ILogger.Severity member -> our level name, most severe first.
SEVERITIES = ("INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE")


#: One logger per tensorrt module for the whole process: TensorRT keeps the first logger it sees
#: as its global logger, so a per-build Python logger that is later garbage-collected would dangle.
_LOGGERS: dict[int, Any] = {}


def shared_logger(trt: ModuleType, log: LogFn | None = None, *, forward: str = "WARNING") -> Any:
    """The process-wide ``ILogger`` for ``trt``, reset for a new build/run.

    It keeps errors (``build_serialized_network`` just returns None on failure; the
    reason is only in the log) and forwards ``forward``-or-worse messages to ``log``.
    """
    logger = _LOGGERS.get(id(trt))
    if logger is None or logger.trt_module is not trt:
        logger = _make_logger(trt)
        _LOGGERS[id(trt)] = logger
    logger.reset(log, SEVERITIES.index(forward))
    return logger


def _make_logger(trt: ModuleType) -> Any:
    sev_enum = trt.ILogger.Severity
    names = {getattr(sev_enum, n): n for n in SEVERITIES if hasattr(sev_enum, n)}

    class CapturingLogger(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.trt_module = trt
            self.errors: list[str] = []
            self.warnings: list[str] = []
            self.sink: LogFn | None = None
            self.limit = SEVERITIES.index("WARNING")

        def reset(self, sink: LogFn | None, limit: int) -> None:
            self.errors, self.warnings, self.sink, self.limit = [], [], sink, limit

        def log(self, severity: Any, msg: str) -> None:
            name = names.get(severity, "INFO")
            if name in ("INTERNAL_ERROR", "ERROR"):
                self.errors.append(str(msg))
            elif name == "WARNING":
                self.warnings.append(str(msg))
            if self.sink is not None and SEVERITIES.index(name) <= self.limit:
                self.sink(f"TensorRT {name.lower()}: {msg}")

    return CapturingLogger()


def make_cache_calibrator(trt: ModuleType, cache: bytes) -> Any:
    """An ``IInt8EntropyCalibrator2`` that only replays a calibration cache.

    ``get_batch`` returns None (no data): TensorRT then takes every scale from
    ``read_calibration_cache``, whose header is first rewritten to
    ``TRT-<this TensorRT>-EntropyCalibration2`` (TensorRT skips a cache whose header
    names another version or calibrator, then fails with "no scaling factors";
    the scales do not depend on either). Used for implicit INT8 on TensorRT <= 10;
    11 has no calibrators (explicit Q/DQ only).
    """
    from .plan import retarget_cache

    data = retarget_cache(bytes(cache), version_of(trt))

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._cache = data

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> None:
            return None

        def read_calibration_cache(self) -> bytes:
            return self._cache

        def write_calibration_cache(self, cache: Any) -> None:
            return None

    return CacheCalibrator()


#: Methods the two callbacks override, per interface (contract-tested against python_overridable).
OVERRIDDEN = {
    "ILogger": ("log",),
    "IInt8EntropyCalibrator2": ("get_batch", "get_batch_size", "read_calibration_cache", "write_calibration_cache"),
}
