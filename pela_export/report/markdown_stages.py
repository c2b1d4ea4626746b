"""Readable report.md sections for the export and verification stage records."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .markdown import fmt, table


def export_section(export: Mapping[str, Any] | None) -> list[str]:
    """One row per variant: exporter, opset path, nodes, simplifier (and any fallback), size."""
    lines = ["## Export", ""]
    exports = (export or {}).get("exports") or {}
    if not exports:
        return lines + ["_Not exported in this run._", ""]
    simplify = (export or {}).get("simplify") or {}
    rows = []
    for variant, e in exports.items():
        s = simplify.get(variant) or {}
        simp = "—"
        if s:
            simp = f"{s.get('method_used')} ({fmt(s.get('nodes_before'))} → {fmt(s.get('nodes_after'))} nodes)"
            if s.get("fell_back"):
                simp += f", fell back from {s.get('method_requested')}"
        rows.append([variant, f"{e.get('exporter')}" + (" (fallback)" if e.get("fallback_reason") else ""),
                     f"{e.get('opset_exported')} → {e.get('opset')}" if e.get("opset_exported") != e.get("opset")
                     else fmt(e.get("opset")),
                     "×".join(str(d) for d in e.get("input_shape") or []), fmt(e.get("num_nodes")), simp,
                     f"{(e.get('file_bytes') or 0) / 1e6:.2f}"])
    lines += table(["Variant", "Exporter", "Opset", "Input", "Nodes", "Simplifier", "Raw MB"], rows)
    notes = [f"- {variant}: {c}" for variant, e in exports.items() for c in e.get("conversions") or []]
    return lines + (["Opset conversions:", "", *notes, ""] if notes else [])


def verification_section(verification: Mapping[str, Any] | None) -> list[str]:
    """One row per ONNX file and output: errors vs tolerance, plus the weight-preservation check."""
    lines = ["## Verification (ONNX Runtime vs PyTorch)", ""]
    files = (verification or {}).get("files") or {}
    if not files:
        return lines + ["_Not verified in this run._", ""]
    tol = verification.get("tolerance") or {}
    shapes = verification.get("inputs") or []
    lines += [f"Tolerance: |onnx − torch| ≤ {fmt(tol.get('atol'))} + {fmt(tol.get('rtol'))}·|torch| per element, "
              f"on {len(shapes)} input batches ({', '.join(fmt(s, 'shape') for s in shapes)}).", ""]
    rows = []
    for path, res in files.items():
        params = res.get("parameters") or {}
        factors = params.get("factors") or []
        found = sum(1 for f in factors if "missing" not in (f.get("first_found"), f.get("second_found")))
        for out_name, o in ((res.get("outputs") or {}).get("outputs") or {}).items():
            rows.append([f"`{Path(path).name}`", out_name, fmt(o.get("max_abs_err")), fmt(o.get("mean_abs_err")),
                         fmt(o.get("max_rel_err")),
                         f"{fmt(params.get('onnx_counted'))} / {fmt(params.get('torch_params_distinct'))}"
                         if params else "—",
                         f"{found}/{len(factors)}" if factors else "—",
                         "pass" if res.get("ok") else "**FAIL**"])
    return lines + table(["File", "Output", "Max abs err", "Mean abs err", "Max rel err",
                          "Weights ONNX / PyTorch", "Factor pairs found", "Result"], rows)
