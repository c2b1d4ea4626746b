"""Condense the precision and build stage records for ``report.json``.

The raw records keep everything (calibration indices, activation scales, every
parser finding with its node list: ~100 kB on the digits model); the report keeps
what a reader compares — per variant accuracy, node counts, parser verdicts,
script and engine paths — so it stays small and readable. The raw records stay
in ``stages/`` for anyone who needs the detail.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..pipeline.records import BuildRecord, PrecisionRecord

#: Error messages kept per (variant, TensorRT version); the rest are counted.
MAX_MESSAGES = 5


def _conversion(conv: Mapping[str, Any]) -> dict[str, Any]:
    """Counts (not lists) of what the converter kept in FP32, quantized or converted."""
    details = conv.get("details") or {}
    kept = [k for k in conv.get("kept_fp32") or [] if isinstance(k, Mapping)]
    ops = Counter(str(k.get("op") or "?") for k in kept)
    excluded = details.get("excluded")
    return {
        "kept_fp32": len(kept),
        "kept_fp32_ops": dict(sorted(ops.items())),
        "quantized_nodes": details.get("quantized_nodes"),
        "nodes_fp16": details.get("nodes_fp16"),
        "nodes": details.get("nodes"),
        "method": details.get("method"),
        "backend": details.get("backend"),
        "excluded": len(excluded) if isinstance(excluded, list) else None,
        "calibration_cache": details.get("calibration_cache"),
        "warnings": [str(w) for w in details.get("warnings") or []],
    }


def summarize_precision(record: PrecisionRecord | Mapping[str, Any], *, source: str = "stages/precision.json",
                        fp32_optimization: str | None = None) -> dict[str, Any]:
    """The precision stage record minus bulky detail; ``fp32_optimization`` is the ORT level of the FP32 runs.
    A raw mapping is checked as a record first (errors name ``source``)."""
    rec = record if isinstance(record, PrecisionRecord) else PrecisionRecord.from_dict(record, source=source)
    out: dict[str, Any] = {
        "precisions": list(rec.precisions),
        "fp32": dict(rec.fp32),
        "fp32_onnxruntime_optimization": fp32_optimization,
        "calibration": rec.calibration,
        "evaluation": rec.evaluation,
        "variants": {},
    }
    for name, v in rec.variants.items():
        out["variants"][str(name)] = {
            "model": v.model, "precision": v.precision, "onnx": v.onnx, "onnx_bytes": v.onnx_bytes,
            "accuracy": v.accuracy, "conversion": _conversion(v.conversion),
        }
    return out


def _check(findings: Any) -> dict[str, Any]:
    """One parser-check verdict: ok, error/warning counts and the first error messages."""
    items = [f for f in findings or [] if isinstance(f, Mapping)]
    errors = [f for f in items if f.get("severity") == "error"]
    messages = []
    for f in errors[:MAX_MESSAGES]:
        nodes = [str(n) for n in f.get("nodes") or []]
        where = f" (nodes: {', '.join(nodes[:3])}{f', +{len(nodes) - 3} more' if len(nodes) > 3 else ''})" if nodes else ""
        messages.append(f"{f.get('message', f.get('code', 'error'))}{where}")
    return {"ok": not errors, "errors": len(errors),
            "warnings": sum(1 for f in items if f.get("severity") == "warning"), "messages": messages}


def summarize_build(record: BuildRecord | Mapping[str, Any], *, source: str = "stages/build.json") -> dict[str, Any]:
    """The build stage record with parser findings reduced to verdicts per (variant, TensorRT version).
    A raw mapping is checked as a record first (errors name ``source``)."""
    rec = record if isinstance(record, BuildRecord) else BuildRecord.from_dict(record, source=source)
    out: dict[str, Any] = {
        "tensorrt_installed": rec.tensorrt_installed,
        "target_versions": [str(v) for v in rec.target_versions],
        "skipped": rec.skipped,
        "variants": {},
    }
    for name, v in rec.variants.items():
        out["variants"][str(name)] = {
            "onnx": v.onnx,
            "checks": {str(ver): _check(f) for ver, f in v.parse_check.items()},
            "trtexec": {str(ver): p for ver, p in v.trtexec.items()},
            "engine": dict(v.engine) if v.engine is not None else None,
            "precision_mode": {str(ver): str(m) for ver, m in v.precision_mode.items()},
        }
    return out


def relative_to(path: Any, root: Any) -> str:
    """``path`` relative to ``root`` when it lies inside it (report tables stay short), else as given."""
    if not path:
        return ""
    try:
        return Path(str(path)).relative_to(Path(str(root))).as_posix() if root else str(path)
    except ValueError:
        return str(path)
