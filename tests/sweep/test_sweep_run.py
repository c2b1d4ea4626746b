"""Running and resuming points with an injected runner: point.json reuse (no second call), the time budget,
the original waiting for a compressed point, failures listed, and stale files measured again."""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pela_export.errors import OptionError
from pela_export.sweep.grid import ORIGINAL, Grid, SweepPoint, expand
from pela_export.sweep.run import POINT_FILE, PointDeferred, point_dir, run_points

FINGERPRINT = {"spec": None, "threads": 1, "batch_sizes": (1,)}


class FakeRunner:
    """Counts calls; latency falls and score drops with k; the original needs a measured compressed point."""

    def __init__(self, fail: set[str] | None = None) -> None:
        self.calls: list[str] = []
        self.fail = fail or set()

    def __call__(self, point: SweepPoint, out: Path, done: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        if point.model == ORIGINAL and not any(r["point"]["model"] != ORIGINAL for r in done.values()):
            raise PointDeferred("no compressed point measured yet")
        self.calls.append(point.id)
        if point.id in self.fail:
            raise OptionError(f"{point.id} cannot run", fix="pass another --ratios")
        k = point.ratio or 1.0
        return {"latency_ms": 10.0 / k, "score": 99.0 - (k - 1), "params": int(1000 / k), "metric": "top-1 accuracy (%)"}


class Clock:
    """A clock that advances ``step`` seconds per reading (no wall-clock time in tests)."""

    def __init__(self, step: float) -> None:
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def _points() -> list[SweepPoint]:
    return expand(Grid(ratios=(2, 3, 4))).points


def test_points_run_once_then_resume_reuses_every_point_json(tmp_path: Path) -> None:
    runner = FakeRunner()
    first = run_points(_points(), tmp_path, runner, fingerprint=FINGERPRINT)
    assert sorted(runner.calls) == sorted(p.id for p in _points()) and first.reused == []
    saved = json.loads((point_dir(tmp_path, _points()[0]) / POINT_FILE).read_text())
    assert saved["flags"][:2] == ["--ratio", "2"] and saved["latency_ms"] == 5.0
    second_runner = FakeRunner()
    second = run_points(_points(), tmp_path, second_runner, fingerprint=FINGERPRINT)
    assert second_runner.calls == []
    assert second.reused == [p.id for p in _points()] and second.records == first.records


def test_resume_after_an_interruption_runs_only_the_missing_points(tmp_path: Path) -> None:
    run_points(_points(), tmp_path, FakeRunner(), fingerprint=FINGERPRINT)
    (point_dir(tmp_path, _points()[-1]) / POINT_FILE).unlink()  # as if the sweep stopped before the last point
    runner = FakeRunner()
    result = run_points(_points(), tmp_path, runner, fingerprint=FINGERPRINT)
    assert runner.calls == [_points()[-1].id] and result.measured == [_points()[-1].id]


def test_other_settings_or_a_corrupt_file_are_measured_again_and_said_so(tmp_path: Path) -> None:
    run_points(_points(), tmp_path, FakeRunner(), fingerprint=FINGERPRINT)
    (point_dir(tmp_path, _points()[0]) / POINT_FILE).write_text("{not json")
    runner = FakeRunner()
    result = run_points(_points(), tmp_path, runner, fingerprint={**FINGERPRINT, "threads": 2})
    assert sorted(runner.calls) == sorted(p.id for p in _points())
    whys = dict(result.stale)
    assert "unreadable" in whys[_points()[0].id] and "threads" in whys[_points()[2].id]


def test_budget_stops_starting_points_and_lists_those_not_run(tmp_path: Path) -> None:
    runner = FakeRunner()
    # each clock reading advances 40 s: start, then one reading per started point; budget 100 s
    result = run_points(_points(), tmp_path, runner, fingerprint=FINGERPRINT, budget_s=100.0, clock=Clock(40.0))
    assert runner.calls == ["k2-ratio-svd-fp32", "original-fp32"]
    assert [pid for pid, _ in result.not_run] == ["k3-ratio-svd-fp32", "k4-ratio-svd-fp32"]
    assert all("budget" in why for _, why in result.not_run)
    # reused points are free: a second run with a spent budget still reports them, and runs nothing new
    again = FakeRunner()
    later = run_points(_points(), tmp_path, again, fingerprint=FINGERPRINT, budget_s=0.0, clock=Clock(1.0))
    assert again.calls == [] and later.reused == ["k2-ratio-svd-fp32", "original-fp32"]


def test_original_waits_for_a_compressed_point_when_the_first_one_fails(tmp_path: Path) -> None:
    runner = FakeRunner(fail={"k2-ratio-svd-fp32"})
    result = run_points(_points(), tmp_path, runner, fingerprint=FINGERPRINT)
    assert runner.calls == ["k2-ratio-svd-fp32", "k3-ratio-svd-fp32", "original-fp32", "k4-ratio-svd-fp32"]
    assert [pid for pid, _ in result.failed] == ["k2-ratio-svd-fp32"] and "cannot run" in result.failed[0][1]
    assert not (point_dir(tmp_path, _points()[0]) / POINT_FILE).exists()  # a failure writes no point.json


def test_original_not_run_when_no_compressed_point_succeeds(tmp_path: Path) -> None:
    points = expand(Grid(ratios=(2,))).points
    result = run_points(points, tmp_path, FakeRunner(fail={"k2-ratio-svd-fp32"}), fingerprint=FINGERPRINT)
    assert result.records == {} and [pid for pid, _ in result.not_run] == ["original-fp32"]
