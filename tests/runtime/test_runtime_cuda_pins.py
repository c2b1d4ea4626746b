"""device-bench on a Jetson whose cuda-python bundles a newer CUDA than the driver (pip's 12.9 on JetPack 6.1):
``--backend tensorrt`` fails naming the pin, ``auto`` falls back to ONNX Runtime with the pin in the reason,
and the bundle's own instructions (build_engines.sh) pin cuda-python per JetPack."""
from __future__ import annotations

from pathlib import Path

import pytest
from fake_cuda import install_fake_cuda, make_fake_cudart
from fake_tensorrt import make_fake_tensorrt

import pela_export.tensorrt.cuda_versions as cv
import pela_export.tensorrt.device as trt_device
from pela_export.errors import DependencyError
from pela_export.runtime import Bundle, device_bench, load_device_report
from pela_export.tensorrt import GpuInfo

ORIN = GpuInfo("Orin (nvgpu)", "8.7", "test")


@pytest.fixture
def jetpack61_with_cuda_python_12_9(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Jetson (nv_tegra_release present) with a CUDA 12.6 driver, cuda-python 12.9 installed and no torch CUDA."""
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64\n")
    monkeypatch.setattr(cv, "TEGRA_RELEASE", release)
    install_fake_cuda(monkeypatch, make_fake_cudart(driver_version=12060, runtime_version=12090))
    monkeypatch.setattr(trt_device, "_torch_has_cuda", lambda: False)


@pytest.mark.usefixtures("jetpack61_with_cuda_python_12_9")
def test_device_bench_names_the_cuda_python_pin(digits_run: Path, tmp_path: Path) -> None:
    bundle = Bundle.load(digits_run / "bundle")
    kw = {"trt": make_fake_tensorrt("10.3.0"), "gpu": ORIN, "engine_cache": tmp_path / "e",
          "variants": ["compressed.fp32"], "runs": 30, "warmup": 0, "batch_sizes": [1]}
    with pytest.raises(DependencyError) as exc:
        device_bench(bundle, tmp_path / "trt", backend="tensorrt", **kw)
    assert "bundles the CUDA 12.9 runtime" in exc.value.problem and "supports CUDA up to 12.6" in exc.value.problem
    assert "`pip install 'cuda-python==12.6.*'` (JetPack 6.1 / 6.2)" in exc.value.fix
    report = load_device_report(device_bench(bundle, tmp_path / "auto", backend="auto", **kw)[0])
    reason = report["device"]["fallback_reason"]
    assert report["device"]["backend"] == "onnxruntime"
    assert "bundles the CUDA 12.9 runtime" in reason and "cuda-python==12.6.*" in reason
    assert report["device"]["cuda_python"]["runtime"] == "12.9" and report["device"]["cuda_driver"] == "12.6"


def test_bundle_instructions_pin_cuda_python_per_jetpack(digits_run: Path) -> None:
    text = (digits_run / "bundle" / "build_engines.sh").read_text()
    for line in ("JetPack 6.0 (L4T R36.3, CUDA 12.2):", "pip install numpy 'cuda-python==12.2.*'",
                 "JetPack 6.1 / 6.2 (L4T R36.4, CUDA 12.6): pip install numpy 'cuda-python==12.6.*'",
                 "JetPack 7 (L4T R38, CUDA 13.0):", "pip install numpy 'cuda-python==13.0.*'"):
        assert line in text, line
