"""The TensorRT path of the runtime, contract-tested with fake TensorRT modules (every manifest version) and
host memory: engine-cache keys, build-once-then-reuse, and device-bench reporting TensorRT results."""
from __future__ import annotations

from pathlib import Path

import pytest
from fake_tensorrt import VERSIONS, make_fake_tensorrt

from pela_export.export.runtime import ort_run, ort_session
from pela_export.runtime import Bundle, EngineKey, device_bench, engine_cache_dir, engine_key, load_device_report
from pela_export.runtime.backends import build_options, choose_backend
from pela_export.runtime.engines import build_or_reuse
from pela_export.tensorrt import GpuInfo, HostBackend

ORIN = GpuInfo("Orin (nvgpu)", "8.7", "test")
AGX_THOR = GpuInfo("NVIDIA Thor", "11.0", "test")


@pytest.fixture(scope="module")
def bundle(digits_run: Path) -> Bundle:
    return Bundle.load(digits_run / "bundle")


def _ort_kernel(onnx: Path):
    """What the fake engine computes: the variant's ONNX graph on ONNX Runtime (so outputs match the golden ones)."""
    session = ort_session(onnx)
    return lambda ins: ort_run(session, ins)


def test_engine_key_separates_every_field(bundle: Bundle) -> None:
    onnx = bundle.onnx_path("compressed.int8fp16")
    opts = build_options(bundle)
    key = engine_key("10.3.0", ORIN, "int8fp16", onnx, opts)
    assert key.onnx_sha256 == bundle.variant("compressed.int8fp16")["sha256"]
    rel = key.relpath().as_posix()
    assert rel.startswith("trt10.3.0/orin-nvgpu-cc8.7/int8fp16-") and rel.endswith(".plan")
    variants = [EngineKey(**{**key.to_dict(), field: value}) for field, value in (
        ("tensorrt_version", "10.3.1"), ("gpu_name", "Orin (nvgpu) 2"), ("compute_capability", "8.6"),
        ("precision", "fp16"), ("onnx_sha256", "f" * 64), ("options_digest", "0" * 16))]
    assert len({key.relpath(), *(k.relpath() for k in variants)}) == 7
    wider = engine_key("10.3.0", ORIN, "int8fp16", onnx, opts.__class__.from_dict({**opts.to_dict(), "workspace_mib": 512}))
    assert wider.options_digest != key.options_digest


def test_engine_cache_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PELA_EXPORT_CACHE", str(tmp_path / "c"))
    assert engine_cache_dir() == tmp_path / "c" / "engines"
    monkeypatch.setenv("PELA_EXPORT_ENGINE_CACHE", str(tmp_path / "e"))
    assert engine_cache_dir() == tmp_path / "e"
    assert engine_cache_dir(tmp_path / "x") == tmp_path / "x"


def test_build_once_then_reuse_and_rebuild_when_stale(bundle: Bundle, tmp_path: Path) -> None:
    trt = make_fake_tensorrt("10.3.0")
    onnx, opts, logs = bundle.onnx_path("compressed.fp16"), build_options(bundle), []
    kw = {"trt": trt, "cache_dir": tmp_path, "log": logs.append}
    plan, engine = build_or_reuse(onnx, "fp16", opts, gpu=ORIN, **kw)
    assert not engine["reused"] and len(trt._fake.plans) == 1 and plan.is_file()
    assert engine["key"]["gpu_name"] == "Orin (nvgpu)" and engine["tensorrt_version"] == "10.3.0"
    plan2, engine2 = build_or_reuse(onnx, "fp16", opts, gpu=ORIN, **kw)
    assert plan2 == plan and engine2["reused"] and len(trt._fake.plans) == 1
    assert any("reusing cached TensorRT engine" in m for m in logs)
    other, _ = build_or_reuse(onnx, "fp16", opts, gpu=AGX_THOR, **kw)  # another GPU: its own plan
    assert other != plan and len(trt._fake.plans) == 2
    plan.write_bytes(plan.read_bytes() + b"garbage")  # truncated/changed plan: rebuilt, and the log says why
    _, engine3 = build_or_reuse(onnx, "fp16", opts, gpu=ORIN, **kw)
    assert not engine3["reused"] and len(trt._fake.plans) == 3
    assert any("checksum does not match" in m for m in logs)
    newer = make_fake_tensorrt("10.13.3")  # another TensorRT release never reuses the 10.3 plan
    plan4, engine4 = build_or_reuse(onnx, "fp16", opts, gpu=ORIN, trt=newer, cache_dir=tmp_path)
    assert plan4 != plan and not engine4["reused"]


@pytest.mark.parametrize("version", VERSIONS)
def test_device_bench_on_tensorrt(bundle: Bundle, tmp_path: Path, version: str) -> None:
    name = "compressed.fp32"
    trt = make_fake_tensorrt(version, kernel=_ort_kernel(bundle.onnx_path(name)))
    kw = {"backend": "tensorrt", "trt": trt, "device_backend": HostBackend(ORIN), "gpu": ORIN,
          "engine_cache": tmp_path / "engines", "variants": [name], "runs": 30, "warmup": 0, "batch_sizes": [1, 8]}
    json_path, md_path = device_bench(bundle, tmp_path / "out", **kw)
    report = load_device_report(json_path)
    dev, v = report["device"], report["variants"][name]
    assert dev["backend"] == "tensorrt" and dev["fallback_reason"] is None and dev["tensorrt"] == trt.__version__
    assert dev["gpu"]["compute_capability"] == "8.7"
    assert v["backend"] == "tensorrt" and v["golden"]["ok"], v["golden"]
    assert v["engine"]["key"]["precision"] == "fp32" and not v["engine"]["reused"]
    assert set(v["latency"]) == {"1", "8"} and len(v["latency"]["8"]["samples_ms"]) == 30
    assert "Not TensorRT" not in md_path.read_text()
    calls = trt._fake.names_called()
    assert {"IExecutionContext.set_input_shape", "IExecutionContext.execute_async_v3"} <= calls
    shapes = {c.args[1] for c in trt._fake.called("IExecutionContext", "set_input_shape")}
    assert {(4, 1, 16, 16), (1, 1, 16, 16), (8, 1, 16, 16)} <= {tuple(s) for s in shapes}  # golden batch + timed ones
    again = load_device_report(device_bench(bundle, tmp_path / "out2", **kw)[0])
    assert again["variants"][name]["engine"]["reused"]


def test_auto_falls_back_per_variant_when_an_engine_build_fails(bundle: Bundle, tmp_path: Path) -> None:
    trt = make_fake_tensorrt("10.3.0", build_fails=True)
    json_path, md_path = device_bench(bundle, tmp_path / "out", backend="auto", trt=trt,
                                      device_backend=HostBackend(ORIN), gpu=ORIN, engine_cache=tmp_path / "e",
                                      variants=["compressed.int8fp16"], runs=30, warmup=0, batch_sizes=[1])
    v = load_device_report(json_path)["variants"]["compressed.int8fp16"]
    assert v["backend"] == "onnxruntime" and "TensorRT could not build" in v["fallback_reason"] and v["golden"]["ok"]
    assert "Per-variant fallbacks" in md_path.read_text()
    with pytest.raises(Exception, match="could not build"):
        device_bench(bundle, tmp_path / "out", backend="tensorrt", trt=trt, device_backend=HostBackend(ORIN),
                     gpu=ORIN, engine_cache=tmp_path / "e", variants=["compressed.int8fp16"], runs=30)


def test_choose_backend_rules() -> None:
    trt = make_fake_tensorrt("10.3.0")
    assert choose_backend("tensorrt", trt=trt, gpu=ORIN).kind == "tensorrt"
    auto = choose_backend("auto", trt=trt, gpu=GpuInfo())  # bindings present but no GPU
    assert auto.kind == "onnxruntime" and "no CUDA GPU" in auto.fallback_reason
    assert choose_backend("onnxruntime", trt=trt, gpu=ORIN).fallback_reason is None


def test_missing_cuda_memory_is_a_stated_fallback_under_auto(bundle: Bundle, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import pela_export.runtime.backends as backends_mod
    from pela_export.errors import DependencyError

    def no_cuda() -> None:
        raise DependencyError("cuda-python is not importable and torch is not installed", fix="pip install cuda-python")

    monkeypatch.setattr(backends_mod, "default_device_backend", no_cuda)
    trt = make_fake_tensorrt("10.3.0")
    kw = {"trt": trt, "gpu": ORIN, "engine_cache": tmp_path / "e", "variants": ["original.fp32"], "runs": 30,
          "batch_sizes": [1]}
    report = load_device_report(device_bench(bundle, tmp_path / "out", backend="auto", **kw)[0])
    assert report["device"]["backend"] == "onnxruntime"
    assert "CUDA memory is not available (cuda-python is not importable" in report["device"]["fallback_reason"]
    assert not trt._fake.plans  # nothing was built for an engine that could not run
    with pytest.raises(DependencyError, match="cuda-python"):
        device_bench(bundle, tmp_path / "out", backend="tensorrt", **kw)
