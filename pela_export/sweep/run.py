"""Run or resume the points of a sweep, each into ``OUT/points/<point-id>/`` with its ``point.json``.

A point whose ``point.json`` exists and was measured with the same settings (the fingerprint) is
reused, so an interrupted sweep continues where it stopped. Points that do not fit the time budget
are not started and listed; a point that fails with a user-fixable error is listed with the reason
and the sweep goes on. The runner is injected, so resume and budget logic are tested without models.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import write_json_atomic
from ..errors import PelaExportError
from .grid import SweepPoint

POINTS_DIR = "points"
POINT_FILE = "point.json"
POINT_SCHEMA = 1

#: ``runner(point, point_dir, measured_so_far)`` → the point's measurements (written as point.json).
PointRunner = Callable[[SweepPoint, Path, Mapping[str, Mapping[str, Any]]], dict[str, Any]]


class PointDeferred(Exception):
    """The point needs another point measured first (the original is measured from a compressed point's export)."""


@dataclass
class SweepRun:
    """What happened to every point: measured now, reused from disk, failed (reason), not run (reason)."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # id → point.json content, in run order
    measured: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    not_run: list[tuple[str, str]] = field(default_factory=list)
    stale: list[tuple[str, str]] = field(default_factory=list)  # point.json found but not reusable (why)


def point_dir(out: Path, point: SweepPoint) -> Path:
    return out / POINTS_DIR / point.id


def plain(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples → lists), so fingerprints compare equal after a round trip."""
    return json.loads(json.dumps(obj, default=str))


def load_point(path: Path, point: SweepPoint, fingerprint: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """(the saved record when it can be reused, else None and why not; (None, None) when there is none)."""
    if not path.is_file():
        return None, None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, f"{path} is unreadable ({exc}): measured again"
    if not isinstance(record, dict) or record.get("schema") != POINT_SCHEMA:
        return None, f"{path} has another schema: measured again"
    if record.get("point") != plain(point.to_dict()):
        return None, f"{path} describes another point: measured again"
    if record.get("fingerprint") != plain(fingerprint):
        changed = sorted(k for k in set(fingerprint) | set(record.get("fingerprint") or {})
                         if plain(fingerprint).get(k) != (record.get("fingerprint") or {}).get(k))
        return None, f"{path} was measured with other settings ({', '.join(changed)}): measured again"
    return record, None


def run_points(points: Sequence[SweepPoint], out: Path, runner: PointRunner, *, fingerprint: Mapping[str, Any],
               budget_s: float | None = None, clock: Callable[[], float] = time.monotonic,
               log: Callable[[str], None] = lambda _msg: None, extra_flags: Sequence[str] = ()) -> SweepRun:
    """Reuse or run every point in order; stop starting new ones once ``budget_s`` has passed.

    Reused points cost nothing and are taken even after the budget is spent. A runner raising
    :class:`PointDeferred` is retried after the next point that has not been deferred. ``extra_flags``
    follow each point's own in the flags that reproduce it (the training flags of ``--train-top`` points).
    """
    result = SweepRun()
    start = clock()
    queue = list(points)
    deferred: set[str] = set()
    while queue:
        point = queue.pop(0)
        pdir = point_dir(out, point)
        saved, why = load_point(pdir / POINT_FILE, point, fingerprint)
        if why:
            result.stale.append((point.id, why))
            log(why)
        if saved is not None:
            result.records[point.id] = saved
            result.reused.append(point.id)
            log(f"sweep: {point.id} reused from {pdir / POINT_FILE}")
            continue
        elapsed = clock() - start
        if budget_s is not None and elapsed >= budget_s:
            result.not_run.append((point.id, f"time budget spent ({elapsed / 60:.1f} of {budget_s / 60:g} min) "
                                             "before it started"))
            continue
        log(f"sweep: measuring {point.id} ({len(result.records) + 1} of {len(points)})")
        try:
            measured = runner(point, pdir, dict(result.records))
        except PointDeferred as exc:
            waiting = [i for i, p in enumerate(queue) if p.id not in deferred]
            if waiting:
                deferred.add(point.id)
                queue.insert(waiting[0] + 1, point)
            else:
                result.not_run.append((point.id, str(exc)))
            continue
        except PelaExportError as exc:
            result.failed.append((point.id, str(exc)))
            log(f"sweep: {point.id} failed: {exc}")
            continue
        record = {"schema": POINT_SCHEMA, "point": plain(point.to_dict()), "fingerprint": plain(fingerprint),
                  "flags": point.flags() + list(extra_flags), **plain(measured)}
        write_json_atomic(pdir / POINT_FILE, record)
        result.records[point.id] = record
        result.measured.append(point.id)
    return result
