"""Human-readable ``report.md``, rendered only from the report dict so that it
can be regenerated from a saved ``report.json`` at any time."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

DASH = "—"
_NAME = "\0name"  # key of the row label in _records_table (cannot clash with real keys)


def _esc(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _si(v: float) -> str:
    """1234567 → '1.235 M' (for FLOPs/MACs, where digits do not help)."""
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3f} {suffix}"
    return f"{v:g}"


def fmt(v: Any, kind: str = "") -> str:
    """Format one cell: counts with separators, SI for FLOPs, percent for accuracies."""
    if v is None:
        return DASH
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        if kind == "si":
            return _si(float(v))
        if kind == "pct":
            return f"{100.0 * v:.2f}%"
        if kind == "ratio":
            return f"{v:.3f}×"
        if kind == "cos":
            return f"{v:.6f}"
        if isinstance(v, int):
            return f"{v:,}"
        if v == 0:
            return "0"
        if abs(v) >= 1000:
            return f"{v:,.1f}"
        return f"{v:.3f}" if abs(v) >= 1 else f"{v:.4g}"
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, float)) for x in v):
        return "×".join(str(x) for x in v) if kind == "shape" else ", ".join(fmt(x) for x in v)
    if isinstance(v, (Mapping, list, tuple)):
        text = json.dumps(v, separators=(",", ":"), default=str)
        return _esc(text if len(text) <= 80 else text[:77] + "...")
    return _esc(v)


def _kind_for(key: str) -> str:
    if key.startswith("flops."):
        return "si"
    if key in ("accuracy.top1", "accuracy.top1_agreement"):
        return "pct"
    return "cos" if key.startswith("accuracy.cosine") else ""


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines + [""]


def _comparison(report: Mapping[str, Any]) -> list[str]:
    rows = []
    for r in report.get("comparison") or []:
        kind = _kind_for(str(r.get("key", "")))
        rows.append([_esc(r.get("metric", "")), fmt(r.get("original"), kind), fmt(r.get("compressed"), kind),
                     fmt(r.get("ratio"), "ratio")])
    lines = ["## Original vs compressed", ""]
    lines += _measured_at(report.get("shapes"))
    lines += table(["Metric", "Original", "Compressed", "Compressed / original"], rows)
    threads = []
    for variant in ("original", "compressed"):
        t = (report.get("benchmarks", {}).get(variant) or {}).get("threads") or {}
        threads += [f"{backend} {n} ({variant})" for backend, n in t.items()]
    if threads:
        lines += ["Threads: " + ", ".join(threads) + ".", ""]
    settings = report.get("settings") or {}
    if settings:
        lines += ["Settings: " + ", ".join(f"{k}={fmt(v)}" for k, v in settings.items()) + ".", ""]
    return lines


def _measured_at(shapes: Mapping[str, Any] | None) -> list[str]:
    """One sentence naming the shapes latency, throughput and FLOPs were measured at (models with
    dynamic axes besides the batch, e.g. text: ``batch 1 × sequence 128``)."""
    if not shapes or not shapes.get("axes"):
        return []
    lat, thr, flops = (shapes.get(k) or {} for k in ("latency", "throughput", "flops"))
    origin = "; ".join(f"{_esc(k)}: {_esc(v)}" for k, v in (shapes.get("axes_origin") or {}).items())
    return [f"Measured at: latency {_esc(lat.get('description', '?'))}, throughput {_esc(thr.get('description', '?'))}, "
            f"FLOPs {_esc(flops.get('description', '?'))}" + (f" ({origin})" if origin else "") + ".", ""]


def _io_facts(model: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Input/Output header lines: the classic one-tensor line, or every named input and output."""
    io = model.get("io") if isinstance(model.get("io"), Mapping) else None
    inputs, outputs = list((io or {}).get("inputs") or []), list((io or {}).get("outputs") or [])
    axes = (io or {}).get("axes") or {}
    named = [a for a in axes if a != "batch"]
    if io is None or (len(inputs) == 1 and len(outputs) == 1 and not named):
        return [("Input", f"{model.get('input_name', '?')} {fmt(model.get('input_shape'), 'shape')} "
                          f"({model.get('input_dtype', '?')}, shape from {model.get('input_shape_origin', '?')})"),
                ("Output", model.get("output_name"))]

    def dims(t: Mapping[str, Any]) -> str:
        return "[" + ", ".join(str(d) for d in t.get("shape") or []) + "]"

    ranges = ", ".join(f"{a} {axes[a].get('min')}..{axes[a].get('max')} (opt {axes[a].get('opt')})"
                       for a in axes if isinstance(axes[a], Mapping))
    return [("Inputs", "; ".join(f"{t.get('name')} {t.get('dtype')} {dims(t)}" for t in inputs)
             + (f" — dynamic axes: {ranges}" if ranges else "")),
            ("Outputs", "; ".join(f"{t.get('name')} ({t.get('role')}) {dims(t)}" for t in outputs))]


def _accuracy(acc: Mapping[str, Any] | None) -> list[str]:
    lines = ["## Accuracy", ""]
    if not acc:
        return lines + ["_Not evaluated._", ""]
    skipped = acc.get("top1_skipped")
    rows = [[_esc(k), fmt(v, "pct" if k.startswith("top1_") else "cos" if k.startswith("cosine") else "")]
            for k, v in acc.items() if k != "top1_skipped"]
    lines += table(["Metric", "Value"], rows)
    if skipped:
        lines += [f"Top-1 against labels not computed: {_esc(skipped)}.", ""]
    return lines


def _layers(comp: Mapping[str, Any]) -> list[str]:
    layers = comp.get("layers") or []
    structured = any(row.get("status") == "structured" for row in layers)  # --structure: no ranks, a layer type
    lines = ["## Per-layer structure" if structured else "## Per-layer ranks", ""]
    if not layers:
        return lines + ["_No layers were factorised._", ""]
    rows = [[f"`{_esc(row.get('name', '?'))}`", fmt(row.get("shape"), "shape"), fmt(row.get("rank")),
             f"{fmt(row.get('params_before'))} → {fmt(row.get('params_after'))}", fmt(row.get("rel_error")),
             _esc(row.get("reason", "") if row.get("status", "factorized") in ("factorized", "structured")
                  else f"skipped: {row.get('reason', '')}")]
            for row in layers]
    totals = comp.get("totals") or {}
    if totals:
        rows.append(["**total (factorized layers)**", "", "",
                     f"{fmt(totals.get('params_before_factorized_layers'))} → {fmt(totals.get('params_after_factorized_layers'))}",
                     "", f"{totals.get('layers_factorized')}/{totals.get('layers_eligible')} layers factorized"])
    return lines + table(["Layer", "Shape", "Rank", "Params before → after", "Rel. error", "Note"], rows)


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool)) or (
        isinstance(v, list) and all(isinstance(x, (str, int, float, bool)) for x in v))


def _records_table(records: Sequence[Mapping[str, Any]], first: str | None = None) -> list[str]:
    cols: list[str] = []
    for rec in records:
        cols += [k for k in rec if k not in cols and k != _NAME]
    headers = ([first] if first else []) + cols
    rows = [([_esc(rec.get(_NAME, ""))] if first else []) + [fmt(rec.get(c)) for c in cols]
            for rec in records]
    return table(headers, rows)


def generic_section(title: str, data: Any) -> list[str]:
    """Render a result whose structure belongs to another stage: scalars as a
    key/value table, name→record maps and record lists as their own tables."""
    lines = [f"## {title}", ""]
    if not data:
        return lines + ["_No results recorded._", ""]
    if isinstance(data, list):
        if all(isinstance(r, Mapping) for r in data):
            return lines + _records_table(data)
        return lines + [f"- {_esc(x)}" for x in data] + [""]
    if not isinstance(data, Mapping):
        return lines + [fmt(data), ""]
    scalars = [[_esc(k), fmt(v)] for k, v in data.items() if _scalar(v)]
    if scalars:
        lines += table(["Key", "Value"], scalars)
    named = {k: v for k, v in data.items() if isinstance(v, Mapping)}
    if named:
        lines += _records_table([{_NAME: k, **v} for k, v in named.items()], first="Name")
    for k, v in data.items():
        if isinstance(v, list) and not _scalar(v):
            records = [r if isinstance(r, Mapping) else {"value": r} for r in v]
            lines += [f"**{_esc(k)}**", ""] + _records_table(records)
    return lines


def _header(report: Mapping[str, Any]) -> list[str]:
    model = report.get("model") or {}
    comp = report.get("compression") or {}
    env = report.get("environment") or {}
    tool = report.get("tool") or {}
    totals = comp.get("totals") or {}
    params = comp.get("params") or {}
    lines = [f"# PELA export report: {_esc(model.get('name', '?'))}", ""]
    facts = [
        ("Source", model.get("source")), ("Family", model.get("family")),
        *_io_facts(model),
        ("Compression ratio", fmt(comp.get("ratio")) if comp.get("ratio") is not None else None),
        ("Parameters (whole model)", f"{fmt(params.get('original'))} → {fmt(params.get('compressed'))}"
         if params else None),
        ("Parameters in factorized layers",
         f"{fmt(totals.get('params_before_factorized_layers'))} → {fmt(totals.get('params_after_factorized_layers'))} "
         f"({100 * totals.get('reduction_in_factorized_layers', 0):.1f}% fewer, "
         f"{totals.get('layers_factorized')}/{totals.get('layers_eligible')} eligible layers factorized)"
         if totals.get("params_before_factorized_layers") is not None else None),
        ("Generated", env.get("date")),
        ("Tool", f"{tool.get('name', 'pela-export')} {tool.get('version', '?')}, "
                 f"report schema {report.get('schema_version')}"),
    ]
    lines += [f"- **{k}:** {_esc(v)}" for k, v in facts if v is not None] + [""]
    return lines


def _choices(choices: Sequence[str]) -> list[str]:
    lines = ["## Automatic choices", ""]
    if not choices:
        return lines + ["_None: every choice was given explicitly._", ""]
    return lines + [f"- {_esc(c)}" for c in choices] + [""]


def render_markdown(report: Mapping[str, Any]) -> str:
    """The whole report.md as one string."""
    # the section modules build on this module's helpers, so they are imported here, not at the top
    from .markdown_precision import charts_section, precision_section, tensorrt_section
    from .markdown_stages import export_section, verification_section
    from .markdown_structured import structured_section

    lines = _header(report)
    lines += _comparison(report)
    lines += _accuracy(report.get("accuracy"))
    lines += precision_section(report)
    lines += tensorrt_section(report)
    lines += charts_section(report)
    lines += _layers(report.get("compression") or {})
    lines += structured_section(report)
    lines += export_section(report.get("export"))
    lines += verification_section(report.get("verification"))
    lines += _choices(report.get("automatic_choices") or [])
    lines += generic_section("Environment", report.get("environment"))
    if report.get("artifacts"):
        lines += generic_section("Artifacts", report.get("artifacts"))
    return "\n".join(lines).rstrip() + "\n"
