"""``sweep.png``: latency against score, marker area ∝ parameters, the Pareto front joined by a line.

Drawn with matplotlib's object API on the Agg canvas (as the report's charts), 900×600 px at 100 dpi, written
atomically. Only measured points are drawn.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._io import atomic_path
from .grid import ORIGINAL

WIDTH_IN, HEIGHT_IN, DPI = 9.0, 6.0, 100
MARKERS = {ORIGINAL: "*", "compressed": "o"}
MIN_AREA, MAX_AREA = 30.0, 600.0


def draw(summary: Mapping[str, Any], path: Path) -> Path:
    """Write the chart of ``summary`` (sweep.json's content) to ``path``; DependencyError without matplotlib."""
    from ..report.charts import load_matplotlib, precision_color

    figure_cls, canvas_cls = load_matplotlib()
    fig = figure_cls(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, layout="constrained")
    canvas_cls(fig)
    ax = fig.add_subplot(1, 1, 1)
    rows = [r for r in summary["points"] if r["latency_ms"] is not None and r["score"] is not None]
    biggest = max((float(r["params"] or 0) for r in rows), default=0.0) or 1.0
    for precision in dict.fromkeys(r["precision"] for r in rows):
        for model, marker in MARKERS.items():
            group = [r for r in rows if r["precision"] == precision and r["model"] == model]
            if not group:
                continue
            ax.scatter([r["latency_ms"] for r in group], [r["score"] for r in group],
                       s=[MIN_AREA + (MAX_AREA - MIN_AREA) * float(r["params"] or 0) / biggest for r in group],
                       marker=marker, color=precision_color(precision), alpha=0.75, edgecolors="black",
                       linewidths=0.6, label=f"{model} {precision}")
    front = sorted((r for r in rows if r["on_front"]), key=lambda r: r["latency_ms"])
    if front:
        ax.plot([r["latency_ms"] for r in front], [r["score"] for r in front], color="black", linewidth=1.0,
                linestyle="--", label="Pareto front", zorder=0)
    for r in rows:
        ax.annotate(r["id"], (r["latency_ms"], r["score"]), textcoords="offset points", xytext=(6, 4), fontsize=7)
    s = summary["settings"]
    ax.set_xlabel(f"latency p50 (ms), ONNX Runtime CPU, batch 1, {s.get('threads') or 'all'} thread(s)")
    ax.set_ylabel(str(summary["metric"]))
    ax.set_title(f"{summary['model']}: latency vs score (marker area ∝ parameters)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right", markerscale=0.6)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path
