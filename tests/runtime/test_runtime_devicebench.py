"""`device-bench` on this CPU machine: TensorRT is absent, so it falls back to ONNX Runtime, says so,
and still writes a full, valid report (golden check + latency for every variant)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pela_export import api
from pela_export.cli.main import main
from pela_export.errors import DependencyError, OptionError
from pela_export.runtime import Bundle, device_bench, load_device_report
from pela_export.runtime.devicebench import batch_feeds
from pela_export.tensorrt._trt import tensorrt_available

pytestmark = pytest.mark.skipif(tensorrt_available(), reason="checks the fallback where TensorRT is absent")


def test_device_bench_falls_back_to_onnxruntime_and_says_so(digits_run: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    json_path, md_path = device_bench(digits_run / "bundle.tar.gz", tmp_path / "dev", runs=30, warmup=1)
    report = load_device_report(json_path)  # validates against the schema
    dev = report["device"]
    assert dev["backend"] == "onnxruntime" and "TensorRT" in dev["fallback_reason"] and dev["tensorrt"] is None
    assert dev["onnxruntime"] and dev["hostname"] and dev["jetson"] is None
    assert report["bundle"]["model"] == "digits-vit" and len(report["bundle"]["deploy_sha256"]) == 64
    assert "note: TensorRT Python bindings are not installed" in capsys.readouterr().err  # the log says so too
    assert set(report["variants"]) == {f"{m}.{p}" for m in ("original", "compressed") for p in ("fp32", "fp16", "int8fp16")}
    for name, v in report["variants"].items():
        assert v["backend"] == "onnxruntime" and v["engine"] is None
        assert v["golden"]["ok"], (name, v["golden"])
        assert set(v["latency"]) == {"1", "8"}  # the bundle profile's min/opt/max batch, deduplicated
        for batch, lat in v["latency"].items():
            assert lat["batch"] == int(batch) and lat["n_runs"] == 30 and len(lat["samples_ms"]) == 30
            assert 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] and lat["throughput"] > 0
        assert v["params"] > 0 and v["onnx_bytes"] > 0 and v["cpu_accuracy"]["top1"] > 0.9
    assert report["variants"]["compressed.int8fp16"]["onnxruntime"]["optimization"] == "basic"
    md = md_path.read_text()
    assert md.count("\n| `") == 6  # one table row per variant
    assert "**Not TensorRT:**" in md and "Compressed vs original" in md


def test_device_bench_cli(digits_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["device-bench", str(digits_run / "bundle"), "--out", str(tmp_path), "--runs", "30",
                 "--warmup", "0", "--batch-sizes", "2", "--backend", "auto"]) == 0
    captured = capsys.readouterr()
    assert "backend: onnxruntime (TensorRT Python bindings are not installed" in captured.out
    assert "note: TensorRT Python bindings are not installed" in captured.err
    report = json.loads((tmp_path / "device-report.json").read_text())
    assert all(set(v["latency"]) == {"2"} for v in report["variants"].values())


def test_explicit_tensorrt_backend_is_never_silently_replaced(digits_run: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(DependencyError, match="--backend tensorrt was asked for"):
        device_bench(digits_run / "bundle", tmp_path, backend="tensorrt", runs=30)
    assert main(["device-bench", str(digits_run / "bundle"), "--out", str(tmp_path), "--backend", "tensorrt"]) == 2
    assert "fix:" in capsys.readouterr().err
    assert not (tmp_path / "device-report.json").exists()


@pytest.mark.parametrize("kw,needle", [
    ({"batch_sizes": [16]}, r"outside the bundle's input profile \(batch 1..8\)"),
    ({"runs": 5}, "--runs must be an integer >= 30"),
    ({"warmup": -1}, "--warmup must be an integer >= 0"),
    ({"backend": "tpu"}, "unknown backend 'tpu'"),
    ({"variants": ["compressed.bf16"]}, "no variant 'compressed.bf16'"),
])
def test_bad_options_are_errors(digits_run: Path, tmp_path: Path, kw: dict, needle: str) -> None:
    with pytest.raises(OptionError, match=needle):
        device_bench(digits_run / "bundle", tmp_path, **{"runs": 30, **kw})


def test_golden_mismatch_is_reported_not_hidden(digits_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    real = Bundle.golden

    def shifted(self: Bundle, name: str):  # the workstation "said" something else for one variant
        inputs, outputs = real(self, name)
        if name == "compressed.fp16":
            outputs = {k: v + 1.0 for k, v in outputs.items()}
        return inputs, outputs

    monkeypatch.setattr(Bundle, "golden", shifted)
    assert main(["device-bench", str(digits_run / "bundle"), "--out", str(tmp_path), "--runs", "30",
                 "--warmup", "0", "--batch-sizes", "1"]) == 1
    err = capsys.readouterr().err
    assert "compressed.fp16" in err and "disagree with the golden outputs" in err
    report = load_device_report(tmp_path / "device-report.json")
    assert not report["variants"]["compressed.fp16"]["golden"]["ok"]
    assert report["variants"]["compressed.fp32"]["golden"]["ok"]
    md = (tmp_path / "device-report.md").read_text()
    assert "**FAIL**" in md and "## Golden check failures" in md and "elements out of tolerance" in md


def test_api_device_bench_and_batch_feeds(digits_run: Path, tmp_path: Path) -> None:
    json_path, md_path = api.device_bench(digits_run / "bundle", tmp_path, batch_sizes=[1], runs=30, warmup=0,
                                          backend="onnxruntime")
    report = load_device_report(json_path)
    assert report["device"]["backend"] == "onnxruntime" and report["device"]["fallback_reason"] is None
    assert "Not TensorRT" not in md_path.read_text()
    x = np.arange(4 * 3, dtype=np.float32).reshape(4, 3)
    assert batch_feeds({"x": x}, 4)["x"] is x
    np.testing.assert_array_equal(batch_feeds({"x": x}, 6)["x"], x[[0, 1, 2, 3, 0, 1]])
    np.testing.assert_array_equal(batch_feeds({"x": x}, 1)["x"], x[:1])
