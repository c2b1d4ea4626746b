"""Percentile and throughput math on known inputs."""
from __future__ import annotations

import pytest

from pela_export.measure import LatencyStats
from pela_export.errors import OptionError


def test_percentiles_on_1_to_100_ms() -> None:
    s = LatencyStats.from_seconds([i / 1000 for i in range(1, 101)], batch=1)
    assert s.n_runs == 100
    assert s.mean_ms == pytest.approx(50.5)
    assert s.p50_ms == pytest.approx(50.5)
    assert s.p90_ms == pytest.approx(90.1)
    assert s.p99_ms == pytest.approx(99.01)
    assert s.min_ms == pytest.approx(1.0)
    assert s.max_ms == pytest.approx(100.0)


def test_order_does_not_matter() -> None:
    a = LatencyStats.from_seconds([0.003, 0.001, 0.002], batch=1)
    b = LatencyStats.from_seconds([0.001, 0.002, 0.003], batch=1)
    assert a == b


def test_throughput_is_batch_over_mean_seconds() -> None:
    s = LatencyStats.from_seconds([0.010, 0.030], batch=8)  # mean 20 ms
    assert s.throughput == pytest.approx(8 / 0.020)
    assert s.batch == 8


def test_to_dict_is_json_ready_and_complete() -> None:
    d = LatencyStats.from_seconds([0.001] * 5, batch=2, threads=3).to_dict()
    for key in ("n_runs", "batch", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms", "max_ms",
                "throughput", "threads"):
        assert key in d
    assert d["threads"] == 3
    assert d["p99_ms"] == pytest.approx(1.0)


def test_with_threads_copies() -> None:
    s = LatencyStats.from_seconds([0.001], batch=1)
    assert s.with_threads(4).threads == 4 and s.threads is None


@pytest.mark.parametrize("seconds,batch", [([], 1), ([0.001], 0), ([float("nan")], 1), ([-0.1], 1)])
def test_bad_inputs_raise_option_error(seconds: list[float], batch: int) -> None:
    with pytest.raises(OptionError):
        LatencyStats.from_seconds(seconds, batch=batch)
