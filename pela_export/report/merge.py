"""`pela-export report`: merge the workstation report with device reports into
one comparison (``comparison.json`` + ``comparison.md`` + charts).

Inputs are checked before anything is merged — a missing file, a file of the
wrong kind or schema version, or a device report measured on another model (or
another compression of it) is named with the fix — because a comparison that
silently mixes two runs is worse than none.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._io import ensure_writable_dir, sha256_file, write_json_atomic, write_text_atomic
from ..errors import ArtifactError
from .document import REPORT_JSON, TOOL_NAME, tool_version, validate_report
from .variants import split_variant, variant_order, variant_rows

DEVICE_REPORT_JSON = "device-report.json"
DEVICE_REPORT_KIND = "pela-export-device-report"
COMPARISON_JSON = "comparison.json"
COMPARISON_MD = "comparison.md"
COMPARISON_KIND = "pela-export-comparison"
COMPARISON_SCHEMA_VERSION = 1
WORKSTATION = "workstation (ONNX Runtime, CPU)"
STATS = ("p50_ms", "p90_ms", "p99_ms", "throughput")
DEVICE_FIX = "re-run `pela-export device-bench BUNDLE` on the device with this version of pela-export"


def _read_json(path: Path, what: str, fix: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{what} {str(path)!r} does not exist", fix=fix) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"cannot read {what} {str(path)!r}: {exc}", fix=fix) from None


def load_workstation(path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """(report.json path, validated report) from a run directory or its report.json."""
    p = Path(path)
    if p.is_dir():
        p = p / REPORT_JSON
    fix = "pass the --out directory of `pela-export run` (it holds report.json), or that report.json"
    data = _read_json(p, "workstation report", fix)
    if isinstance(data, Mapping) and data.get("kind") == DEVICE_REPORT_KIND:
        raise ArtifactError(f"{p} is a device report, not the workstation report",
                            fix="pass the run directory (or its report.json) first, then the device-report.json files")
    try:
        return p, validate_report(data)
    except ArtifactError as exc:
        raise ArtifactError(f"workstation report {p}: {exc.problem}", fix=exc.fix) from None


def find_device_reports(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """device-report.json files: given directly, in a given directory, or anywhere below it."""
    if not paths:
        raise ArtifactError("no device report given",
                            fix="pass at least one device-report.json (written by `pela-export device-bench`)")
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            hits = [p / DEVICE_REPORT_JSON] if (p / DEVICE_REPORT_JSON).is_file() else sorted(p.rglob(DEVICE_REPORT_JSON))
            if not hits:
                raise ArtifactError(f"no {DEVICE_REPORT_JSON} in directory {str(p)!r}",
                                    fix="pass the device-report.json written by `pela-export device-bench`, "
                                        "or the directory it was written to")
            found += hits
        elif not p.is_file():
            raise ArtifactError(f"device report {str(p)!r} does not exist",
                                fix="copy device-report.json back from the device and pass its path")
        else:
            found.append(p)
    unique: dict[Path, Path] = {}
    for p in found:
        unique.setdefault(p.resolve(), p)
    return list(unique.values())


def load_device_report(path: Path) -> dict[str, Any]:
    """Read one device-report.json: kind and schema version first (the common mix-ups, named plainly),
    then the full schema check of :mod:`pela_export.runtime.schema`, shared with ``device-bench``."""
    # torch-free: the writer's own validator
    from ..runtime.schema import DEVICE_REPORT_SCHEMA_READABLE, validate_device_report

    data = _read_json(path, "device report", "copy device-report.json back from the device and pass its path")
    if not isinstance(data, Mapping):
        raise ArtifactError(f"device report {path} must be a JSON object, got {type(data).__name__}", fix=DEVICE_FIX)
    kind = data.get("kind")
    if kind != DEVICE_REPORT_KIND:
        looks_like = " (it looks like a workstation report.json)" if "benchmarks" in data and "compression" in data else ""
        raise ArtifactError(f"{path} has kind {kind!r}, expected {DEVICE_REPORT_KIND!r}{looks_like}",
                            fix="pass the workstation run directory first and device-report.json files after it")
    if data.get("schema_version") not in DEVICE_REPORT_SCHEMA_READABLE:  # the writer's table, not a second one
        readable = " and ".join(str(v) for v in DEVICE_REPORT_SCHEMA_READABLE)
        raise ArtifactError(f"device report {path} has schema_version {data.get('schema_version')!r}, "
                            f"this tool reads {readable}", fix=DEVICE_FIX)
    validate_device_report(data, where=str(path))
    if not data["variants"]:
        raise ArtifactError(f"device report {path} has no variants", fix=DEVICE_FIX)
    return dict(data)


def _params(report: Mapping[str, Any], model: str) -> int | None:
    params = ((report.get("benchmarks") or {}).get(model) or {}).get("params") or {}
    value = params.get("onnx") if params.get("onnx") is not None else params.get("torch")
    return value if isinstance(value, int) else None


def check_same_model(ws: Mapping[str, Any], ws_path: Path, dev: Mapping[str, Any], dev_path: Path) -> None:
    """Refuse a device report from another model, or from another compression of the same model."""
    ws_model, dev_model = (ws.get("model") or {}).get("name"), dev["bundle"]["model"]
    fix = ("pass the device-report.json made from this run's bundle (`pela-export package` in the same --out, "
           "then `pela-export device-bench` on the device), or the run directory the bundle came from")
    if ws_model != dev_model:
        raise ArtifactError(f"device report {dev_path} was measured on model {dev_model!r}, but the workstation "
                            f"report {ws_path} is for {ws_model!r}", fix=fix)
    for name, v in dev["variants"].items():
        model = str(v.get("model") or split_variant(name)[0])
        expected, got = _params(ws, model), v.get("params")
        counts = ((ws.get("benchmarks") or {}).get(model) or {}).get("params") or {}
        known = {c for c in counts.values() if isinstance(c, int)}  # PyTorch and ONNX counts (folding may differ)
        if isinstance(got, int) and expected is not None and got not in known:
            raise ArtifactError(f"device report {dev_path}: variant {name!r} has {got:,} parameters but the "
                                f"workstation report {ws_path} has {expected:,} for {model!r} (a different "
                                "compression of the same model, e.g. another --ratio)", fix=fix)


def device_label(dev: Mapping[str, Any], index: int) -> str:
    """"<GPU> (<hostname>)" — what a reader recognises a device by."""
    device = dev.get("device") or {}
    gpu = (device.get("gpu") or {}).get("name") if isinstance(device.get("gpu"), Mapping) else None
    host = device.get("hostname")
    if gpu and host:
        return f"{gpu} ({host})"
    return str(gpu or host or f"device {index + 1}")


def backend_label(device: Mapping[str, Any], variant: Mapping[str, Any]) -> str:
    """"TensorRT 10.3.0", or "ONNX Runtime 1.31.1 (fallback)" where the device had no TensorRT."""
    backend = variant.get("backend") or device.get("backend")
    if backend == "tensorrt":
        return f"TensorRT {device.get('tensorrt') or '?'}"
    if backend == "onnxruntime":
        label = " ".join(x for x in ("ONNX Runtime", device.get("onnxruntime")) if x)
        return label + (" (fallback)" if device.get("backend") != "tensorrt" or device.get("fallback_reason") else "")
    return str(backend or "?")


def _golden(golden: Any) -> dict[str, Any] | None:
    if not isinstance(golden, Mapping):
        return None
    errors = [o.get("max_abs_err") for o in (golden.get("outputs") or {}).values()
              if isinstance(o, Mapping) and isinstance(o.get("max_abs_err"), (int, float))]
    return {"ok": bool(golden.get("ok")), "max_abs_err": max(errors) if errors else None,
            "tolerance": golden.get("tolerance")}


def _latency(latency: Any) -> dict[str, dict[str, Any]]:
    """p50/p90/p99/throughput (+ n_runs) per batch; raw samples stay in the device report."""
    return {str(b): {k: s.get(k) for k in ("n_runs", *STATS)}
            for b, s in (latency or {}).items() if isinstance(s, Mapping)}


def _add_speedups(variants: dict[str, dict[str, Any]], source: str) -> None:
    """speedup_vs_original = original p50 / compressed p50, same precision, batch and device."""
    for name, v in variants.items():
        model, precision = split_variant(name)
        if model != "compressed":
            continue
        base = variants.get(f"original.{precision}") or {}
        comp = v["workstation"] if source == WORKSTATION else v["devices"].get(source)
        orig = base.get("workstation") if source == WORKSTATION else (base.get("devices") or {}).get(source)
        for batch, stats in ((comp or {}).get("latency") or {}).items():
            o = (((orig or {}).get("latency") or {}).get(batch) or {}).get("p50_ms")
            c = stats.get("p50_ms")
            ok = isinstance(o, (int, float)) and isinstance(c, (int, float)) and c > 0
            stats["speedup_vs_original"] = float(o) / float(c) if ok else None


def _bundle_note(ws_path: Path, dev: Mapping[str, Any], dev_path: Path) -> str | None:
    deploy = ws_path.parent / "bundle" / "deploy.json"
    recorded = (dev.get("bundle") or {}).get("deploy_sha256")
    if not deploy.is_file() or not recorded or sha256_file(deploy) == recorded:
        return None
    return (f"{dev_path}: measured on a bundle whose deploy.json differs from {deploy} "
            "(the bundle was re-packaged since; numbers are from the older bundle)")


def build_comparison(ws_path: Path, ws: Mapping[str, Any],
                     devices: Sequence[tuple[Path, Mapping[str, Any]]]) -> dict[str, Any]:
    """The comparison dict: devices, then per variant the workstation facts and each device's results."""
    rows = {r["name"]: r for r in variant_rows(ws)}
    labels: list[str] = []
    bases: list[str] = []
    dev_entries, notes = [], []
    for i, (path, dev) in enumerate(devices):
        base = device_label(dev, i)
        label = base if base not in bases else f"{base} #{bases.count(base) + 1}"  # the same device measured twice
        bases.append(base)
        labels.append(label)
        d = dev.get("device") or {}
        dev_entries.append({"id": label, "report": str(path), "created_at": dev.get("created_at"),
                            **{k: d.get(k) for k in ("hostname", "platform", "cpu", "gpu", "tensorrt", "cuda",
                                                     "onnxruntime", "jetson", "backend", "fallback_reason")},
                            # schema-2 device reports keep the driver's, the toolkit's and cuda-python's CUDA apart
                            **{k: d[k] for k in ("cuda_driver", "cuda_toolkit", "cuda_python") if k in d},
                            "bundle_deploy_sha256": (dev.get("bundle") or {}).get("deploy_sha256")})
        note = _bundle_note(ws_path, dev, path)
        if note:
            notes.append(note)
    names = variant_order(list(rows) + [n for _, dev in devices for n in dev["variants"]])
    variants: dict[str, dict[str, Any]] = {}
    for name in names:
        model, precision = split_variant(name)
        row = rows.get(name) or {}
        entry: dict[str, Any] = {
            "model": model, "precision": precision, "params": row.get("params"), "onnx_mb": row.get("onnx_mb"),
            "cpu_accuracy": {k: row.get(k) for k in ("top1", "top1_fp32", "delta_points", "agreement")} if row else None,
            "workstation": {"backend": "ONNX Runtime (CPU)", "latency": _latency(row["latency"])}
            if row.get("latency") else None,
            "devices": {},
        }
        for label, (_, dev) in zip(labels, devices):
            v = dev["variants"].get(name)
            if v is None and precision == "fp32":  # the build stage's bare "original"/"compressed"
                v = dev["variants"].get(model)
            if not isinstance(v, Mapping):
                continue
            entry["params"] = entry["params"] if entry["params"] is not None else v.get("params")
            if entry["onnx_mb"] is None and isinstance(v.get("onnx_bytes"), (int, float)):
                entry["onnx_mb"] = float(v["onnx_bytes"]) / 1e6
            if entry["cpu_accuracy"] is None and isinstance(v.get("cpu_accuracy"), Mapping):
                entry["cpu_accuracy"] = {"top1": v["cpu_accuracy"].get("top1"), "top1_fp32": None,
                                         "delta_points": None, "agreement": v["cpu_accuracy"].get("top1_agreement")}
            entry["devices"][label] = {"backend": backend_label(dev.get("device") or {}, v),
                                       "golden": _golden(v.get("golden")), "latency": _latency(v.get("latency")),
                                       "engine": v.get("engine") if isinstance(v.get("engine"), Mapping) else None}
        variants[name] = entry
    for source in [WORKSTATION, *labels]:
        _add_speedups(variants, source)
    model = ws.get("model") or {}
    env = ws.get("environment") or {}
    return {
        "schema_version": COMPARISON_SCHEMA_VERSION, "kind": COMPARISON_KIND,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tool": {"name": TOOL_NAME, "version": tool_version()},
        "model": {"name": model.get("name"), "source": model.get("source")},
        "workstation": {"report": str(ws_path), "backend": "ONNX Runtime (CPU)",
                        **{k: env.get(k) for k in ("date", "platform", "usable_cpus", "onnxruntime")}},
        "devices": dev_entries, "variants": variants, "notes": notes, "charts": None,
    }


def merge_reports(workstation: str | os.PathLike[str], device_reports: Sequence[str | os.PathLike[str]],
                  out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Validate the inputs, then write ``comparison.json`` + ``comparison.md`` (+ charts) into ``out_dir``."""
    from .merge_charts import comparison_charts_record
    from .merge_markdown import render_comparison

    ws_path, ws = load_workstation(workstation)
    devices = []
    for path in find_device_reports(device_reports):
        dev = load_device_report(path)
        check_same_model(ws, ws_path, dev, path)
        devices.append((path, dev))
    comparison = build_comparison(ws_path, ws, devices)
    out = ensure_writable_dir(out_dir)
    comparison["charts"] = comparison_charts_record(comparison, [d for _, d in devices], out)
    json_path = write_json_atomic(out / COMPARISON_JSON, comparison)
    md_path = write_text_atomic(out / COMPARISON_MD, render_comparison(comparison))
    return json_path, md_path
