"""report.json/report.md sections for precision variants and the TensorRT stage, and
the report stage loading the optional precision/build records."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bench_records import (
    PARAMS,
    benchmarks,
    build_record,
    layers,
    precision_record,
    workstation_report,
)

from pela_export._io import write_json_atomic
from pela_export.report import render_markdown, validate_report, write_report
from pela_export.report.stage_summary import summarize_build, summarize_precision
from pela_export.report.variants import variant_rows
from pela_export.errors import ArtifactError

PRECISION_ROWS = [
    "| `original.fp32` | 200,000 | 0.800 | 96.00% | reference | reference | — | 2.000 | — | — | all |",
    "| `original.fp16` | 200,000 | 0.400 | 95.00% | -1.00 | 98.00% | 0.0123 | — | 3 | 140 | all |",
    "| `original.int8` | 200,000 | 0.820 | 95.50% | -0.50 | 99.00% | 0.15 | — | 2 | 18 | basic |",
    "| `compressed.fp32` | 100,000 | 0.420 | 95.50% | reference | reference | — | 1.600 | — | — | all |",
    "| `compressed.fp16` | 100,000 | 0.210 | 95.50% | +0.00 | 100.00% | 0.003 | — | 3 | 160 | all |",
    "| `compressed.int8` | 100,000 | 0.430 | 94.50% | -1.00 | 97.50% | 0.44 | — | 2 | 34 | basic |",
]


def test_precision_section_rows() -> None:
    md = render_markdown(workstation_report())
    assert "## Precision variants (ONNX Runtime, CPU)" in md
    assert ("| Variant | Params | ONNX MB | Top-1 | Δ vs FP32 (points) | Top-1 agreement | Max abs logit err | "
            "p50 ms (b=1, CPU) | Nodes kept FP32 | Nodes quantized / FP16 | ORT optimization |") in md
    positions = []
    for row in PRECISION_ROWS:
        assert row in md, row
        positions.append(md.index(row))
    assert positions == sorted(positions)  # original first, fp32 → fp16 → int8
    assert "- `original.fp16` kept in FP32: LayerNormalization ×2, Softmax ×1" in md
    assert "- `compressed.fp16` warning: one tensor overflowed" in md
    assert "evaluated on digits test split (450 samples); INT8 calibrated on digits train split" in md
    assert "Mean abs logit err" not in md  # not recorded → no empty column


def test_mean_error_column_when_recorded() -> None:
    record = precision_record()
    record["variants"]["compressed.int8"]["accuracy"]["mean_abs_diff"] = 0.0421
    md = render_markdown(workstation_report(precision=summarize_precision(record)))
    assert "| Max abs logit err | Mean abs logit err |" in md
    assert "| `compressed.int8` | 100,000 | 0.430 | 94.50% | -1.00 | 97.50% | 0.44 | 0.0421 | — | 2 | 34 | basic |" in md
    assert "| `compressed.fp16` | 100,000 | 0.210 | 95.50% | +0.00 | 100.00% | 0.003 | — | — | 3 | 160 | — |" not in md


def test_variant_rows_numbers() -> None:
    rows = {r["name"]: r for r in variant_rows(workstation_report())}
    assert list(rows) == ["original.fp32", "original.fp16", "original.int8",
                          "compressed.fp32", "compressed.fp16", "compressed.int8"]
    assert rows["compressed.int8"]["delta_points"] == pytest.approx(-1.0)
    assert rows["compressed.int8"]["params"] == PARAMS["compressed"]
    assert rows["original.fp32"]["latency"]["1"]["p50_ms"] == 2.0
    assert rows["original.int8"]["latency"] == {}  # precision variants are not timed on the workstation
    # without a precision record the FP32 top-1 comes from the bench's accuracy
    bare = {r["name"]: r for r in variant_rows(workstation_report(precision=False))}
    assert list(bare) == ["original.fp32", "compressed.fp32"]
    assert bare["original.fp32"]["top1"] == 0.96 and bare["compressed.fp32"]["top1"] == 0.955


def test_precision_variant_latency_from_the_bench_stage() -> None:
    """A variant the bench stage timed shows its batch-1 p50 and joins the latency chart's rows."""
    report = workstation_report()
    report["precision"]["variants"]["compressed.int8"]["latency"] = {
        "1": {"n_runs": 30, "batch": 1, "mean_ms": 0.9, "p50_ms": 0.75, "p90_ms": 1.0, "p99_ms": 1.2}}
    md = render_markdown(report)
    assert "| `compressed.int8` | 100,000 | 0.430 | 94.50% | -1.00 | 97.50% | 0.44 | 0.75 | 2 | 34 | basic |" in md
    rows = {r["name"]: r for r in variant_rows(report)}
    assert rows["compressed.int8"]["latency"]["1"]["p50_ms"] == 0.75
    assert rows["compressed.fp16"]["latency"] == {}


def test_tensorrt_section_without_tensorrt() -> None:
    md = render_markdown(workstation_report())
    section = md[md.index("## TensorRT"):]
    assert "**No engine built.** TensorRT Python bindings are not installed here" in section
    assert "| Variant | TensorRT 8.6 | TensorRT 10.3 |\n" in section  # no Engine column
    assert "| `original.fp32` | ok (1 warning) | ok (1 warning) |" in section
    assert "| `compressed.int8` | **2 errors** | ok (1 warning) |" in section
    assert "e.g. `engines/8.6/original.trtexec.sh`" in section
    assert "Equivalent `trtexec` builds: 11 scripts" in section  # 6 variants x 2 versions, minus the rejected one
    assert ("- `compressed.int8` on TensorRT 8.6: DequantizeLinear: per-channel axis unsupported (nodes: "
            "node_DequantizeLinear_0, node_DequantizeLinear_1, node_DequantizeLinear_2, +2 more)") in section
    assert section.count("| `original.fp16` |") == 1  # one row per variant, a column per version


def test_tensorrt_section_with_engines() -> None:
    report = workstation_report(build=summarize_build(build_record(installed="10.3.0")))
    md = render_markdown(report)
    assert "TensorRT 10.3.0 is installed: engines built for it." in md
    assert "| Variant | TensorRT 10.3.0 | Engine (10.3.0) |" in md
    assert "| `original.fp16` | ok (1 warning) | yes (1.50 MB, fp16) |" in md


def test_report_json_keeps_summaries_not_bulk(tmp_path: Path) -> None:
    json_path, _ = write_report(workstation_report(str(tmp_path)), tmp_path)
    text = json_path.read_text()
    data = json.loads(text)
    assert "activation_scales" not in text and '"indices"' not in text  # bulky calibration detail stays in stages/
    conv = data["precision"]["variants"]["original.int8"]["conversion"]
    assert conv["quantized_nodes"] == 18 and conv["kept_fp32"] == 2 and conv["kept_fp32_ops"] == {"MatMul": 2}
    check = data["build"]["variants"]["compressed.int8"]["checks"]["8.6"]
    assert (check["ok"], check["errors"], check["warnings"]) == (False, 2, 1)
    assert data["build"]["variants"]["compressed.int8"]["trtexec"] == {
        "10.3": f"{tmp_path}/engines/10.3/compressed.int8.trtexec.sh"}
    keys = list(data)
    assert keys.index("accuracy") < keys.index("precision") < keys.index("build") < keys.index("automatic_choices")


def test_old_reports_without_sections_still_validate() -> None:
    report = workstation_report()
    for key in ("precision", "build", "charts"):
        del report[key]
    validate_report(report)
    md = render_markdown(report)
    assert "_Precision stage not run in this output directory" in md
    assert "_Build stage not run in this output directory" in md
    assert "## Charts" not in md
    empty = workstation_report(precision={"precisions": [], "variants": {}})
    assert "_FP32 only: no FP16/INT8 variants were requested" in render_markdown(empty)


@pytest.mark.parametrize("key", ["precision", "build", "charts"])
def test_optional_key_of_wrong_type_is_named(key: str) -> None:
    with pytest.raises(ArtifactError, match=f"report key '{key}' must be an object or null, got list"):
        validate_report({**workstation_report(), key: []})


def test_malformed_stage_record_is_named() -> None:
    with pytest.raises(ArtifactError, match=r"stages/precision.json: 'variants' must be a JSON object, got list"):
        summarize_precision({"variants": []})
    with pytest.raises(ArtifactError, match=r"b.json: variant 'original' must be a JSON object"):
        summarize_build({"variants": {"original": 3}}, source="b.json")


class _Loaded:
    """The two LoadedModel members the report stage reads (no model is built)."""

    @property
    def extra(self) -> dict[str, Any]:
        return {"test_accuracy": 0.99, "cache_path": "/c"}

    def describe(self) -> dict[str, Any]:
        return {"name": "digits-vit", "source": "default:digits", "family": "timm-vit", "input_name": "input",
                "output_name": "logits", "input_shape": [1, 16, 16], "input_shape_origin": "recipe",
                "input_dtype": "float32", "num_classes": 10}


def _context(root: Path, *, optional: bool) -> Any:
    from pela_export.pipeline.config import Artifacts, RunConfig
    from pela_export.pipeline.context import Context

    ctx = Context(RunConfig.of(out=str(root)), _Loaded(), Artifacts(root))  # type: ignore[arg-type]
    records = {
        "compress": {"compression": {"ratio": 2.0, "layers": layers(), "totals": {}}, "params": PARAMS, "artifacts": {}},
        "export": {"export": {}, "verification": {}, "final_onnx": {}, "raw_onnx": {}},
        "bench": {"benchmarks": benchmarks(), "accuracy": {"top1_reference": 0.96, "top1_candidate": 0.955},
                  "onnxruntime_session": {"graph_optimization": "all"}},
    }
    if optional:
        records |= {"precision": precision_record(str(root)), "build": build_record(str(root))}
    for name, record in records.items():
        write_json_atomic(ctx.artifacts.stage_record(name), {"stage": name, **record})
    return ctx


def test_report_stage_loads_precision_and_build(tmp_path: Path) -> None:
    from pela_export.pipeline.report import report_stage

    json_path, md_path = report_stage(_context(tmp_path, optional=True))
    data = json.loads(json_path.read_text())
    assert set(data["precision"]["variants"]) == {"original.fp16", "original.int8", "compressed.fp16", "compressed.int8"}
    assert data["precision"]["fp32_onnxruntime_optimization"] == "all"
    assert data["build"]["target_versions"] == ["8.6", "10.3"]
    assert [c["path"] for c in data["charts"]["files"]] == ["charts/variants.png", "charts/ranks.png",
                                                             "charts/latency.png"]
    assert all((tmp_path / c["path"]).is_file() for c in data["charts"]["files"])
    assert "INT8 scales by percentile 99.99" in data["automatic_choices"]  # the precision record's choices merged
    md = md_path.read_text()
    for row in PRECISION_ROWS:
        assert row in md
    assert "| `compressed.int8` | **2 errors** | ok (1 warning) |" in md
    assert "![Per-layer ranks and kept parameters](charts/ranks.png)" in md


def test_report_stage_without_optional_records(tmp_path: Path) -> None:
    from pela_export.pipeline.report import report_stage

    json_path, md_path = report_stage(_context(tmp_path, optional=False))
    data = json.loads(json_path.read_text())
    assert data["precision"] is None and data["build"] is None
    md = md_path.read_text()
    assert "_Precision stage not run" in md and "_Build stage not run" in md
    assert "| `compressed.fp32` | 100,000 | 0.420 | 95.50% | reference | reference | — | 1.600 | — | — | — |" in md


def test_tensorrt_section_says_how_precision_is_kept() -> None:
    assert "How each build keeps the graph's precision" not in render_markdown(workstation_report())  # old records
    raw = build_record()
    raw["variants"]["compressed.fp16"]["precision_mode"] = {
        "8.6": "weakly typed, prefer: 3 node(s) the graph keeps FP32 pinned to FP32, builder flags FP16 elsewhere",
        "10.3": "strongly typed: every layer runs in the type the ONNX graph gives it"}
    md = render_markdown(workstation_report(build=summarize_build(raw)))
    assert ("- `compressed.fp16`: TensorRT 8.6: weakly typed, prefer: 3 node(s) the graph keeps FP32 pinned to FP32, "
            "builder flags FP16 elsewhere; TensorRT 10.3: strongly typed") in md
