"""Summary statistics of repeated timings.

Percentiles (not just the mean) are reported because edge deployments care
about tail latency; throughput is derived from the mean so it is comparable
across batch sizes.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import OptionError


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one (backend, batch, threads) setting; times in milliseconds.

    Percentiles use linear interpolation between closest ranks (numpy's
    default), so on 1..100 ms p50 is 50.5 ms and p90 is 90.1 ms.
    """

    n_runs: int
    batch: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    std_ms: float
    throughput: float | None  # samples per second = batch / mean seconds; None if mean is 0
    threads: int | None = None

    @classmethod
    def from_seconds(cls, seconds: Sequence[float], batch: int,
                     threads: int | None = None) -> LatencyStats:
        """Summarise per-run wall times given in seconds."""
        if batch < 1:
            raise OptionError(f"batch size must be >= 1, got {batch}", fix="pass a positive --batch-sizes value")
        if len(seconds) == 0:
            raise OptionError("no timed runs to summarise", fix="pass --runs with a positive value")
        arr = np.asarray(seconds, dtype=np.float64)
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise OptionError("timings must be finite and non-negative",
                              fix="re-run the benchmark; the clock returned invalid values")
        ms = arr * 1e3
        p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
        mean_s = float(arr.mean())
        throughput = float(batch / mean_s) if mean_s > 0 else None
        return cls(
            n_runs=int(arr.size), batch=int(batch), mean_ms=float(ms.mean()),
            p50_ms=p50, p90_ms=p90, p99_ms=p99,
            min_ms=float(ms.min()), max_ms=float(ms.max()), std_ms=float(ms.std()),
            throughput=throughput, threads=threads,
        )

    def with_threads(self, threads: int | None) -> LatencyStats:
        """Copy with the thread count the backend actually used."""
        return LatencyStats(**{**asdict(self), "threads": threads})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
