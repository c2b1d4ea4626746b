"""The sweep's final latencies: every measured point's ONNX timed again in one loop, all points called in turn.

Each point is timed when it is measured, minutes apart from the others; on a shared machine the absolute
p50 drifts between those moments by more than the differences the front is about (MiniLM on R8: the
original timed alone at 34.9 ms on a busy machine, 21.5 ms timed in turn with the other points). Timed in alternation, every point sees the same machine, so the front, the
ratios and the recommendation compare like with like. Each point's own timing stays in sweep.json
(``latency_ms_alone``). The timer is injected, so the bookkeeping is tested without ONNX Runtime.
"""
from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

#: ``timer({point id: onnx path}) -> {point id: [p50 ms of each round]}``.
Timer = Callable[[Mapping[str, Path]], Mapping[str, list[float]]]

#: Rounds of the final interleaved timing (``--timing-rounds``; 0 keeps each point's own timing).
DEFAULT_ROUNDS = 3


def retime(records: Mapping[str, Mapping[str, Any]], baseline: str | None,
           timer: Timer) -> dict[str, dict[str, Any]]:
    """``{point id: {"p50_ms", "ratio", "rounds_ms"}}`` for every point whose ONNX file exists; ``ratio`` is the
    median over rounds of the point's p50 over the baseline's p50 in the same round. Empty (nothing re-timed)
    when the baseline has no ONNX file or there is nothing to compare it with."""
    paths = {pid: Path(str(r["onnx"])) for pid, r in records.items() if r.get("onnx") and Path(str(r["onnx"])).is_file()}
    if baseline is None or baseline not in paths or len(paths) < 2:
        return {}
    rounds = timer(paths)
    base = rounds[baseline]
    out: dict[str, dict[str, Any]] = {}
    for pid in paths:
        p50s = list(rounds[pid])
        out[pid] = {"p50_ms": statistics.median(p50s),
                    "ratio": statistics.median(p / b for p, b in zip(p50s, base, strict=True)),
                    "rounds_ms": p50s}
    return out


def apply(records: Mapping[str, Mapping[str, Any]], timings: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The records with ``latency_ms``/``latency_ratio`` from the interleaved timing (the point's own p50 kept
    as ``latency_ms_alone``); a point not re-timed keeps its own timing and no ratio override."""
    out: dict[str, dict[str, Any]] = {}
    for pid, rec in records.items():
        t = timings.get(pid)
        out[pid] = dict(rec) if t is None else dict(rec) | {
            "latency_ms_alone": rec.get("latency_ms"), "latency_ms": t["p50_ms"], "latency_ratio": t["ratio"],
            "latency_rounds_ms": t["rounds_ms"]}
    return out


def ort_timer(example: Mapping[str, Any], *, warmup: int, runs: int, threads: int | None, rounds: int) -> Timer:
    """The real timer: ONNX Runtime CPU, every point called in turn (:func:`~..measure.latency.interleaved_p50_ms`)."""
    def timer(paths: Mapping[str, Path]) -> Mapping[str, list[float]]:
        from ..measure import interleaved_p50_ms

        return interleaved_p50_ms(paths, example, warmup, runs, threads, rounds)

    return timer
