"""The run report: one JSON file for machines (stable keys, versioned schema)
and one Markdown file for people, built from the results of every stage.

Later stages reload ``report.json`` through :func:`load_report`, which
validates it, so a stale or hand-edited report fails with the missing key
named instead of a KeyError deep in the code.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._io import ensure_writable_dir, write_json_atomic, write_text_atomic
from ..errors import ArtifactError
from ..measure.environment import TOOL_NAME, environment_info, tool_version  # noqa: F401  (part of this module's API)
from ..measure.stats import LatencyStats

if TYPE_CHECKING:  # annotations only: report/merge stay importable without torch (device side)
    from ..measure.flops import FlopCount
    from ..measure.sizes import OnnxFileSize

#: 2: ``model.io`` (named inputs/outputs, dynamic axes) and ``shapes`` (the input shapes latency,
#: throughput and FLOPs were measured at). Version 1 reports are still read (:func:`upgrade_report`).
REPORT_SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
VARIANTS = ("original", "compressed")
BACKENDS = ("onnxruntime", "torch_eager")

#: Top-level keys in the order they are written.
REPORT_KEYS = ("schema_version", "tool", "model", "settings", "compression", "structured", "export", "verification",
               "benchmarks", "shapes", "comparison", "accuracy", "precision", "build", "charts", "automatic_choices",
               "environment", "artifacts")
#: Keys a report may lack (older reports, skipped stages) or hold as null; an object when set.
OPTIONAL_OBJECT_KEYS = ("precision", "build", "charts", "structured", "shapes")
#: Keys whose absence makes a report unusable (``accuracy`` may be null but must exist).
REQUIRED_KEYS = ("schema_version", "tool", "model", "compression", "export", "verification",
                 "benchmarks", "comparison", "accuracy", "automatic_choices", "environment")
REQUIRED_NESTED = (("tool", "version"), ("model", "name"), ("compression", "ratio"),
                   ("compression", "layers"), ("benchmarks", "original"), ("benchmarks", "compressed"))
#: Required from schema version 2 on.
REQUIRED_NESTED_V2 = (("model", "io"),)
VARIANT_KEYS = ("params", "flops", "onnx_size", "latency", "threads")


@dataclass
class VariantBenchmark:
    """Everything measured for one model variant ("original" or "compressed").

    ``latency`` maps backend → batch size → stats, e.g.
    ``{"onnxruntime": {1: LatencyStats, 8: LatencyStats}, "torch_eager": {...}}``.
    """

    params_torch: int
    params_onnx: int | None = None
    flops: FlopCount | None = None
    onnx_size: OnnxFileSize | None = None
    latency: Mapping[str, Mapping[int | str, LatencyStats | Mapping[str, Any]]] = field(default_factory=dict)
    threads: Mapping[str, int | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        latency = {str(backend): {str(b): to_plain(s)
                                  for b, s in sorted(per.items(), key=lambda kv: _batch_key(kv[0]))}
                   for backend, per in self.latency.items()}
        threads = dict(self.threads)
        for backend, per in latency.items():  # fall back to the count recorded in the stats
            if threads.get(backend) is None:
                threads[backend] = next((s.get("threads") for s in per.values() if s.get("threads")), None)
        return {
            "params": {"torch": int(self.params_torch),
                       "onnx": None if self.params_onnx is None else int(self.params_onnx)},
            "flops": to_plain(self.flops),
            "onnx_size": to_plain(self.onnx_size),
            "latency": latency,
            "threads": to_plain(threads),
        }


def to_plain(obj: Any) -> Any:
    """Convert dataclasses, numpy values, paths and dtypes to JSON-ready values.

    Non-finite floats become None, because strict JSON has no NaN/Infinity.
    """
    if obj is None or isinstance(obj, (bool, str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return to_plain(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_plain(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, np.generic):
        return to_plain(obj.item())
    if isinstance(obj, np.ndarray):
        return to_plain(obj.tolist())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return str(obj)  # torch.dtype, enums, ...: their readable name


def _variant(d: Any) -> dict[str, Any]:
    """Accept a VariantBenchmark, its to_dict() form, or its keyword arguments as a dict."""
    if isinstance(d, Mapping) and "params_torch" in d:
        d = VariantBenchmark(**d)
    if isinstance(d, VariantBenchmark):
        return d.to_dict()
    plain = to_plain(d)
    if not isinstance(plain, dict):
        raise ArtifactError(f"benchmark results must be a mapping, got {type(d).__name__}",
                            fix="pass VariantBenchmark objects (or their to_dict()) for each variant")
    out = {k: plain.get(k) for k in VARIANT_KEYS}
    out.update({k: v for k, v in plain.items() if k not in out})
    out["latency"] = out["latency"] or {}
    out["threads"] = out["threads"] or {}
    return out


def _batch_key(k: Any) -> tuple[int, int, str]:
    """Sort batch sizes numerically, anything unexpected after them."""
    s = str(k)
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


def _get(d: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(d, Mapping):
            return None
        d = d.get(key)
    return d


def _ratio(a: Any, b: Any) -> float | None:
    """compressed / original; None when either side is missing or original is 0."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and a != 0:
        return float(b) / float(a)
    return None


def _row(metric: str, key: str, original: Any, compressed: Any, ratio: bool = True) -> dict[str, Any]:
    return {"metric": metric, "key": key, "original": original, "compressed": compressed,
            "ratio": _ratio(original, compressed) if ratio else None}


def build_comparison(benchmarks: Mapping[str, Any], accuracy: Mapping[str, Any] | None,
                     shapes: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Side-by-side rows (metric | original | compressed | compressed/original) for the table.

    ``shapes`` (the bench stage's record) names the measured shapes in the labels of a model
    with more dynamic axes than the batch: ``onnxruntime batch 1 × sequence 128 p50 (ms)``.
    """
    from ..measure.shapes import shape_label

    orig, comp = benchmarks.get("original", {}), benchmarks.get("compressed", {})
    axes = (shapes or {}).get("axes") or {}
    at = f" ({', '.join(f'{k} {v}' for k, v in axes.items())})" if axes else ""
    rows = [
        _row("Parameters (PyTorch)", "params.torch", _get(orig, ["params", "torch"]), _get(comp, ["params", "torch"])),
        _row("Parameters (ONNX)", "params.onnx", _get(orig, ["params", "onnx"]), _get(comp, ["params", "onnx"])),
        _row(f"FLOPs / sample{at}", "flops.flops_per_sample",
             _get(orig, ["flops", "flops_per_sample"]), _get(comp, ["flops", "flops_per_sample"])),
        _row(f"MACs / sample{at}", "flops.macs_per_sample",
             _get(orig, ["flops", "macs_per_sample"]), _get(comp, ["flops", "macs_per_sample"])),
        _row("ONNX file size (MB)", "onnx_size.mb", _get(orig, ["onnx_size", "mb"]), _get(comp, ["onnx_size", "mb"])),
    ]
    lat_o, lat_c = orig.get("latency") or {}, comp.get("latency") or {}
    backends = [b for b in BACKENDS if b in lat_o or b in lat_c]
    backends += sorted((set(lat_o) | set(lat_c)) - set(BACKENDS))
    for backend in backends:
        batches = sorted(set(lat_o.get(backend, {})) | set(lat_c.get(backend, {})), key=_batch_key)
        for batch in batches:
            for stat, label in (("p50_ms", "p50 (ms)"), ("p90_ms", "p90 (ms)"), ("p99_ms", "p99 (ms)"),
                                ("throughput", "throughput (samples/s)")):
                path = [backend, batch, stat]
                rows.append(_row(f"{backend} {shape_label(shapes, batch)} {label}", f"latency.{backend}.{batch}.{stat}",
                                 _get(lat_o, path), _get(lat_c, path)))
    if accuracy:
        embedding = accuracy.get("scoring") == "embedding_probe" or accuracy.get("comparison") == "embedding"
        rows.append(_row("Top-1 accuracy", "accuracy.top1", accuracy.get("top1_reference"),
                         accuracy.get("top1_candidate")))
        rows.append(_row("Top-1 agreement with original", "accuracy.top1_agreement", None,
                         accuracy.get("top1_agreement"), ratio=False))
        if accuracy.get("neighbour_agreement") is not None:
            rows.append(_row("Nearest-neighbour agreement with original", "accuracy.neighbour_agreement", None,
                             accuracy.get("neighbour_agreement"), ratio=False))
        rows.append(_row(f"Mean {'embedding' if embedding else 'logit'} cosine vs original", "accuracy.cosine_mean",
                         None, accuracy.get("cosine_mean"), ratio=False))
    return rows


def build_report(*, model: Mapping[str, Any], compression: Mapping[str, Any], export: Mapping[str, Any] | None,
                 verification: Mapping[str, Any] | Sequence[Any] | None,
                 benchmarks: Mapping[str, VariantBenchmark | Mapping[str, Any]],
                 accuracy: Mapping[str, Any] | None = None, automatic_choices: Sequence[str] = (),
                 environment: Mapping[str, Any] | None = None, settings: Mapping[str, Any] | None = None,
                 artifacts: Mapping[str, Any] | None = None, precision: Mapping[str, Any] | None = None,
                 build: Mapping[str, Any] | None = None, charts: Mapping[str, Any] | None = None,
                 structured: Mapping[str, Any] | None = None, shapes: Mapping[str, Any] | None = None,
                 io: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Assemble the report dict (validated) from each stage's results.

    ``model`` is ``LoadedModel.describe()``; ``compression`` holds ``ratio``,
    ``layers`` (rows with name, shape, rank, params_before, params_after,
    rel_error) and ``totals``; ``benchmarks`` has "original" and "compressed".
    ``environment`` defaults to :func:`environment_info` now. ``precision`` and
    ``build`` are the condensed stage records (:mod:`.stage_summary`), None when
    the stage did not run; ``charts`` is the :mod:`.charts` record; ``structured`` the
    :func:`~.markdown_structured.summarize_structured` object of a ``--structure`` run.
    ``shapes`` is the bench stage's record of the measured input shapes; ``io`` the model's
    I/O description (``io_to_dict``), stored as ``model.io`` (taken from ``model`` when it has one,
    else one input ``model.input_name`` with a dynamic batch).
    """
    missing = [v for v in VARIANTS if v not in benchmarks]
    if missing:
        raise ArtifactError(f"benchmark results for {missing} are missing",
                            fix="benchmark both the original and the compressed model before reporting")
    bench = {v: _variant(benchmarks[v]) for v in VARIANTS}
    acc = to_plain(accuracy)
    model_d = to_plain(model) or {}
    if io is not None:
        model_d["io"] = to_plain(io)
    model_d.setdefault("io", io_of_v1_model(model_d))
    shapes_d = to_plain(shapes)
    comp = to_plain(compression) or {}
    comp.setdefault("layers", [])
    comp.setdefault("totals", {})
    report = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "tool": {"name": TOOL_NAME, "version": tool_version()},
        "model": model_d,
        "settings": to_plain(settings) or {},
        "compression": comp,
        "structured": to_plain(structured),
        "export": to_plain(export) or {},
        "verification": to_plain(verification) or {},
        "benchmarks": bench,
        "shapes": shapes_d,
        "comparison": build_comparison(bench, acc, shapes_d),
        "accuracy": acc,
        "precision": to_plain(precision),
        "build": to_plain(build),
        "charts": to_plain(charts),
        "automatic_choices": [str(c) for c in automatic_choices],
        "environment": to_plain(environment) if environment is not None else environment_info(),
        "artifacts": to_plain(artifacts) or {},
    }
    return validate_report(report)


def _missing(key: str) -> ArtifactError:
    return ArtifactError(f"report is missing required key {key!r}",
                         fix="re-run the full pipeline to regenerate report.json (it is stale or was edited)")


def validate_report(d: Any) -> dict[str, Any]:
    """Check schema version and required keys; returns ``d`` for chaining."""
    if not isinstance(d, Mapping):
        raise ArtifactError(f"report must be a JSON object, got {type(d).__name__}",
                            fix="re-run the full pipeline to regenerate report.json")
    if "schema_version" not in d:
        raise _missing("schema_version")
    version = d["schema_version"]
    if isinstance(version, bool) or version not in READABLE_SCHEMA_VERSIONS:
        raise ArtifactError(f"report schema_version is {version!r}, this tool reads "
                            f"{', '.join(map(str, READABLE_SCHEMA_VERSIONS))}",
                            fix="regenerate the report with this version of pela-export (or use the matching version)")
    for key in REQUIRED_KEYS:
        if key not in d:
            raise _missing(key)
    for path in REQUIRED_NESTED + (REQUIRED_NESTED_V2 if version >= 2 else ()):
        parent = _get(d, path[:-1])
        if not isinstance(parent, Mapping) or path[-1] not in parent:
            raise _missing(".".join(path))
    for variant in VARIANTS:
        entry = d["benchmarks"][variant]
        if not isinstance(entry, Mapping):
            raise ArtifactError(f"report key 'benchmarks.{variant}' must be an object",
                                fix="re-run the full pipeline to regenerate report.json")
        for key in VARIANT_KEYS:
            if key not in entry:
                raise _missing(f"benchmarks.{variant}.{key}")
    if not isinstance(d["automatic_choices"], list) or not all(isinstance(c, str) for c in d["automatic_choices"]):
        raise ArtifactError("report key 'automatic_choices' must be a list of strings",
                            fix="re-run the full pipeline to regenerate report.json")
    for key in OPTIONAL_OBJECT_KEYS:
        if d.get(key) is not None and not isinstance(d[key], Mapping):
            raise ArtifactError(f"report key {key!r} must be an object or null, got {type(d[key]).__name__}",
                                fix="re-run the full pipeline to regenerate report.json")
    if not isinstance(d["compression"]["layers"], list):
        raise ArtifactError("report key 'compression.layers' must be a list",
                            fix="re-run the full pipeline to regenerate report.json")
    io = _get(d, ["model", "io"])
    if io is not None and not (isinstance(io, Mapping) and isinstance(io.get("inputs"), list)
                               and isinstance(io.get("outputs"), list)):
        raise ArtifactError("report key 'model.io' must be an object with 'inputs' and 'outputs' lists",
                            fix="re-run the full pipeline to regenerate report.json")
    return d  # type: ignore[return-value]


def io_of_v1_model(model: Mapping[str, Any]) -> dict[str, Any]:
    """The I/O description a version-1 report implies: its one input (batch dynamic) and one output."""
    shape = model.get("input_shape") if isinstance(model.get("input_shape"), list) else []
    return {"inputs": [{"name": str(model.get("input_name") or "input"), "dtype": str(model.get("input_dtype") or "float32"),
                        "shape": ["batch", *shape], "role": "tensor"}],
            "outputs": [{"name": str(model.get("output_name") or "logits"), "dtype": "float32", "shape": ["batch"],
                         "role": "logits"}],
            "axes": {"batch": {"min": 1, "opt": 1, "max": 32}}}


def upgrade_report(d: Mapping[str, Any]) -> dict[str, Any]:
    """A validated report in the current schema: version 1 gains ``model.io`` (its one input and
    output, batch dynamic) and ``shapes`` null; a current report is returned as it is."""
    out = dict(validate_report(d))
    if out["schema_version"] == REPORT_SCHEMA_VERSION:
        return out
    out["model"] = {**out["model"], "io": io_of_v1_model(out["model"])}
    out.setdefault("shapes", None)
    out["upgraded_from_schema_version"] = out["schema_version"]
    out["schema_version"] = REPORT_SCHEMA_VERSION
    return validate_report(ordered(out))


def ordered(report: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level keys in :data:`REPORT_KEYS` order, unknown extras last (sorted)."""
    out = {k: report[k] for k in REPORT_KEYS if k in report}
    out.update({k: report[k] for k in sorted(report) if k not in out})
    return out


def write_report(report: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Validate, then atomically write ``report.json`` and ``report.md`` into ``out_dir``."""
    from .markdown import render_markdown  # noqa: PLC0415  (markdown imports this module)

    data = dict(report)
    data.setdefault("schema_version", REPORT_SCHEMA_VERSION)
    data.setdefault("tool", {"name": TOOL_NAME, "version": tool_version()})
    data = ordered(to_plain(data))
    validate_report(data)
    out = ensure_writable_dir(out_dir)
    json_path = write_json_atomic(out / REPORT_JSON, data)
    md_path = write_text_atomic(out / REPORT_MD, render_markdown(data))
    return json_path, md_path


def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a report.json (``path`` may be the file or its directory).

    A version-1 report (written before ``model.io`` and ``shapes``) is returned upgraded
    to the current schema (:func:`upgrade_report`).
    """
    p = Path(path)
    if p.is_dir():
        p = p / REPORT_JSON
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"report {str(p)!r} does not exist",
                            fix="run the full pipeline first so report.json is written") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"cannot read report {str(p)!r}: {exc}",
                            fix="re-run the full pipeline to regenerate report.json") from None
    return upgrade_report(data)
