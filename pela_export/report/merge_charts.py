"""Charts of the device comparison: p50 latency per variant on every device side
by side, and each device's latency distribution from its raw samples.

Same rules as :mod:`.charts`: matplotlib is optional and lazily imported,
PNGs are written atomically, only measured numbers are drawn.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import DependencyError
from .charts import (
    CHARTS_DIR,
    INSTALL_HINT,
    latency_panel,
    load_matplotlib,
    new_figure,
    save_figure,
)
from .merge import WORKSTATION
from .variants import pick_batch, split_variant, variant_order

TITLES = {
    "devices_latency": "p50 latency per variant and device (whisker to p90)",
    "devices_distribution": "Latency distribution per device",
}


def _sources(comparison: Mapping[str, Any]) -> list[str]:
    return [WORKSTATION] + [d["id"] for d in comparison["devices"]]


def _stats(variant: Mapping[str, Any], source: str, batch: str) -> Mapping[str, Any]:
    src = variant.get("workstation") if source == WORKSTATION else (variant.get("devices") or {}).get(source)
    return ((src or {}).get("latency") or {}).get(batch) or {}


def _latency_bars(comparison: Mapping[str, Any]) -> Any | None:
    """One panel per batch: groups = variants, one bar per source (workstation CPU, then each device)."""
    variants = comparison["variants"]
    sources = _sources(comparison)
    batches = sorted({b for v in variants.values() for s in sources for b in
                      (((v.get("workstation") if s == WORKSTATION else (v.get("devices") or {}).get(s)) or {})
                       .get("latency") or {})}, key=lambda b: int(b) if str(b).isdigit() else 0)
    if not batches:
        return None
    names = list(variants)
    fig = new_figure(max(6.0, 1.2 * len(names) + 2.0), 3.6 * len(batches))
    axes = fig.subplots(len(batches), 1, squeeze=False)[:, 0]
    width = 0.8 / len(sources)
    for ax, batch in zip(axes, batches):
        for j, source in enumerate(sources):
            xs, p50, err = [], [], []
            for i, name in enumerate(names):
                s = _stats(variants[name], source, batch)
                if isinstance(s.get("p50_ms"), (int, float)):
                    xs.append(i - 0.4 + width * (j + 0.5))
                    p50.append(float(s["p50_ms"]))
                    p90 = s.get("p90_ms")
                    err.append(max(0.0, float(p90) - float(s["p50_ms"])) if isinstance(p90, (int, float)) else 0.0)
            if xs:
                ax.bar(xs, p50, width=width, yerr=[[0.0] * len(err), err], capsize=2, label=source)
        ax.set_xticks(range(len(names)), names, fontsize=7, rotation=20, ha="right")
        ax.set_ylabel("p50 latency (ms)")
        ax.set_title(f"batch {batch}", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{(comparison.get('model') or {}).get('name', '')}: {TITLES['devices_latency']}", fontsize=10)
    return fig


def _distribution(comparison: Mapping[str, Any], device_reports: Sequence[Mapping[str, Any]]) -> Any | None:
    """One panel per device at its smallest batch: box plots from ``samples_ms``, else percentile markers."""
    panels = []
    for dev, report in zip(comparison["devices"], device_reports):
        series = []
        variants = report.get("variants") or {}
        for name in variant_order(variants):
            v = variants.get(name) or variants.get(split_variant(name)[0]) or {}
            latency = v.get("latency") or {}
            batch = pick_batch(latency)
            if batch is not None and isinstance(latency[batch], Mapping):
                series.append((f"{name}\nb={batch}", latency[batch]))
        if series:
            panels.append((dev["id"], series))
    if not panels:
        return None
    fig = new_figure(max(5.0, 0.9 * max(len(s) for _, s in panels) + 1.5), 3.8 * len(panels))
    for ax, (label, series) in zip(fig.subplots(len(panels), 1, squeeze=False)[:, 0], panels):
        latency_panel(ax, series, label)
    fig.suptitle(f"{(comparison.get('model') or {}).get('name', '')}: {TITLES['devices_distribution']}", fontsize=10)
    return fig


def write_comparison_charts(comparison: Mapping[str, Any], device_reports: Sequence[Mapping[str, Any]],
                            out_dir: str | os.PathLike[str]) -> list[Path]:
    """Draw the comparison charts into ``out_dir``; DependencyError without matplotlib."""
    load_matplotlib()
    out = Path(out_dir)
    written = []
    for name, fig in (("devices_latency", _latency_bars(comparison)),
                      ("devices_distribution", _distribution(comparison, device_reports))):
        if fig is not None:
            written.append(save_figure(fig, out / f"{name}.png"))
    return written


def comparison_charts_record(comparison: Mapping[str, Any], device_reports: Sequence[Mapping[str, Any]],
                             out_dir: Path) -> dict[str, Any]:
    """Charts under ``out_dir/charts`` described for comparison.json, or the reason they were skipped."""
    try:
        paths = write_comparison_charts(comparison, device_reports, out_dir / CHARTS_DIR)
    except DependencyError as exc:
        return {"dir": CHARTS_DIR, "files": [], "skipped": f"{exc.problem}; install it with `{INSTALL_HINT}`"}
    except (OSError, ValueError, RuntimeError) as exc:  # a drawing problem must not lose the comparison
        return {"dir": CHARTS_DIR, "files": [], "skipped": f"chart drawing failed: {exc}"}
    return {"dir": CHARTS_DIR, "skipped": None,
            "files": [{"name": p.stem, "title": TITLES[p.stem], "path": f"{CHARTS_DIR}/{p.name}"} for p in paths]}
