"""A precision registered by a test module alone (tests/fixtures/dummy_precision.py, no product file
edited) goes through the whole pipeline: precision -> build (parser check + trtexec scripts) -> bench ->
report -> package, and the bundle verifies and reproduces its golden outputs with the runtime."""
from __future__ import annotations

import json
from pathlib import Path

import dummy_precision as dummy
import pytest

from pela_export.cli.main import main
from pela_export.export.compare import compare_outputs
from pela_export.pipeline.config import RunConfig
from pela_export.pipeline.run import run_pipeline
from pela_export.precision.spec import find_spec
from pela_export.runtime import Bundle, run_variant, validate_deploy, verify_bundle

MODEL = "tiny_timm:deit_tiny_64"


@pytest.fixture(scope="module")
def dummy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dummy-precision") / "o"
    with dummy.registered() as spec:
        opts = {dummy.NAME: spec.options(fp16copy_tag="hello")}
        run_pipeline(RunConfig.of(model=MODEL, out=str(out), precisions=("fp16", dummy.NAME), precision_options=opts,
                               calib_samples=16, eval_samples=32, runs=30, warmup=1, batch_sizes=(1,),
                               trt_version="10.3", progress=False))
    return out  # unregistered again: the bundle checks below run with no spec for the dummy


def _record(out: Path, stage: str) -> dict:
    return json.loads((out / "stages" / f"{stage}.json").read_text())


def test_precision_stage_used_the_dummy_spec(dummy_run: Path) -> None:
    rec = _record(dummy_run, "precision")
    v = rec["variants"]["compressed.fp16copy"]
    assert v["conversion"]["details"]["tag"] == "hello" and v["conversion"]["details"]["options"] == ["tag"]
    assert v["accuracy"]["onnxruntime_optimization"] == "basic"
    assert v["accuracy"]["cosine_mean"] > 0.9999  # an FP32 copy tracks its FP32 graph exactly
    assert set(rec["variants"]) == {f"{m}.{p}" for m in ("original", "compressed") for p in ("fp16", "fp16copy")}


def test_build_bench_and_report_carry_the_dummy(dummy_run: Path) -> None:
    build = _record(dummy_run, "build")
    assert set(build["variants"]["compressed.fp16copy"]["trtexec"]) == {"10.3"}
    assert "compressed.fp16copy" in _record(dummy_run, "bench")["precision_latency"]
    report = json.loads((dummy_run / "report.json").read_text())
    assert report["precision"]["variants"]["compressed.fp16copy"]["latency"]["1"]["p50_ms"] > 0
    assert "compressed.fp16copy" in (dummy_run / "report.md").read_text()


def test_bundle_records_the_spec_facts_and_verifies(dummy_run: Path, tmp_path: Path) -> None:
    bundle = dummy_run / "bundle"
    d = validate_deploy(json.loads((bundle / "deploy.json").read_text()))
    v = d["variants"]["compressed.fp16copy"]
    assert v["precision"] == "fp16copy" and v["onnxruntime_optimization"] == "basic"
    assert v["tolerance"]["rtol"] == dummy.TOLERANCE[1] and v["calibration_cache"] is None
    assert "fp16copy: atol 0.003 x max|golden|, rtol 0.02" in d["golden"]["policy"]
    assert verify_bundle(bundle) == []
    # the device side, with no registry entry for the dummy any more (unregistered after the run)
    assert find_spec(dummy.NAME) is None
    b = Bundle.load(dummy_run / "bundle.tar.gz", extract_to=tmp_path)
    for name in ("compressed.fp16copy", "original.fp16copy"):
        _, golden = b.golden(name)
        assert compare_outputs(golden, run_variant(b, name), b.tolerance(name)).ok, name


def test_the_dummy_flag_is_on_the_cli_and_never_silently_ignored(capsys) -> None:
    with dummy.registered():
        assert main(["run", MODEL, "--precision", "fp16", "--fp16copy-tag", "x"]) == 2
    assert "--fp16copy-tag is only used with --precision fp16copy" in capsys.readouterr().err
