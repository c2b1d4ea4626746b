"""Device facts: Jetson L4T release and power mode from (fake) /etc/nv_tegra_release and nvpmodel; the driver's,
the toolkit's and cuda-python's CUDA kept apart; null where absent; old (schema 1) reports still read."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from fake_cuda import install_fake_cuda, make_fake_cudart

from pela_export.errors import ArtifactError
from pela_export.runtime import (
    device_facts,
    jetson_facts,
    load_device_report,
    parse_nvpmodel,
    parse_tegra_release,
    validate_device_report,
)
from pela_export.runtime.device import cuda_version
from pela_export.runtime.report_md import render_device_markdown
from pela_export.tensorrt import GpuInfo

FIXTURES = Path(__file__).parents[1] / "fixtures"

ORIN_RELEASE = "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13 04:36:44 UTC 2024\n# KERNEL_VARIANT: oot\nTARGET_USERSPACE_LIB_DIR=nvidia\n"
NVPMODEL_OUT = "NV Power Mode: MAXN\n0\n"


def _runner(outputs: dict[str, str | None]):
    calls: list[tuple[str, ...]] = []

    def run(argv: Sequence[str]) -> str | None:
        calls.append(tuple(argv))
        return outputs.get(argv[0])

    run.calls = calls  # type: ignore[attr-defined]
    return run


@pytest.mark.parametrize("text,expected", [
    (ORIN_RELEASE, "R36.4.0"),
    ("# R35 (release), REVISION: 5.0, GCID: 35550185, BOARD: t186ref, EABI: aarch64", "R35.5.0"),
    ("# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref", "R32.7.1"),
    ("garbage", None),
])
def test_parse_tegra_release(text: str, expected: str | None) -> None:
    assert parse_tegra_release(text) == expected


@pytest.mark.parametrize("text,expected", [
    (NVPMODEL_OUT, "MAXN"), ("NV Power Mode: 15W\n2\n", "15W"), ("NV Power Mode: MAXN_SUPER\n2", "MAXN_SUPER"),
    ("nvpmodel: permission denied", None),
])
def test_parse_nvpmodel(text: str, expected: str | None) -> None:
    assert parse_nvpmodel(text) == expected


def test_jetson_facts_from_fake_files(tmp_path: Path) -> None:
    release, model = tmp_path / "nv_tegra_release", tmp_path / "model"
    release.write_text(ORIN_RELEASE)
    model.write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    run = _runner({"nvpmodel": NVPMODEL_OUT})
    facts = jetson_facts(release_file=release, model_file=model, run=run)
    assert facts == {"l4t_release": "R36.4.0", "power_mode": "MAXN", "model": "NVIDIA Jetson AGX Orin Developer Kit"}
    assert run.calls == [("nvpmodel", "-q")]
    no_nvpmodel = jetson_facts(release_file=release, model_file=tmp_path / "absent", run=_runner({}))
    assert no_nvpmodel == {"l4t_release": "R36.4.0", "power_mode": None, "model": None}
    assert jetson_facts(release_file=tmp_path / "absent", run=run) is None  # not a Jetson


def test_cuda_version_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``cuda``: the toolkit's version (version.json, else version.txt), else the driver's (cuda-python's
    cudaDriverGetVersion, else nvidia-smi's header); never the runtime the cuda-python wheel bundles."""
    install_fake_cuda(monkeypatch, None)  # a device without cuda-python
    vj = tmp_path / "version.json"
    vj.write_text(json.dumps({"cuda": {"name": "CUDA SDK", "version": "12.6.68"}}))
    assert cuda_version(version_file=vj, run=_runner({})) == "12.6.68"
    smi = "| NVIDIA-SMI 560.35   Driver Version: 560.35   CUDA Version: 12.6 |"
    assert cuda_version(version_file=tmp_path / "absent", run=_runner({"nvidia-smi": smi})) == "12.6"
    assert cuda_version(version_file=tmp_path / "absent", run=_runner({})) is None
    (tmp_path / "jp4").mkdir()
    (tmp_path / "jp4" / "version.txt").write_text("CUDA Version 10.2.89\n")  # JetPack 4: no version.json
    assert cuda_version(version_file=tmp_path / "jp4" / "version.json", run=_runner({})) == "10.2.89"
    wheel_12_9 = make_fake_cudart(driver_version=12060, runtime_version=12090)  # cuda-python 12.9 on a 12.6 driver
    assert cuda_version(version_file=tmp_path / "absent", run=_runner({"nvidia-smi": smi}), cudart=wheel_12_9) == "12.6"
    no_driver = make_fake_cudart(driver_version=0, runtime_version=12090)
    assert cuda_version(version_file=tmp_path / "absent", run=_runner({}), cudart=no_driver) is None


def test_device_facts_keep_driver_toolkit_and_cuda_python_apart(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """JetPack 6.1 (driver and toolkit CUDA 12.6) with the cuda-python 12.9 wheel: the report says so, and its
    ``cuda`` is the device's 12.6.68, not the wheel's 12.9 (schema 1 reports showed the wheel's)."""
    install_fake_cuda(monkeypatch, make_fake_cudart(driver_version=12060, runtime_version=12090))
    vj = tmp_path / "version.json"
    vj.write_text(json.dumps({"cuda": {"version": "12.6.68"}}))
    facts = device_facts(gpu=GpuInfo("Orin (nvgpu)", "8.7", "test"), run=_runner({}),
                         release_file=tmp_path / "absent", model_file=tmp_path / "absent", cuda_file=vj)
    assert facts["cuda"] == "12.6.68"
    assert (facts["cuda_driver"], facts["cuda_toolkit"]) == ("12.6", "12.6.68")
    assert facts["cuda_python"]["runtime"] == "12.9"


def test_device_facts_with_the_real_cuda_bindings() -> None:
    """Where cuda-python is importable: ``cuda_python`` names the installed distribution and the runtime it
    bundles, ``cuda_driver`` is cudaDriverGetVersion's (None without a driver), never the bundled runtime."""
    from pela_export.tensorrt.cuda_backend import import_cudart
    from pela_export.tensorrt.cuda_versions import cuda_python_package, version_pair, version_text

    real = import_cudart()
    if real is None:
        pytest.skip("cuda-python is not installed")
    facts = device_facts(gpu=GpuInfo(), run=_runner({}))
    dist, version = str(cuda_python_package()).split()
    assert facts["cuda_python"] == {"package": f"{dist} {version}", "runtime": ".".join(version.split(".")[:2])}
    assert facts["cuda_driver"] == version_text(version_pair(real.cudaDriverGetVersion()[1]))
    assert facts["cuda"] == (facts["cuda_toolkit"] or facts["cuda_driver"])


def test_old_device_reports_stay_readable() -> None:
    """A schema-1 report (bench/results/bundles/digits-vit, one ``cuda`` field) still loads and renders;
    a schema-2 report must carry the three CUDA fields."""
    report = load_device_report(FIXTURES / "device_report_v1_digits.json")
    assert report["schema_version"] == 1 and "cuda_driver" not in report["device"]
    assert f"**CUDA:** {report['device']['cuda']}" in render_device_markdown(report)
    v2 = {**report, "schema_version": 2}
    with pytest.raises(ArtifactError, match="key 'device.cuda_driver' is missing"):
        validate_device_report(v2)
    v2["device"] = {**report["device"], "cuda": "12.6.68", "cuda_driver": "12.6", "cuda_toolkit": "12.6.68",
                    "cuda_python": {"package": "cuda-python 12.6.2", "runtime": "12.6"}}
    text = render_device_markdown(validate_device_report(v2))
    assert "**CUDA driver:** 12.6 · **CUDA toolkit:** 12.6.68 · **cuda-python:** cuda-python 12.6.2 " \
           "(bundles CUDA 12.6)" in text


def test_device_facts_on_a_fake_jetson(tmp_path: Path) -> None:
    release = tmp_path / "nv_tegra_release"
    release.write_text(ORIN_RELEASE)
    vj = tmp_path / "version.json"
    vj.write_text(json.dumps({"cuda": {"version": "12.6.68"}}))
    facts = device_facts(gpu=GpuInfo("Orin (nvgpu)", "8.7", "test"), run=_runner({"nvpmodel": NVPMODEL_OUT}),
                         release_file=release, model_file=tmp_path / "absent", cuda_file=vj)
    assert facts["gpu"] == {"name": "Orin (nvgpu)", "compute_capability": "8.7", "source": "test"}
    assert facts["jetson"] == {"l4t_release": "R36.4.0", "power_mode": "MAXN", "model": None}
    assert facts["hostname"] and facts["platform"] and facts["onnxruntime"]
    off = device_facts(gpu=GpuInfo(), run=_runner({}), release_file=tmp_path / "absent", cuda_file=tmp_path / "absent")
    assert off["gpu"] is None and off["jetson"] is None
