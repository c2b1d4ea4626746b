"""report.md sections for precision variants, the TensorRT stage and the charts.

Kept out of markdown.py so each module stays short; rendered only from the
report dict, like the rest of report.md.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .markdown import DASH, _esc, fmt, table
from .stage_summary import relative_to
from ..measure.shapes import shape_label
from .variants import canonical, variant_order, variant_rows


def _pct(v: Any) -> str:
    return DASH if v is None else f"{100.0 * float(v):.2f}%"


def _points(v: Any) -> str:
    return DASH if v is None else f"{float(v):+.2f}"


def _mb(v: Any) -> str:
    return DASH if v is None else f"{float(v):.3f}"


def _err(v: Any) -> str:
    return DASH if v is None else f"{float(v):.4g}"


def precision_section(report: Mapping[str, Any]) -> list[str]:
    """One row per variant: size, top-1 vs its FP32, agreement, logit error, node counts, ORT level."""
    lines = ["## Precision variants (ONNX Runtime, CPU)", ""]
    precision = report.get("precision")
    rows = variant_rows(report)
    if not precision:
        lines += ["_Precision stage not run in this output directory (no `stages/precision.json`); "
                  "FP32 only. Run `pela-export run` with `--precision fp16,int8` for FP16/INT8 variants._", ""]
    elif not precision.get("variants"):
        lines += ["_FP32 only: no FP16/INT8 variants were requested (pass `--precision fp16,int8`)._", ""]
    evaluation = (precision or {}).get("evaluation") or {}
    calib = (precision or {}).get("calibration") or {}
    facts = []
    if evaluation.get("data"):
        facts.append(f"evaluated on {_esc(evaluation['data'])}")
    if calib.get("source"):
        facts.append(f"INT8 calibrated on {_esc(calib['source'])}")
    if facts:
        lines += ["Each variant is compared with the FP32 graph of the same model; " + "; ".join(facts) + ".", ""]
    with_mean = any(r["mean_abs_err"] is not None for r in rows)
    embedding = any(r.get("cosine_mean") is not None for r in rows)
    what = "output" if embedding else "logit"
    headers = ["Variant", "Params", "ONNX MB", "Top-1", "Δ vs FP32 (points)",
               "Agreement (top-1 / nearest neighbour)" if embedding else "Top-1 agreement", f"Max abs {what} err"]
    headers += [f"Mean abs {what} err"] if with_mean else []
    headers += ["Mean cosine vs FP32"] if embedding else []
    headers += [f"p50 ms ({shape_label(report.get('shapes'), 1)}, CPU)", "Nodes kept FP32", "Nodes quantized / FP16",
                "ORT optimization"]
    body = []
    for r in rows:
        fp32 = r["precision"] == "fp32"
        cells = [f"`{r['name']}`", fmt(r["params"]), _mb(r["onnx_mb"]), _pct(r["top1"]),
                 "reference" if fp32 else _points(r["delta_points"]),
                 "reference" if fp32 else _pct(r["agreement"]), DASH if fp32 else _err(r["max_abs_err"])]
        cells += [DASH if fp32 else _err(r["mean_abs_err"])] if with_mean else []
        cells += [DASH if fp32 or r.get("cosine_mean") is None else f"{float(r['cosine_mean']):.6f}"] if embedding else []
        b1 = r["latency"].get("1") if isinstance(r["latency"].get("1"), Mapping) else {}
        cells += [fmt(b1.get("p50_ms")) if b1.get("p50_ms") is not None else DASH,
                  fmt(r["kept_fp32"]), fmt(r["lowered_nodes"]), fmt(r["ort_level"])]
        body.append(cells)
    lines += table(headers, body)
    notes = []
    for name, v in ((precision or {}).get("variants") or {}).items():
        conv = v.get("conversion") or {}
        ops = conv.get("kept_fp32_ops") or {}
        if ops:
            notes.append(f"- `{canonical(name)}` kept in FP32: "
                         + ", ".join(f"{_esc(op)} ×{n}" for op, n in ops.items()))
        for w in conv.get("warnings") or []:
            notes.append(f"- `{canonical(name)}` warning: {_esc(w)}")
    return lines + (notes + [""] if notes else [])


def _parser_cell(check: Mapping[str, Any] | None) -> str:
    if not check:
        return DASH
    if check.get("ok"):
        warn = int(check.get("warnings") or 0)
        return f"ok ({warn} warning{'s' if warn != 1 else ''})" if warn else "ok"
    n = int(check.get("errors") or 0)
    return f"**{n} error{'s' if n != 1 else ''}**"


def _engine_cell(entry: Mapping[str, Any], version: str, installed: str) -> str:
    """Engines are only built for the installed TensorRT; other target versions get scripts only."""
    if version != installed:
        return DASH
    engine = entry.get("engine")
    if not isinstance(engine, Mapping):
        return "no"
    size = engine.get("plan_bytes")
    detail = ", ".join(x for x in (f"{size / 1e6:.2f} MB" if isinstance(size, (int, float)) else "",
                                    str(engine.get("precision") or "")) if x)
    return f"yes ({detail})" if detail else "yes"


def tensorrt_section(report: Mapping[str, Any]) -> list[str]:
    """TensorRT version (or why no engine was built), then parser verdict / script / engine per variant × version."""
    lines = ["## TensorRT", ""]
    build = report.get("build")
    if not build:
        return lines + ["_Build stage not run in this output directory (no `stages/build.json`)._", ""]
    installed = build.get("tensorrt_installed")
    if installed:
        lines += [f"TensorRT {_esc(installed)} is installed: engines built for it.", ""]
    else:
        lines += [f"**No engine built.** {_esc(build.get('skipped') or 'TensorRT is not installed here.')}", ""]
    root = (report.get("artifacts") or {}).get("output_dir")
    variants = build.get("variants") or {}
    by_name = {canonical(n): v for n, v in variants.items()}
    versions = [str(v) for v in build.get("target_versions") or []]
    versions = versions or sorted({ver for e in by_name.values() for ver in (e.get("checks") or {})})
    rows, problems, scripts = [], [], []
    for name in variant_order(variants):
        entry = by_name[name]
        cells = [f"`{name}`"]
        for version in versions:
            check = (entry.get("checks") or {}).get(version)
            script = (entry.get("trtexec") or {}).get(version)
            cells.append(_parser_cell(check) + ("" if script or not check or not check.get("ok") else ", no script"))
            scripts += [relative_to(script, root)] if script else []
            problems += [f"- `{name}` on TensorRT {_esc(version)}: {_esc(m)}" for m in (check or {}).get("messages") or []]
        rows.append(cells + ([_engine_cell(entry, installed, installed)] if installed else []))
    if not rows:
        return lines + ["_No ONNX variant was checked._", ""]
    lines += ["Static ONNX-parser check per target TensorRT version (operator support tables of each release):", ""]
    lines += table(["Variant", *(f"TensorRT {_esc(v)}" for v in versions)]
                   + ([f"Engine ({_esc(installed)})"] if installed else []), rows)
    if scripts:
        lines += [f"Equivalent `trtexec` builds: {len(scripts)} scripts, e.g. `{_esc(scripts[0])}` "
                  "(one per variant and version; none where the parser would reject the graph).", ""]
    modes = [f"- `{n}`: " + "; ".join(f"TensorRT {_esc(v)}: {_esc(m)}" for v, m in (by_name[n].get("precision_mode") or {}).items())
             for n in variant_order(variants) if by_name[n].get("precision_mode")]
    if modes:
        lines += ["How each build keeps the graph's precision (strong typing, or precision constraints where the "
                  "version has none):", "", *modes, ""]
    if problems:
        lines += ["Parser errors:", "", *problems, ""]
    return lines


def charts_section(report: Mapping[str, Any]) -> list[str]:
    """Embed the PNG charts (paths relative to report.md) or say why there are none."""
    charts = report.get("charts")
    if not charts:
        return []
    lines = ["## Charts", ""]
    if charts.get("skipped"):
        lines += [f"_Charts skipped: {_esc(charts['skipped'])}._", ""]
    for c in charts.get("files") or []:
        lines += [f"![{_esc(c.get('title', c.get('name', 'chart')))}]({c.get('path')})", ""]
    lines += [f"- {_esc(n)}" for n in charts.get("notes") or []]
    return lines + ([""] if charts.get("notes") else [])
