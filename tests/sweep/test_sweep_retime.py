"""The sweep's final interleaved timing: ratios are per-round medians against the baseline of the same round,
points without an ONNX file keep their own timing, and nothing is re-timed without a baseline to compare with."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pela_export.sweep.retime import apply, retime


def _records(tmp_path: Path, ids: list[str], missing: tuple[str, ...] = ()) -> dict[str, dict[str, object]]:
    out = {}
    for pid in ids:
        path = tmp_path / f"{pid}.onnx"
        if pid not in missing:
            path.write_bytes(b"onnx")
        out[pid] = {"onnx": str(path), "latency_ms": 100.0}
    return out


def test_ratio_is_the_median_of_per_round_ratios(tmp_path: Path) -> None:
    rounds = {"orig": [10.0, 20.0, 12.0], "k2": [6.0, 11.0, 7.2]}  # ratios 0.6, 0.55, 0.6
    seen: list[Mapping[str, Path]] = []

    def timer(paths: Mapping[str, Path]) -> Mapping[str, list[float]]:
        seen.append(paths)
        return rounds

    got = retime(_records(tmp_path, ["orig", "k2"]), "orig", timer)
    assert set(seen[0]) == {"orig", "k2"}
    assert got["k2"]["ratio"] == 0.6 and got["k2"]["p50_ms"] == 7.2 and got["orig"]["ratio"] == 1.0
    assert got["k2"]["rounds_ms"] == [6.0, 11.0, 7.2]


def test_points_without_onnx_keep_their_own_timing(tmp_path: Path) -> None:
    records = _records(tmp_path, ["orig", "k2", "k3"], missing=("k3",))
    timings = retime(records, "orig", lambda paths: {pid: [5.0] for pid in paths})
    assert set(timings) == {"orig", "k2"}
    applied = apply(records, timings)
    assert applied["k2"]["latency_ms"] == 5.0 and applied["k2"]["latency_ms_alone"] == 100.0
    assert applied["k3"] == records["k3"]


def test_nothing_retimed_without_a_baseline_or_a_second_point(tmp_path: Path) -> None:
    def timer(paths: Mapping[str, Path]) -> Mapping[str, list[float]]:
        raise AssertionError("must not time")

    assert retime(_records(tmp_path, ["k2", "k3"]), None, timer) == {}
    assert retime(_records(tmp_path, ["orig", "k2"], missing=("orig",)), "orig", timer) == {}
    assert retime(_records(tmp_path, ["orig"]), "orig", timer) == {}
