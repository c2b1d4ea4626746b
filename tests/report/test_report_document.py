"""Report build → write → reload round trip, and validation errors."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pela_export.measure import FlopCount, LatencyStats, OnnxFileSize, environment_info, tool_version
from pela_export.report import REPORT_SCHEMA_VERSION, VariantBenchmark, build_report, load_report, render_markdown, validate_report, write_report
from pela_export.report.document import REPORT_KEYS
from pela_export.errors import ArtifactError

LAYERS = ["blocks.0.mlp.fc1", "blocks.0.mlp.fc2", "head"]


def _stats(ms: float, batch: int) -> LatencyStats:
    return LatencyStats.from_seconds([ms / 1000 * (1 + i / 100) for i in range(30)], batch=batch, threads=2)


def _variant(params: int, scale: float, onnx_bytes: int) -> VariantBenchmark:
    return VariantBenchmark(
        params_torch=params, params_onnx=params,
        flops=FlopCount(flops=int(2 * params * 197), macs=int(params * 197), batch=1),
        onnx_size=OnnxFileSize(path="model.onnx", model_bytes=onnx_bytes, external_data_bytes=0),
        latency={"onnxruntime": {1: _stats(10 * scale, 1), 8: _stats(60 * scale, 8)},
                 "torch_eager": {1: _stats(14 * scale, 1), 8: _stats(90 * scale, 8)}},
    )


def fake_report(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(
        model={"name": "vit_tiny_patch16_224", "source": "timm:vit_tiny_patch16_224", "family": "vit",
               "input_name": "input", "output_name": "logits", "input_shape": [3, 224, 224],
               "input_shape_origin": "config", "input_dtype": "float32", "num_classes": 1000,
               "preprocessing": None, "tolerance": {"atol": 1e-4, "rtol": 1e-3}},
        compression={
            "ratio": 0.62,
            "layers": [{"name": n, "shape": [768, 192], "rank": 48, "params_before": 148224,
                        "params_after": 46848, "rel_error": 0.0312 + i / 100} for i, n in enumerate(LAYERS)],
            "totals": {"params_before_factorized_layers": 5_717_416, "params_after_factorized_layers": 3_545_000,
                       "layers_factorized": 3, "layers_eligible": 3, "reduction_in_factorized_layers": 0.38},
        },
        export={"exports": {v: {"exporter": "dynamo", "opset_exported": 18, "opset": 17, "input_shape": ["batch", 3, 224, 224],
                                "num_nodes": 500, "file_bytes": 1_000_000, "path": Path(f"out/{v}.onnx"),
                                "conversions": ["opset 18 -> 17: no node changed"]} for v in ("original", "compressed")},
                "simplify": {"compressed": {"method_requested": "onnxsim", "method_used": "onnxslim", "fell_back": True,
                                            "nodes_before": 500, "nodes_after": 400}}},
        verification={"ok": True, "tolerance": {"atol": 1e-4, "rtol": 1e-3}, "inputs": [[1, 3, 224, 224]],
                      "files": {"out/compressed.sim.onnx": {
                          "variant": "compressed", "ok": True,
                          "outputs": {"outputs": {"logits": {"max_abs_err": np.float32(2.1e-5), "mean_abs_err": 1e-6,
                                                             "max_rel_err": 0.01}}},
                          "parameters": {"onnx_counted": 3_545_000, "torch_params_distinct": 3_545_000,
                                         "factors": [{"first_found": "value", "second_found": "value"},
                                                     {"first_found": "value", "second_found": "missing"}]}}}},
        benchmarks={"original": _variant(5_717_416, 1.0, 22_900_000),
                    "compressed": _variant(3_545_000, 0.7, 14_200_000)},
        accuracy={"dataset": "synthetic", "n_samples": 64, "num_classes": 1000, "top1_reference": None,
                  "top1_candidate": None, "top1_delta": None, "top1_skipped": "no labels",
                  "top1_agreement": 0.953, "cosine_mean": 0.991, "cosine_min": 0.94, "max_abs_diff": 1.3},
        automatic_choices=["input shape 3x224x224 taken from the timm pretrained config",
                           "ranks chosen by energy threshold 0.9 (no --ranks given)"],
        settings={"warmup": 5, "runs": 30, "batch_sizes": [1, 8]},
        artifacts={"onnx": "out/compressed.onnx"},
    )
    kwargs.update(overrides)
    return build_report(**kwargs)


def test_round_trip(tmp_path: Path) -> None:
    report = fake_report()
    json_path, md_path = write_report(report, tmp_path / "run")
    assert json_path.name == "report.json" and md_path.name == "report.md"
    data = json.loads(json_path.read_text())
    validate_report(data)
    assert load_report(tmp_path / "run") == data
    assert list(data)[: len(REPORT_KEYS)] == list(REPORT_KEYS)
    assert data["schema_version"] == REPORT_SCHEMA_VERSION == 2
    assert data["model"]["io"]["inputs"][0]["name"] == "input"  # one input, batch dynamic, implied by the model
    assert data["tool"]["version"] == tool_version()
    assert data["export"]["exports"]["compressed"]["path"] == "out/compressed.onnx"  # Path made plain JSON
    assert data["verification"]["files"]["out/compressed.sim.onnx"]["outputs"]["outputs"]["logits"]["max_abs_err"] == pytest.approx(2.1e-5)
    lat = data["benchmarks"]["compressed"]["latency"]
    assert set(lat) == {"onnxruntime", "torch_eager"} and list(lat["onnxruntime"]) == ["1", "8"]
    assert data["benchmarks"]["original"]["threads"] == {"onnxruntime": 2, "torch_eager": 2}
    # writing the reloaded report again gives identical JSON (stable key order)
    write_report(data, tmp_path / "again")
    assert (tmp_path / "again" / "report.json").read_text() == json_path.read_text()


def test_comparison_ratios() -> None:
    rows = {r["key"]: r for r in fake_report()["comparison"]}
    assert rows["params.torch"]["ratio"] == pytest.approx(3_545_000 / 5_717_416)
    assert rows["onnx_size.mb"]["original"] == pytest.approx(22.9)
    assert rows["latency.onnxruntime.1.p50_ms"]["ratio"] == pytest.approx(0.7)
    assert rows["latency.torch_eager.8.throughput"]["ratio"] == pytest.approx(1 / 0.7)
    assert rows["accuracy.top1_agreement"]["compressed"] == 0.953
    assert rows["accuracy.top1_agreement"]["ratio"] is None


def test_markdown_contents(tmp_path: Path) -> None:
    _, md_path = write_report(fake_report(), tmp_path)
    md = md_path.read_text()
    assert md.startswith("# PELA export report: vit_tiny_patch16_224")
    for header in ("| Metric | Original | Compressed | Compressed / original |",
                   "| Layer | Shape | Rank | Params before → after | Rel. error |",
                   "## Verification", "## Automatic choices", "## Accuracy", "## Environment"):
        assert header in md
    for name in LAYERS:
        assert f"`{name}`" in md
    assert "onnxruntime b=8 p99 (ms)" in md and "torch_eager b=1 throughput (samples/s)" in md
    assert "Parameters (ONNX)" in md and "FLOPs / sample" in md and "ONNX file size (MB)" in md
    assert "148,224 → 46,848" in md and "768×192" in md and "3×224×224" in md
    assert "batch_sizes=1, 8" in md and "0.991000" in md
    assert "95.30%" in md  # agreement
    assert "ranks chosen by energy threshold 0.9" in md
    assert "| `compressed.sim.onnx` | logits | 2.1e-05 |" in md and "1/2" in md  # one factor pair missing
    assert "onnxslim (500 → 400 nodes), fell back from onnxsim" in md and "18 → 17" in md and "batch×3×224×224" in md
    assert "no labels" in md


def test_markdown_handles_sparse_report() -> None:
    report = fake_report(accuracy=None, automatic_choices=[], verification=None, export=None,
                         compression={"ratio": 1.0, "layers": []},
                         benchmarks={"original": {"params_torch": 10}, "compressed": {"params_torch": 10}})
    md = render_markdown(report)
    assert "_Not evaluated._" in md and "_No layers were factorised._" in md
    assert "_None: every choice was given explicitly._" in md


def test_non_finite_floats_become_null(tmp_path: Path) -> None:
    report = fake_report(accuracy={"top1_agreement": 1.0, "cosine_mean": math.nan})
    assert report["accuracy"]["cosine_mean"] is None
    json_path, _ = write_report(report, tmp_path)
    json.loads(json_path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))


@pytest.mark.parametrize("path", [("environment",), ("accuracy",), ("benchmarks", "original"),
                                  ("benchmarks", "compressed", "latency"), ("compression", "layers"),
                                  ("tool", "version"), ("model", "name")])
def test_missing_key_is_named(path: tuple[str, ...]) -> None:
    report = copy.deepcopy(fake_report())
    parent = report
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    with pytest.raises(ArtifactError, match=repr(".".join(path))):
        validate_report(report)


def test_schema_version_checked(tmp_path: Path) -> None:
    report = fake_report()
    with pytest.raises(ArtifactError, match="schema_version"):
        validate_report({**report, "schema_version": 3})
    with pytest.raises(ArtifactError, match="'model.io'"):
        validate_report({**report, "model": {k: v for k, v in report["model"].items() if k != "io"}})
    with pytest.raises(ArtifactError, match="'schema_version'"):
        validate_report({k: v for k, v in report.items() if k != "schema_version"})
    with pytest.raises(ArtifactError):
        validate_report([])


def test_load_report_errors(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        load_report(tmp_path)
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="cannot read"):
        load_report(tmp_path / "report.json")


def test_build_requires_both_variants() -> None:
    with pytest.raises(ArtifactError, match="compressed"):
        fake_report(benchmarks={"original": {"params_torch": 1}})


def test_environment_info() -> None:
    env = environment_info()
    for key in ("python", "platform", "cpu_count", "date", "torch", "onnx", "onnxruntime", "timm"):
        assert key in env
    assert env["torch"] and env["cpu_count"] >= 1
    json.dumps(env)
