"""int8fp16 through the whole CLI run next to an explicitly requested int8: precision -> build (parser
check + trtexec scripts for every TensorRT table) -> bench -> report -> package, and the bundle
reproduces its golden outputs within the spec's tolerance on the device-side runtime."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pela_export.cli.main import main
from pela_export.export.compare import compare_outputs
from pela_export.precision.spec import precision_spec
from pela_export.runtime import Bundle, run_variant, validate_deploy, verify_bundle
from pela_export.tensorrt import TABLE_VERSIONS

MODEL = "tiny_timm:deit_tiny_64"
VARIANTS = {f"{m}.{p}" for m in ("original", "compressed") for p in ("int8", "int8fp16")}


def _record(out: Path, stage: str) -> dict:
    return json.loads((out / "stages" / f"{stage}.json").read_text())


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("int8fp16") / "o"
    assert main(["run", MODEL, "--out", str(out), "--precision", "int8,int8fp16", "--calib-samples", "16",
                 "--eval-samples", "32", "--runs", "30", "--warmup", "1", "--batch-sizes", "1", "--no-progress"]) == 0
    return out


@pytest.mark.slow
def test_explicit_int8_is_kept_beside_int8fp16(run: Path) -> None:
    rec = _record(run, "precision")
    assert rec["precisions"] == ["int8", "int8fp16"] and set(rec["variants"]) == VARIANTS
    for name, v in rec["variants"].items():
        details = v["conversion"]["details"]
        assert v["accuracy"]["onnxruntime_optimization"] == "basic" and v["accuracy"]["cosine_mean"] > 0.98, name
        if name.endswith("int8fp16"):  # the same calibration and placement, on the FP16 graph
            twin = rec["variants"][name.replace("int8fp16", "int8")]["conversion"]["details"]
            assert details["quantized"] == twin["quantized"] and details["nodes_fp16"] > details["nodes_fp32"] > 0
            assert details["qdq"]["form"] == "float32 Q/DQ between Casts"  # the default opset 17
        else:
            assert "nodes_fp16" not in details


@pytest.mark.slow
def test_build_parses_on_every_table_and_8_6_builds_fp16_and_int8(run: Path) -> None:
    build = _record(run, "build")
    for name in ("original.int8fp16", "compressed.int8fp16"):
        v = build["variants"][name]
        assert set(v["parse_check"]) == set(TABLE_VERSIONS)
        assert all(f["severity"] != "error" for fs in v["parse_check"].values() for f in fs), name
        text = Path(v["trtexec"]["8.6"]).read_text()
        assert "--fp16" in text and "--int8" in text  # weakly typed 8.6: both kernels allowed
    report = json.loads((run / "report.json").read_text())
    assert report["precision"]["variants"]["compressed.int8fp16"]["latency"]["1"]["p50_ms"] > 0


@pytest.mark.slow
def test_bundle_golden_outputs_reproduce_within_the_spec_tolerance(run: Path, tmp_path: Path) -> None:
    d = validate_deploy(json.loads((run / "bundle" / "deploy.json").read_text()))
    frac, rtol = precision_spec("int8fp16").golden_tolerance
    v = d["variants"]["compressed.int8fp16"]
    assert v["onnxruntime_optimization"] == "basic" and v["tolerance"]["rtol"] == rtol
    assert v["calibration_cache"] is not None and f"int8fp16: atol {frac:g} x max|golden|" in d["golden"]["policy"]
    assert verify_bundle(run / "bundle") == []
    b = Bundle.load(run / "bundle.tar.gz", extract_to=tmp_path)
    for name in ("compressed.int8fp16", "original.int8fp16"):
        _, golden = b.golden(name)
        assert compare_outputs(golden, run_variant(b, name), b.tolerance(name)).ok, name
