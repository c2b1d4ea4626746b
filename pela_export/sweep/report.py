"""The sweep's table, front and recommendation (``sweep.json`` + ``sweep.md``). Pure apart from reading
which options the latency rank policy declares, when one is registered.

The recommendation answers "the fastest model that loses at most D points": for each allowance it is
the fastest front point whose score is within D of the original FP32 model's, with the flags that
reproduce it. Every number comes from a point.json; nothing is interpolated.
"""
from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from .grid import ORIGINAL
from .pareto import pareto_front

#: Accuracy-drop allowances of the recommendation, in points (percentage points of the score).
ALLOWANCES: tuple[float, ...] = (0.5, 1.0, 2.0)
SWEEP_SCHEMA = 1
LATENCY_POLICY = "latency"


def baseline_of(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The original model at FP32 (else at any precision): the reference every drop is measured from."""
    originals = [r for r in rows if r["model"] == ORIGINAL and r.get("score") is not None]
    fp32 = [r for r in originals if r["precision"] == "fp32"]
    return (fp32 or originals or [None])[0]


def table_rows(records: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per measured point (run order), with ``on_front`` and ``drop`` filled in."""
    rows = [{"id": pid, "model": r["point"]["model"], "precision": r["point"]["precision"],
             "policy": r["point"].get("policy"), "method": r["point"].get("method"),
             "options": r["point"].get("options") or {}, "params": r.get("params"), "flops": r.get("flops"),
             "onnx_bytes": r.get("onnx_bytes"), "latency_ms": r.get("latency_ms"),
             "latency_ms_alone": r.get("latency_ms_alone"), "latency_ratio": r.get("latency_ratio"), "metric": r.get("metric"),
             "score": r.get("score"), "flags": list(r.get("flags") or []), "dir": f"points/{pid}"}
            for pid, r in records.items()]
    front = set(pareto_front([(r["latency_ms"], r["score"]) for r in rows]))
    base = baseline_of(rows)
    for i, row in enumerate(rows):
        row["on_front"] = i in front
        row["drop"] = None if base is None or row["score"] is None else round(base["score"] - row["score"], 6)
        if row["latency_ratio"] is None:  # else measured in the same rounds as the baseline (retime.py)
            row["latency_ratio"] = (None if base is None or not base.get("latency_ms") or row["latency_ms"] is None
                                    else row["latency_ms"] / base["latency_ms"])
    return rows


def latency_policy_options() -> frozenset[str] | None:
    """The options the ``latency`` rank policy reads, when one is registered (None otherwise)."""
    from ..lowrank import RANK_ALLOCATORS

    spec = RANK_ALLOCATORS.find(LATENCY_POLICY)
    return None if spec is None else frozenset(spec.options)


def _flag(option: str) -> str:
    from ..options import flag_of
    from ..pipeline.compress_options import CompressOptions

    try:
        return flag_of(CompressOptions, option)
    except KeyError:
        return "--" + option.replace("_", "-")


def policy_hint(allowance: float, latency_ratio: float | None, options: frozenset[str] | None) -> str | None:
    """``--rank-policy latency --latency-budget F``: the latency policy aimed at the front point's measured
    latency ratio (None without that policy). Never ``--max-drop D``: it is in the policy's loss-proxy units
    (calibration-loss increase or SVD weight error), not the accuracy points ``allowance`` is in."""
    if options is None:
        return None
    parts = []
    if "latency_budget" in options and latency_ratio is not None:
        parts.append(f"{_flag('latency_budget')} {latency_ratio:.2f}")
    return " or ".join(f"--rank-policy {LATENCY_POLICY} {part}" for part in parts) if parts else None


def recommend(rows: Sequence[Mapping[str, Any]], allowances: Sequence[float] = ALLOWANCES,
              latency_options: frozenset[str] | None = None) -> list[dict[str, Any]]:
    """Per allowance D: the fastest front point whose drop from the baseline is at most D points."""
    out: list[dict[str, Any]] = []
    for allowance in allowances:
        within = [r for r in rows if r["on_front"] and r["drop"] is not None and r["drop"] <= allowance + 1e-9]
        if not within:
            out.append({"max_drop": allowance, "id": None,
                        "why": "no measured original to compare with" if all(r["drop"] is None for r in rows)
                        else f"no point within {allowance:g} points"})
            continue
        best = min(within, key=lambda r: (r["latency_ms"], -r["score"]))
        out.append({"max_drop": allowance, "id": best["id"], "latency_ms": best["latency_ms"],
                    "latency_ratio": best["latency_ratio"], "score": best["score"], "drop": best["drop"],
                    "params": best["params"], "flags": best["flags"],
                    "latency_policy": policy_hint(allowance, best["latency_ratio"], latency_options),
                    "why": "the original itself: no compressed point on the front is within this drop and faster"
                    if best["model"] == ORIGINAL else None})
    return out


def summarize(records: Mapping[str, Mapping[str, Any]], *, model: str, settings: Mapping[str, Any],
              skipped: Sequence[tuple[str, str]] = (), failed: Sequence[tuple[str, str]] = (),
              not_run: Sequence[tuple[str, str]] = (), reused: Sequence[str] = (), choices: Sequence[str] = (),
              latency_options: frozenset[str] | None = None) -> dict[str, Any]:
    """``sweep.json``'s content."""
    rows = table_rows(records)
    metrics = sorted({r["metric"] for r in rows if r["metric"]})
    base = baseline_of(rows)
    return {"schema": SWEEP_SCHEMA, "model": model, "metric": metrics[0] if len(metrics) == 1 else metrics,
            "baseline": None if base is None else base["id"], "settings": dict(settings), "points": rows,
            "front": [r["id"] for r in sorted((r for r in rows if r["on_front"]), key=lambda r: r["latency_ms"])],
            "recommendations": recommend(rows, ALLOWANCES, latency_options),
            "skipped": [{"what": w, "why": y} for w, y in skipped], "failed": [{"id": i, "why": y} for i, y in failed],
            "not_run": [{"id": i, "why": y} for i, y in not_run], "reused": list(reused),
            "automatic_choices": list(choices), "chart": None}


def _num(x: float | None, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def run_model(settings: Mapping[str, Any]) -> list[str]:
    """The model argument of ``pela-export run`` for this sweep: its spec as given, none for the embedded default
    (an older sweep.json without ``spec`` keeps the ``MODEL`` placeholder)."""
    if "spec" not in settings:
        return ["MODEL"]
    return [] if settings["spec"] is None else [shlex.quote(str(settings["spec"]))]


def markdown(summary: Mapping[str, Any]) -> str:
    """``sweep.md``: the chart, the recommendation, the table of all points (front marked) and what was left out."""
    s = summary["settings"]
    timing = s.get("timing") or {}
    how = (f"median over {timing['rounds']} rounds of the p50 of {s.get('runs')} calls per point, every point's ONNX "
           "called in turn (so all see the same machine); \"vs original\": the median of the per-round ratios. "
           "Each point's p50 timed alone when it was measured is `latency_ms_alone` in sweep.json"
           if timing.get("interleaved") else f"{s.get('runs')} runs after {s.get('warmup')} warm-up, each point timed "
           "alone when it was measured" + (f" ({timing['why']})" if timing.get("why") else ""))
    lines = [f"# Sweep: {summary['model']}", "",
             f"Latency: ONNX Runtime CPU p50 at batch 1, {s.get('threads') or 'all'} thread(s): {how}. Score: {summary['metric']} on {s.get('data') or 'the model’s data'}, "
             "against the original FP32 model. Front: no other point is at least as fast and as accurate and "
             "better in one.", ""]
    env = summary.get("environment")
    if isinstance(env, Mapping):
        lines += [f"Measured {env.get('date')} with pela-export {env.get('pela_export')}, ONNX Runtime "
                  f"{env.get('onnxruntime')}, torch {env.get('torch')}, on {env.get('usable_cpus')} usable CPU(s) "
                  f"({env.get('platform')}).", ""]
    if summary.get("chart"):
        lines += [f"![latency vs score]({summary['chart']})", ""]
    elif summary.get("chart_skipped"):
        lines += [f"_Chart skipped: {_md(summary['chart_skipped'])}._", ""]
    lines += ["## Recommendation", "", "| allowed drop | point | p50 (ms) | latency vs original | score | drop | reproduce |",
              "|---:|---|---:|---:|---:|---:|---|"]
    for rec in summary["recommendations"]:
        if rec["id"] is None:
            lines.append(f"| {rec['max_drop']:g} | – | | | | | {_md(rec['why'])} |")
            continue
        how = f"`{' '.join(['pela-export', 'run', *run_model(s), *rec['flags']])}`"
        if rec.get("latency_policy"):
            how += "; or aim the latency policy at it: " + " or ".join(
                f"`{h}`" for h in rec["latency_policy"].split(" or "))
        if rec.get("why"):
            how = f"{rec['why']}"
        lines.append(f"| {rec['max_drop']:g} | {rec['id']} | {rec['latency_ms']:.3f} | {_num(rec['latency_ratio'], '.3f')} "
                     f"| {rec['score']:.2f} | {rec['drop']:.2f} | {how} |")
    lines += ["", "## All points", "", "| point | front | precision | policy | method | options | params | MFLOPs "
              "| ONNX MB | p50 (ms) | vs original | score | drop |",
              "|---|:---:|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in summary["points"]:
        opts = ", ".join(f"{k}={v:g}" for k, v in r["options"].items()) or "–"
        lines.append(f"| {r['id']} | {'●' if r['on_front'] else ''} | {r['precision']} | {r['policy'] or '–'} "
                     f"| {r['method'] or '–'} | {opts} | {_num(r['params'], ',d')} "
                     f"| {_num(None if r['flops'] is None else r['flops'] / 1e6, '.2f')} "
                     f"| {_num(None if r['onnx_bytes'] is None else r['onnx_bytes'] / 1e6, '.2f')} "
                     f"| {_num(r['latency_ms'], '.3f')} | {_num(r['latency_ratio'], '.3f')} | {_num(r['score'], '.2f')} "
                     f"| {_num(r['drop'], '.2f')} |")
    left = ([f"- skipped {_md(x['what'])}: {_md(x['why'])}" for x in summary["skipped"]]
            + [f"- failed {x['id']}: {_md(x['why'])}" for x in summary["failed"]]
            + [f"- not run {x['id']}: {_md(x['why'])}" for x in summary["not_run"]])
    if left:
        lines += ["", "## Not measured", "", *left]
    if summary["reused"]:
        lines += ["", f"Reused from an earlier sweep into this directory: {', '.join(summary['reused'])}."]
    if summary["automatic_choices"]:
        lines += ["", "## Automatic choices", "", *[f"- {_md(c)}" for c in summary["automatic_choices"]]]
    lines += ["", "Each point is a run directory (`points/<point>/`). To time one on the device: `pela-export run "
              f"{' '.join([*run_model(s), 'FLAGS'])} --out points/<point> --skip compress --skip export` adds its report and bundle (reusing the "
              "saved compression and ONNX), `pela-export device-bench BUNDLE` times it there, and `pela-export report "
              "points/<point> DEVICE_REPORT` merges the device numbers.", ""]
    return "\n".join(lines)
