"""PNG charts for report.md: parameters vs accuracy vs latency per variant,
per-layer ranks, and the latency distribution.

matplotlib is optional: it is imported only here, only when charts are drawn,
and through its object API (``Figure`` + the Agg canvas, never pyplot) so no
GUI backend or global figure state is touched. Without it the report is still
written and says how to get the charts. Only measured numbers are plotted: a
variant without a latency is shown against parameters instead, never estimated.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._io import atomic_path, ensure_writable_dir
from ..errors import DependencyError
from ..measure.shapes import shape_label
from ..precision.spec import find_spec, precision_order
from .variants import MODELS, pick_batch, variant_rows

DPI = 100
CHARTS_DIR = "charts"
INSTALL_HINT = "pip install matplotlib"
#: name → title; each chart is written to ``<name>.png``.
TITLES = {
    "variants": "Parameters vs accuracy vs latency per variant",
    "ranks": "Per-layer ranks and kept parameters",
    "latency": "Latency distribution",
}
UNKNOWN_COLOR = "#7f7f7f"  # a precision without a registered spec (another tool version's report)
MODEL_MARKERS = {"original": "o", "compressed": "s"}

Series = tuple[str, Mapping[str, Any]]  # (label, latency stats dict, maybe with samples_ms)


def precision_color(precision: str) -> str:
    """The chart colour its spec declares (grey for an unregistered precision)."""
    spec = find_spec(precision)
    return spec.color if spec is not None else UNKNOWN_COLOR


def load_matplotlib() -> tuple[Any, Any]:
    """(Figure, FigureCanvasAgg), or a DependencyError saying how to install matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
        from matplotlib.figure import Figure  # noqa: PLC0415
    except ImportError as exc:
        raise DependencyError(f"matplotlib is not installed ({exc})",
                              fix=f"{INSTALL_HINT} (charts are optional; the report is complete without them)") from None
    return Figure, FigureCanvasAgg


def new_figure(width: float, height: float) -> Any:
    """A pyplot-free figure on the Agg canvas."""
    figure_cls, canvas_cls = load_matplotlib()
    fig = figure_cls(figsize=(width, height), dpi=DPI, layout="constrained")
    canvas_cls(fig)
    return fig


def save_figure(fig: Any, path: Path) -> Path:
    """Write a PNG atomically (temp name + rename) at :data:`DPI`."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    return path


def _label_points(ax: Any, xs: Sequence[float], ys: Sequence[float], labels: Sequence[str]) -> None:
    """One label per distinct point: variants that coincide (same size and score) share it."""
    groups: dict[tuple[float, float], list[str]] = {}
    for x, y, text in zip(xs, ys, labels):
        groups.setdefault((round(x, 9), round(y, 9)), []).append(text)
    for i, ((x, y), names) in enumerate(groups.items()):
        ax.annotate(" = ".join(names), (x, y), textcoords="offset points", xytext=(7, 4 + 9 * (i % 3)), fontsize=7)


def _scatter(ax: Any, rows: Sequence[Mapping[str, Any]], xs: Sequence[float], ys: Sequence[float]) -> None:
    biggest = max((float(r["params"] or 0) for r in rows), default=0.0) or 1.0
    for r, x, y in zip(rows, xs, ys):
        size = 40 + 360 * float(r["params"] or 0) / biggest
        ax.scatter([x], [y], s=size, c=precision_color(r["precision"]),
                   marker=MODEL_MARKERS.get(r["model"], "D"), alpha=0.6, edgecolors="black", linewidths=0.5)
    _label_points(ax, xs, ys, [r["name"] for r in rows])
    for precision in precision_order(r["precision"] for r in rows):
        spec = find_spec(precision)
        ax.scatter([], [], s=40, c=precision_color(precision), label=spec.label if spec is not None else precision)
    for model in [m for m in MODEL_MARKERS if any(r["model"] == m for r in rows)]:
        ax.scatter([], [], s=40, c="white", edgecolors="black", marker=MODEL_MARKERS[model], label=model)
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(True, alpha=0.3)
    ax.margins(0.2)
    low, high = ax.get_ylim()
    ax.set_ylim(low, min(high, 100.5))  # percentages: no axis room above 100 %


def _variants_chart(report: Mapping[str, Any]) -> Any | None:
    """Latency (p50, ONNX Runtime) vs accuracy where timed; parameters vs accuracy where not."""
    rows = variant_rows(report)
    metric = "top1" if any(r["top1"] is not None for r in rows) else "agreement"
    ylabel = "top-1 accuracy (%)" if metric == "top1" else "top-1 agreement with its FP32 (%)"
    scored = [r for r in rows if r[metric] is not None]
    timed = [r for r in scored if pick_batch(r["latency"]) is not None]
    untimed = [r for r in scored if r not in timed]
    if not scored:
        return None
    panels = int(bool(timed)) + int(bool(untimed))
    fig = new_figure(6.0 * panels, 4.5)
    axes = list(fig.subplots(1, panels, squeeze=False)[0])
    if timed:
        ax = axes.pop(0)
        batches = {pick_batch(r["latency"]) for r in timed}
        xs = [float(r["latency"][pick_batch(r["latency"])]["p50_ms"]) for r in timed]
        _scatter(ax, timed, xs, [100.0 * r[metric] for r in timed])
        ax.set_xlabel(f"p50 latency, ONNX Runtime CPU, batch {'/'.join(sorted(batches, key=int))} (ms)")
        ax.set_ylabel(ylabel)
        ax.set_title("Latency vs accuracy (marker size ∝ parameters)", fontsize=9)
    if untimed:
        ax = axes.pop(0)
        _scatter(ax, untimed, [float(r["params"] or 0) for r in untimed], [100.0 * r[metric] for r in untimed])
        ax.set_xlabel("parameters")
        ax.set_ylabel(ylabel)
        ax.set_title("Parameters vs accuracy (no latency measured here)", fontsize=9)
    missing = [r["name"] for r in rows if r[metric] is None]
    if missing:
        fig.text(0.01, 0.01, f"not plotted (no {metric.replace('top1', 'top-1')}): {', '.join(missing)}", fontsize=7)
    fig.suptitle(f"{(report.get('model') or {}).get('name', '')}: {TITLES['variants']}", fontsize=10)
    return fig


def _ranks_chart(report: Mapping[str, Any]) -> Any | None:
    """Horizontal bars per factorized layer: rank (against full rank) and kept-parameter fraction."""
    layers = [layer for layer in (report.get("compression") or {}).get("layers") or []
              if isinstance(layer, Mapping) and layer.get("rank") is not None
              and layer.get("status", "factorized") == "factorized"]
    if not layers:
        return None
    names = [str(layer.get("name", "?")) for layer in layers]
    ranks = [float(layer["rank"]) for layer in layers]
    full = [float(min(layer.get("in_features") or 0, layer.get("out_features") or 0)) for layer in layers]
    kept = [float(layer["params_after"]) / float(layer["params_before"])
            if layer.get("params_before") and layer.get("params_after") is not None else 0.0 for layer in layers]
    fig = new_figure(10.0, min(20.0, max(3.0, 0.22 * len(layers) + 1.4)))
    ax_rank, ax_kept = fig.subplots(1, 2, sharey=True)
    pos = list(range(len(layers)))
    if any(full):
        ax_rank.barh(pos, full, color="#dddddd", label="full rank min(in, out)")
    ax_rank.barh(pos, ranks, color="#1f77b4", label="kept rank")
    ax_rank.set_yticks(pos, names, fontsize=7)
    ax_rank.invert_yaxis()
    ax_rank.set_xlabel("rank")
    ax_rank.legend(fontsize=7, loc="lower right")
    ax_kept.barh(pos, kept, color="#2ca02c")
    ax_kept.axvline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax_kept.set_xlabel("kept parameters (after / before)")
    for ax in (ax_rank, ax_kept):
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(f"{(report.get('model') or {}).get('name', '')}: {TITLES['ranks']}", fontsize=10)
    return fig


def latency_panel(ax: Any, series: Sequence[Series], title: str) -> None:
    """Box plots where raw ``samples_ms`` exist, else p50/p90/p99 markers, one position per series."""
    values: list[float] = []
    labelled = False
    for i, (_, stats) in enumerate(series):
        samples = stats.get("samples_ms")
        if isinstance(samples, list) and len(samples) >= 2:
            data = [float(s) for s in samples if isinstance(s, (int, float))]
            ax.boxplot(data, positions=[i], widths=0.5, flierprops={"markersize": 2})
            values += data
            continue
        pts = [(k, float(stats[k])) for k in ("p50_ms", "p90_ms", "p99_ms") if isinstance(stats.get(k), (int, float))]
        if pts:
            ax.vlines(i, min(v for _, v in pts), max(v for _, v in pts), color="#999999", linewidth=1)
        for (k, v), marker in zip(pts, ("o", "^", "x")):
            ax.plot([i], [v], marker=marker, color="#1f77b4", linestyle="none", label=None if labelled else k[:3])
            values.append(v)
        labelled = labelled or bool(pts)
    ax.set_xticks(range(len(series)), [label for label, _ in series], fontsize=7, rotation=30, ha="right")
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_yscale("log")
    ax.set_ylabel("latency (ms)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    if labelled:
        ax.legend(fontsize=7, loc="upper left")


def _latency_chart(report: Mapping[str, Any]) -> Any | None:
    """One panel per batch size; a series per (model, backend) of the workstation benchmark."""
    by_batch: dict[str, list[Series]] = {}
    for model in MODELS:
        latency = ((report.get("benchmarks") or {}).get(model) or {}).get("latency") or {}
        for backend, per in latency.items():
            for batch, stats in (per or {}).items():
                if isinstance(stats, Mapping):
                    by_batch.setdefault(str(batch), []).append((f"{model}.fp32\n{backend}", stats))
    for row in variant_rows(report):  # FP16/INT8 variants timed by the bench stage (ONNX Runtime)
        if row["precision"] != "fp32":
            for batch, stats in row["latency"].items():
                if isinstance(stats, Mapping):
                    by_batch.setdefault(str(batch), []).append((f"{row['name']}\nonnxruntime", stats))
    if not by_batch:
        return None
    batches = sorted(by_batch, key=lambda b: (not b.isdigit(), int(b) if b.isdigit() else 0, b))
    fig = new_figure(4.5 * len(batches), 4.0)
    for ax, batch in zip(fig.subplots(1, len(batches), squeeze=False)[0], batches):
        label = shape_label(report.get("shapes"), batch)
        latency_panel(ax, by_batch[batch], f"batch {batch}" if label.startswith("b=") else label)
    fig.suptitle(f"{(report.get('model') or {}).get('name', '')}: {TITLES['latency']} (workstation CPU)", fontsize=10)
    return fig


DRAWERS: dict[str, Callable[[Mapping[str, Any]], Any | None]] = {
    "variants": _variants_chart, "ranks": _ranks_chart, "latency": _latency_chart}


def write_charts(report: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Draw every chart the report has data for into ``out_dir`` (``<name>.png``); returns the files written.

    Raises :class:`DependencyError` when matplotlib is missing.
    """
    load_matplotlib()
    out = ensure_writable_dir(out_dir)
    written = []
    for name, draw in DRAWERS.items():
        fig = draw(report)
        if fig is not None:
            written.append(save_figure(fig, out / f"{name}.png"))
    return written


def chart_notes(report: Mapping[str, Any]) -> list[str]:
    """What the charts leave out and why (shown under them in report.md)."""
    untimed = [r["name"] for r in variant_rows(report) if pick_batch(r["latency"]) is None]
    if not untimed:
        return []
    return [f"No workstation latency for {', '.join(untimed)} (not timed by this run's bench stage): "
            "they appear in the parameters-vs-accuracy panel; `pela-export device-bench` times every variant."]


def charts_record(report: Mapping[str, Any], report_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Write the charts under ``report_dir/charts`` and describe them for report.json, or say why not."""
    try:
        paths = write_charts(report, Path(report_dir) / CHARTS_DIR)
    except DependencyError as exc:
        return {"dir": CHARTS_DIR, "files": [], "skipped": f"{exc.problem}; install it with `{INSTALL_HINT}`",
                "notes": []}
    except (OSError, ValueError, RuntimeError) as exc:  # a drawing problem must not lose the report
        return {"dir": CHARTS_DIR, "files": [], "skipped": f"chart drawing failed: {exc}", "notes": []}
    files = [{"name": p.stem, "title": TITLES.get(p.stem, p.stem), "path": f"{CHARTS_DIR}/{p.name}"} for p in paths]
    return {"dir": CHARTS_DIR, "files": files, "skipped": None, "notes": chart_notes(report) if files else []}
