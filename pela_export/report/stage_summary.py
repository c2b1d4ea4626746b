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

from ..errors import ArtifactError

#: Error messages kept per (variant, TensorRT version); the rest are counted.
MAX_MESSAGES = 5


def _mapping(value: Any, what: str, source: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ArtifactError(f"{source}: {what} must be a JSON object, got {type(value).__name__}",
                            fix="re-run that stage to regenerate its record (it is stale or was edited)")
    return value


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


def summarize_precision(record: Mapping[str, Any], *, source: str = "stages/precision.json",
                        fp32_optimization: str | None = None) -> dict[str, Any]:
    """The precision stage record minus bulky detail; ``fp32_optimization`` is the ORT level of the FP32 runs."""
    _mapping(record, "the precision record", source)
    variants = _mapping({} if record.get("variants") is None else record["variants"], "'variants'", source)
    out: dict[str, Any] = {
        "precisions": list(record.get("precisions") or []),
        "fp32": dict(record.get("fp32") or {}),
        "fp32_onnxruntime_optimization": fp32_optimization,
        "calibration": record.get("calibration"),
        "evaluation": record.get("evaluation"),
        "variants": {},
    }
    for name, v in variants.items():
        v = _mapping(v, f"variant {name!r}", source)
        out["variants"][str(name)] = {
            "model": v.get("model"), "precision": v.get("precision"), "onnx": v.get("onnx"),
            "onnx_bytes": v.get("onnx_bytes"), "accuracy": v.get("accuracy"),
            "conversion": _conversion(v.get("conversion") or {}),
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


def summarize_build(record: Mapping[str, Any], *, source: str = "stages/build.json") -> dict[str, Any]:
    """The build stage record with parser findings reduced to verdicts per (variant, TensorRT version)."""
    _mapping(record, "the build record", source)
    variants = _mapping({} if record.get("variants") is None else record["variants"], "'variants'", source)
    out: dict[str, Any] = {
        "tensorrt_installed": record.get("tensorrt_installed"),
        "target_versions": [str(v) for v in record.get("target_versions") or []],
        "skipped": record.get("skipped"),
        "variants": {},
    }
    for name, v in variants.items():
        v = _mapping(v, f"variant {name!r}", source)
        checks = _mapping({} if v.get("parse_check") is None else v["parse_check"], f"'{name}.parse_check'", source)
        engine = v.get("engine")
        out["variants"][str(name)] = {
            "onnx": v.get("onnx"),
            "checks": {str(ver): _check(f) for ver, f in checks.items()},
            "trtexec": {str(ver): p for ver, p in (v.get("trtexec") or {}).items()},
            "engine": dict(engine) if isinstance(engine, Mapping) else None,
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
