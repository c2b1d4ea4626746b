"""``device-report.md``: what a person reads after ``device-bench`` — the device, whether TensorRT
actually ran (a fallback is stated first, never in a footnote), one row per variant, and the
compressed-vs-original speed-up per precision."""
from __future__ import annotations

from typing import Any

from ..precision.spec import variant_name


def _ms(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}" if v < 10 else f"{v:.1f}"


def _mb(n: Any) -> str:
    return "–" if n is None else f"{n / 1e6:.2f} MB"


def _pct(v: Any) -> str:
    return "–" if v is None else f"{v:.2%}"


def _cuda(dev: dict[str, Any]) -> str:
    """Schema 2: the driver's, the toolkit's and cuda-python's CUDA apart; schema 1: its one ``cuda`` field."""
    if "cuda_driver" not in dev:
        return f"**CUDA:** {dev.get('cuda') or 'not found'}"
    py = dev.get("cuda_python")
    py_text = ("not installed" if not py
               else f"{py.get('package') or 'installed'} (bundles CUDA {py.get('runtime') or '?'})")
    return (f"**CUDA driver:** {dev.get('cuda_driver') or 'none found'} · **CUDA toolkit:** "
            f"{dev.get('cuda_toolkit') or 'not installed'} · **cuda-python:** {py_text}")


def _device_lines(dev: dict[str, Any]) -> list[str]:
    gpu = dev.get("gpu")
    jet = dev.get("jetson")
    lines = [f"- **Host:** {dev.get('hostname')} ({dev.get('platform')}; CPU {dev.get('cpu') or 'unknown'})",
             f"- **GPU:** {gpu['name']} (compute capability {gpu['compute_capability']})" if gpu else "- **GPU:** none found",
             f"- **TensorRT:** {dev.get('tensorrt') or 'not installed'} · {_cuda(dev)} · "
             f"**ONNX Runtime:** {dev.get('onnxruntime') or 'not installed'}"]
    if jet:
        lines.append(f"- **Jetson:** {jet.get('model') or 'board unknown'}, L4T {jet.get('l4t_release') or 'unknown'}, "
                     f"power mode {jet.get('power_mode') or 'unknown (nvpmodel not readable)'}")
    lines.append(f"- **Backend:** {dev.get('backend')}")
    return lines


def _row(name: str, v: dict[str, Any], batches: list[str]) -> str:
    g = v["golden"]
    worst = max((o.get("max_abs_err") or 0.0 for o in g["outputs"].values()), default=0.0)
    check = f"{'pass' if g['ok'] else '**FAIL**'} (max abs err {worst:.2g}; atol {g['tolerance']['atol']:g}, " \
        f"rtol {g['tolerance']['rtol']:g})"
    top1 = (v.get("cpu_accuracy") or {}).get("top1")
    backend = v["backend"] + (" (fallback)" if v.get("fallback_reason") else "")
    cells = [f"`{name}`", backend, check, f"{v['params']:,}" if v.get("params") else "–", _mb(v.get("onnx_bytes")),
             _pct(top1)]
    for b in batches:
        lat = v["latency"].get(b) or {}
        cells.append(f"{_ms(lat.get('p50_ms'))} / {_ms(lat.get('p90_ms'))} / {_ms(lat.get('p99_ms'))}")
        tp = lat.get("throughput")
        cells.append("–" if tp is None else f"{tp:,.0f}")
    return "| " + " | ".join(cells) + " |"


def _speedups(variants: dict[str, Any], batches: list[str]) -> list[str]:
    lines = []
    # every precision the bundle holds, in its deploy.json order (the workstation writes them in spec order)
    for precision in dict.fromkeys(str(v.get("precision")) for v in variants.values()):
        o, c = variants.get(variant_name("original", precision)), variants.get(variant_name("compressed", precision))
        if not o or not c:
            continue
        for b in batches:
            po, pc = (o["latency"].get(b) or {}).get("p50_ms"), (c["latency"].get(b) or {}).get("p50_ms")
            if po and pc:
                lines.append(f"| {precision} | {b} | {_ms(po)} | {_ms(pc)} | {po / pc:.2f}x |")
    if not lines:
        return []
    return ["", "## Compressed vs original (p50)", "", "| precision | batch | original ms | compressed ms | speed-up |",
            "|---|---:|---:|---:|---:|", *lines]


def render_device_markdown(report: dict[str, Any]) -> str:
    dev = report["device"]
    variants = report["variants"]
    batches = [str(b) for b in report.get("settings", {}).get("batch_sizes", [])] or \
        sorted({b for v in variants.values() for b in v["latency"]}, key=int)
    out = [f"# Device report: {report['bundle']['model']} on {dev.get('hostname')}", ""]
    if dev.get("fallback_reason"):
        out += [f"> **Not TensorRT:** {dev['fallback_reason']}. Latencies below are ONNX Runtime's.", ""]
    out += _device_lines(dev)
    s = report.get("settings", {})
    axes = s.get("axes") or {}
    at = (" at " + ", ".join(f"{k} {v}" for k, v in axes.items())) if axes else ""
    out += [f"- **Bundle:** {report['bundle']['path']} (deploy.json sha256 {report['bundle']['deploy_sha256'][:12]}…)",
            f"- **Timing:** {s.get('runs')} runs after {s.get('warmup')} warm-up per batch size{at}; "
            f"created {report['created_at']} by pela-export {report['tool']['version']}", "",
            "## Variants", "",
            "Golden check: outputs on the bundle's golden inputs vs the workstation's ONNX Runtime (CPU) outputs of "
            "the same variant, |device − golden| ≤ atol + rtol·|golden| per element. Latency: p50 / p90 / p99 ms; "
            "throughput in samples/s. CPU top-1 was measured on the workstation.", ""]
    head = ["variant", "backend", "golden check", "params", "ONNX", "CPU top-1"]
    for b in batches:
        shape = f"b={b}" + "".join(f"×{v}" for v in axes.values())
        head += [f"{shape} p50/p90/p99 ms", f"{shape} samples/s"]
    out += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += [_row(n, v, batches) for n, v in variants.items()]
    notes = [f"- `{n}`: {v['fallback_reason']}" for n, v in variants.items() if v.get("fallback_reason")]
    fails = [f"- `{n}` {o}: {d['problem']}" for n, v in variants.items() for o, d in v["golden"]["outputs"].items()
             if not d.get("ok") and d.get("problem")]
    if notes:
        out += ["", "Per-variant fallbacks:", *notes]
    if fails:
        out += ["", "## Golden check failures", "", *fails]
    out += _speedups(variants, batches)
    return "\n".join(out) + "\n"
