"""One row per deployable variant (original/compressed × each registered precision), joined
from the report's benchmark, accuracy and precision sections.

The report table, the charts and the device comparison all read these rows, so
the three can never disagree on a number. Values that were not measured stay
``None``: nothing is filled in or estimated.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..precision.spec import precision_names, split_variant, variant_name

MODELS = ("original", "compressed")


def canonical(name: str) -> str:
    """Stage records call the FP32 files "original"/"compressed"; the bundle "original.fp32"."""
    return variant_name(*split_variant(name))


def variant_order(names: Any) -> list[str]:
    """Canonical names sorted model-major, then by the precision specs' order, unknown ones last."""
    order = precision_names()

    def key(name: str) -> tuple[int, int, str]:
        model, precision = split_variant(name)
        return (MODELS.index(model) if model in MODELS else len(MODELS),
                order.index(precision) if precision in order else len(order), name)

    return sorted({canonical(n) for n in names}, key=key)


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _fp32_top1(report: Mapping[str, Any], model: str) -> float | None:
    """FP32 top-1 of ``model``: the precision stage's reference (same data as its variants), else the bench's."""
    for v in ((report.get("precision") or {}).get("variants") or {}).values():
        if v.get("model") == model and _num((v.get("accuracy") or {}).get("top1_reference")) is not None:
            return _num(v["accuracy"]["top1_reference"])
    acc = report.get("accuracy") or {}
    return _num(acc.get("top1_reference" if model == "original" else "top1_candidate"))


def _base_row(report: Mapping[str, Any], model: str, precision: str) -> dict[str, Any]:
    bench = (report.get("benchmarks") or {}).get(model) or {}
    params = bench.get("params") or {}
    return {"name": variant_name(model, precision), "model": model, "precision": precision,
            "params": params.get("onnx") if params.get("onnx") is not None else params.get("torch"),
            "onnx_bytes": None, "onnx_mb": None, "top1": None, "top1_fp32": None, "delta_points": None,
            "agreement": None, "cosine_mean": None, "max_abs_err": None, "mean_abs_err": None, "kept_fp32": None,
            "lowered_nodes": None, "ort_level": None, "reference": None, "latency": {}}


def _fp32_row(report: Mapping[str, Any], model: str) -> dict[str, Any]:
    row = _base_row(report, model, "fp32")
    bench = (report.get("benchmarks") or {}).get(model) or {}
    size = bench.get("onnx_size") or {}
    row["onnx_bytes"] = size.get("bytes")
    row["onnx_mb"] = _num(size.get("mb"))
    row["top1"] = row["top1_fp32"] = _fp32_top1(report, model)
    row["ort_level"] = (report.get("precision") or {}).get("fp32_onnxruntime_optimization")
    row["reference"] = "itself"
    row["latency"] = dict((bench.get("latency") or {}).get("onnxruntime") or {})
    return row


def _precision_row(report: Mapping[str, Any], name: str, v: Mapping[str, Any]) -> dict[str, Any]:
    model, precision = split_variant(name)
    row = _base_row(report, str(v.get("model") or model), str(v.get("precision") or precision))
    acc = v.get("accuracy") or {}
    conv = v.get("conversion") or {}
    row["onnx_bytes"] = v.get("onnx_bytes")
    row["onnx_mb"] = None if _num(v.get("onnx_bytes")) is None else float(v["onnx_bytes"]) / 1e6
    row["top1"], row["top1_fp32"] = _num(acc.get("top1_candidate")), _num(acc.get("top1_reference"))
    if row["top1"] is not None and row["top1_fp32"] is not None:
        row["delta_points"] = 100.0 * (row["top1"] - row["top1_fp32"])
    row["agreement"] = _num(acc.get("top1_agreement"))
    if acc.get("comparison") == "embedding":  # an embedding output: no classes; cosine and nearest neighbours
        row["agreement"] = _num(acc.get("neighbour_agreement"))
        row["cosine_mean"] = _num(acc.get("cosine_mean"))
    row["max_abs_err"] = _num(acc.get("max_abs_diff"))
    row["mean_abs_err"] = _num(acc.get("mean_abs_diff"))
    row["kept_fp32"] = conv.get("kept_fp32")
    # quantized (a Q/DQ converter's record) or converted (FP16's), whichever the converter recorded
    quantized = conv.get("quantized_nodes")
    row["lowered_nodes"] = quantized if quantized is not None else conv.get("nodes_fp16")
    row["ort_level"] = acc.get("onnxruntime_optimization")
    row["reference"] = acc.get("reference")
    row["latency"] = dict(v.get("latency") or {})
    return row


def variant_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every variant of the report, FP32 first per model.

    Keys: name, model, precision, params, onnx_bytes, onnx_mb, top1, top1_fp32,
    delta_points (top-1 change vs the variant's FP32, in percentage points),
    agreement (top-1; nearest-neighbour for an embedding output), cosine_mean (embedding
    outputs only), max_abs_err, mean_abs_err (outputs vs FP32), kept_fp32,
    lowered_nodes (quantized for INT8, converted for FP16), ort_level,
    reference, latency (ONNX Runtime CPU stats by batch, where the bench stage
    timed the variant).
    """
    rows = {variant_name(m, "fp32"): _fp32_row(report, m) for m in MODELS
            if m in (report.get("benchmarks") or {})}
    for name, v in ((report.get("precision") or {}).get("variants") or {}).items():
        if isinstance(v, Mapping):
            rows[canonical(name)] = _precision_row(report, name, v)
    return [rows[n] for n in variant_order(rows)]


def pick_batch(latency: Mapping[str, Any], prefer: str = "1") -> str | None:
    """Batch 1 when measured, else the smallest measured batch."""
    if prefer in latency:
        return prefer
    batches = sorted((b for b in latency if str(b).isdigit()), key=int)
    return batches[0] if batches else None
