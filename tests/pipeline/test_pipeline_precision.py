"""Precision and build stages through the CLI: FP16/INT8 variants of both models,
each measured against its FP32 graph; the build stage without TensorRT writes the
parser check and trtexec scripts and says engines need the device."""
import json
from pathlib import Path

import pytest

from pela_export.cli.main import main
from pela_export.tensorrt import TABLE_VERSIONS


def _record(out, stage):
    return json.loads((out / "stages" / f"{stage}.json").read_text())


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("prec") / "o"
    assert main(["run", "tiny_timm:deit_tiny_64", "--out", str(out), "--skip", "bench", "--skip", "report", "--calib-samples", "16",
                 "--no-progress"]) == 0
    return out


def test_run_writes_and_measures_every_precision_variant(tiny_run):
    rec = _record(tiny_run, "precision")
    assert set(rec["variants"]) == {"original.fp16", "original.int8fp16", "compressed.fp16", "compressed.int8fp16"}
    assert rec["calibration"]["source"] == "random" and rec["calibration"]["samples"] == 16
    for name, v in rec["variants"].items():
        assert (tiny_run / f"{name}.onnx").is_file()
        acc = v["accuracy"]
        # random weights and inputs: no labels, but outputs must track the FP32 graph closely
        assert acc["top1_skipped"] == "no labels" and acc["cosine_mean"] > 0.98, (name, acc)
    assert rec["variants"]["compressed.int8fp16"]["accuracy"]["onnxruntime_optimization"] == "basic"
    assert (tiny_run / "compressed.int8fp16.calib.cache").read_text().startswith("TRT-")


def test_build_stage_without_tensorrt_writes_parser_check_and_trtexec_scripts(tiny_run):
    rec = _record(tiny_run, "build")
    assert rec["tensorrt_installed"] is None and "not installed" in rec["skipped"]
    assert rec["target_versions"] == list(TABLE_VERSIONS)
    assert set(rec["variants"]) == {"original", "compressed", "original.fp16", "original.int8fp16", "compressed.fp16",
                                    "compressed.int8fp16"}  # --precision not given: fp16,int8fp16
    for name, v in rec["variants"].items():
        assert set(v["parse_check"]) == set(TABLE_VERSIONS)
        for version, script in v["trtexec"].items():
            text = open(script).read()
            onnx = f"{name}.sim.onnx" if name in ("original", "compressed") else f"{name}.onnx"
            assert "trtexec" in text and f"/{onnx}" in text, text
            assert ("--explicitBatch" in text) == version.startswith("8."), (version, text)
            assert ("--fp16" in text) == (version.startswith("8.") and name.endswith("fp16")), (version, text)
            typed = version.startswith("10.") and name.endswith(("fp16", "int8"))  # 10.x: graph precision, typed
            assert ("--stronglyTyped" in text) == typed, (version, text)


def test_build_command_without_tensorrt_is_a_clear_error(tiny_run, capsys):
    code = main(["build", "tiny_timm:deit_tiny_64", "--out", str(tiny_run), "--trt-version", "10.3"])
    assert code == 2
    err = capsys.readouterr().err
    assert "TensorRT Python bindings are not installed" in err and "fix:" in err
    assert _record(tiny_run, "build")["target_versions"] == ["10.3"]


@pytest.mark.parametrize("args,needle", [
    (["--precision", "fp16", "--calib-method", "max"], "--calib-method is only used with --precision int8"),
    (["--precision", "int8", "--fp16-io", "fp16"], "--fp16-io is only used with --precision fp16"),
    (["--precision", "bf13"], "unknown precision 'bf13'"),
    (["--calib-percentile", "99.9"], "--calib-percentile is only used with --calib-method percentile"),
])
def test_precision_options_are_never_silently_ignored(capsys, args, needle):
    assert main(["run", "tiny_timm:deit_tiny_64", *args]) == 2
    assert needle in capsys.readouterr().err


@pytest.mark.slow
def test_digits_default_keeps_accuracy_in_fp16_and_int8(tmp_path, monkeypatch, default_cache):
    monkeypatch.setenv("PELA_EXPORT_CACHE", str(default_cache))
    out = tmp_path / "o"
    assert main(["run", "--out", str(out), "--skip", "bench", "--skip", "report", "--no-progress"]) == 0
    variants = _record(out, "precision")["variants"]
    assert {n.split(".")[1] for n in variants} == {"fp16", "int8fp16"}  # --precision not given
    for name, v in variants.items():
        acc = v["accuracy"]
        limit = 0.001 if name.endswith("fp16") else 0.01
        assert abs(acc["top1_delta"]) <= limit, (name, acc)


def test_bench_times_every_precision_variant_and_the_report_shows_it(tiny_run):
    skip = [a for s in ("compress", "export", "simplify", "verify", "precision", "build") for a in ("--skip", s)]
    assert main(["run", "tiny_timm:deit_tiny_64", "--out", str(tiny_run), *skip, "--skip", "package",
                 "--batch-sizes", "1", "--warmup", "1", "--no-progress"]) == 0
    timed = _record(tiny_run, "bench")["precision_latency"]
    assert set(timed) == {"original.fp16", "original.int8fp16", "compressed.fp16", "compressed.int8fp16"}
    assert all(v["1"]["n_runs"] == 30 and v["1"]["p50_ms"] > 0 for v in timed.values())
    report = json.loads((tiny_run / "report.json").read_text())
    assert report["precision"]["variants"]["compressed.int8fp16"]["latency"]["1"]["p50_ms"] == timed["compressed.int8fp16"]["1"]["p50_ms"]
    assert (tiny_run / "charts" / "latency.png").is_file()


def test_missing_precision_variant_is_named_by_build_bench_and_package(tiny_run, tmp_path, capsys):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(tiny_run, out)
    record = _record(out, "precision")
    for v in record["variants"].values():  # point the copied record at the copied files
        v["onnx"] = str(out / Path(v["onnx"]).name)
    (out / "stages" / "precision.json").write_text(json.dumps(record))
    (out / "compressed.int8fp16.onnx").unlink()
    for stage in ("build", "package"):
        assert main([stage, "tiny_timm:deit_tiny_64", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "compressed.int8fp16 ONNX" in err and "recorded by the precision stage is missing" in err, (stage, err)
