"""comparison.md, rendered only from the comparison dict of :mod:`.merge`, so it
can be regenerated from comparison.json."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .markdown import DASH, _esc, fmt, table
from .merge import WORKSTATION


def _ms(v: Any) -> str:
    return DASH if not isinstance(v, (int, float)) else f"{float(v):.3f}"


def _speedup(v: Any) -> str:
    return DASH if not isinstance(v, (int, float)) else f"{float(v):.2f}×"


def _golden(g: Mapping[str, Any] | None) -> str:
    if not g:
        return "not checked"
    err = g.get("max_abs_err")
    detail = f" (max abs err {float(err):.3g})" if isinstance(err, (int, float)) else ""
    return ("pass" if g.get("ok") else "**FAIL**") + detail


def _pct(v: Any) -> str:
    return DASH if not isinstance(v, (int, float)) else f"{100.0 * float(v):.2f}%"


def _batches(comparison: Mapping[str, Any]) -> list[str]:
    found = {b for v in comparison["variants"].values()
             for src in [v.get("workstation") or {}, *(v.get("devices") or {}).values()]
             for b in (src.get("latency") or {})}
    return sorted(found, key=lambda b: (not str(b).isdigit(), int(b) if str(b).isdigit() else 0, str(b)))


def _cuda_cell(d: Mapping[str, Any]) -> str:
    """Schema-2 reports: driver / toolkit / cuda-python apart (a mismatch between them is what breaks a
    device); schema 1: its one ``cuda`` field."""
    if "cuda_driver" not in d:
        return str(d.get("cuda") or DASH)
    py = d.get("cuda_python") if isinstance(d.get("cuda_python"), Mapping) else None
    py_text = f"{py.get('package') or 'installed'} (bundles {py.get('runtime') or '?'})" if py else "none"
    return (f"driver {d.get('cuda_driver') or 'none'}, toolkit {d.get('cuda_toolkit') or 'none'}, "
            f"cuda-python {py_text}")


def _devices(comparison: Mapping[str, Any]) -> list[str]:
    rows = []
    for d in comparison["devices"]:
        gpu = d.get("gpu") if isinstance(d.get("gpu"), Mapping) else {}
        jetson = d.get("jetson") if isinstance(d.get("jetson"), Mapping) else {}
        backend = ("TensorRT" if d.get("backend") == "tensorrt"
                   else f"ONNX Runtime fallback: {d.get('fallback_reason') or 'TensorRT not available'}")
        rows.append([_esc(d["id"]), _esc(gpu.get("name") or DASH), _esc(gpu.get("compute_capability") or DASH),
                     _esc(d.get("tensorrt") or DASH), _esc(_cuda_cell(d)),
                     _esc(", ".join(str(x) for x in (jetson.get("l4t_release"), jetson.get("power_mode")) if x) or DASH),
                     _esc(backend), f"`{_esc(d.get('report'))}`"])
    return ["## Devices", ""] + table(["Device", "GPU", "Compute capability", "TensorRT", "CUDA",
                                       "Jetson L4T, power mode", "Backend", "Report"], rows)


def _variants(comparison: Mapping[str, Any]) -> list[str]:
    ids = [d["id"] for d in comparison["devices"]]
    rows = []
    for name, v in comparison["variants"].items():
        acc = v.get("cpu_accuracy") or {}
        delta = acc.get("delta_points")
        rows.append([f"`{name}`", fmt(v.get("params")), DASH if v.get("onnx_mb") is None else f"{v['onnx_mb']:.3f}",
                     _pct(acc.get("top1")),
                     "reference" if v.get("precision") == "fp32" and acc.get("top1") is not None
                     else (DASH if delta is None else f"{delta:+.2f}")]
                    + [_golden(((v.get("devices") or {}).get(i) or {}).get("golden"))
                       if i in (v.get("devices") or {}) else "not run" for i in ids])
    return (["## Variants", "", "CPU top-1 is the workstation's ONNX Runtime measurement; the golden check compares "
             "each device's outputs with the workstation's reference outputs for that variant.", ""]
            + table(["Variant", "Params", "ONNX MB", "CPU top-1", "Δ vs FP32 (points)"]
                    + [f"Golden check: {_esc(i)}" for i in ids], rows))


def _side_by_side(comparison: Mapping[str, Any]) -> list[str]:
    ids = [d["id"] for d in comparison["devices"]]
    rows = []
    for batch in _batches(comparison):
        for name, v in comparison["variants"].items():
            sources = [v.get("workstation") or {}] + [(v.get("devices") or {}).get(i) or {} for i in ids]
            cells = []
            for src in sources:
                s = (src.get("latency") or {}).get(batch) or {}
                cell = _ms(s.get("p50_ms"))
                if s.get("speedup_vs_original") is not None:
                    cell += f" ({_speedup(s['speedup_vs_original'])})"
                cells.append(cell)
            if any(c != DASH for c in cells):
                rows.append([f"`{name}`", _esc(batch), *cells])
    if not rows:
        return ["## Latency side by side", "", "_No latency recorded._", ""]
    return (["## Latency side by side (p50 ms; speed-up of compressed vs original in parentheses)", ""]
            + table(["Variant", "Batch", _esc(WORKSTATION)] + [_esc(i) for i in ids], rows))


def _device_detail(comparison: Mapping[str, Any], dev: Mapping[str, Any]) -> list[str]:
    lines = [f"## {_esc(dev['id'])}", ""]
    if dev.get("backend") != "tensorrt":
        lines += [f"No TensorRT on this device: measured with ONNX Runtime instead "
                  f"({_esc(dev.get('fallback_reason') or 'reason not recorded')}).", ""]
    rows = []
    for name, v in comparison["variants"].items():
        d = (v.get("devices") or {}).get(dev["id"])
        if not d:
            continue
        latency = d.get("latency") or {}
        batches = sorted(latency, key=lambda b: int(b) if str(b).isdigit() else 0) or [None]
        for k, batch in enumerate(batches):
            s = (latency.get(batch) or {}) if batch is not None else {}
            first = k == 0  # variant, backend and golden check once per variant, not per batch
            rows.append([f"`{name}`" if first else "", _esc(d.get("backend")) if first else "",
                         _golden(d.get("golden")) if first else "", _esc(batch or DASH),
                         _ms(s.get("p50_ms")), _ms(s.get("p90_ms")), _ms(s.get("p99_ms")), fmt(s.get("throughput")),
                         _speedup(s.get("speedup_vs_original"))])
    return lines + table(["Variant", "Backend", "Golden check", "Batch", "p50 ms", "p90 ms", "p99 ms",
                          "Throughput (samples/s)", "Speed-up vs original"], rows)


def render_comparison(comparison: Mapping[str, Any]) -> str:
    """The whole comparison.md as one string."""
    model = comparison.get("model") or {}
    ws = comparison.get("workstation") or {}
    tool = comparison.get("tool") or {}
    lines = [f"# Workstation vs device comparison: {_esc(model.get('name', '?'))}", "",
             f"- **Workstation report:** `{_esc(ws.get('report'))}` ({_esc(ws.get('date') or '?')}, "
             f"{_esc(ws.get('platform') or '?')}, ONNX Runtime {_esc(ws.get('onnxruntime') or '?')})",
             f"- **Devices:** {len(comparison['devices'])}",
             f"- **Generated:** {_esc(comparison.get('created_at'))} by {_esc(tool.get('name'))} {_esc(tool.get('version'))}",
             "- **Speed-up** = original p50 / compressed p50 at the same precision, batch size and device.", ""]
    lines += _devices(comparison)
    lines += _variants(comparison)
    lines += _side_by_side(comparison)
    for dev in comparison["devices"]:
        lines += _device_detail(comparison, dev)
    charts = comparison.get("charts") or {}
    if charts:
        lines += ["## Charts", ""]
        if charts.get("skipped"):
            lines += [f"_Charts skipped: {_esc(charts['skipped'])}._", ""]
        for c in charts.get("files") or []:
            lines += [f"![{_esc(c.get('title'))}]({c.get('path')})", ""]
    if comparison.get("notes"):
        lines += ["## Notes", "", *[f"- {_esc(n)}" for n in comparison["notes"]], ""]
    return "\n".join(lines).rstrip() + "\n"
