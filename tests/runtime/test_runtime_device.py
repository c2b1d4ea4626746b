"""Device facts: Jetson L4T release and power mode from (fake) /etc/nv_tegra_release and nvpmodel,
CUDA version from version.json; null where absent."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from pela_export.runtime import device_facts, jetson_facts, parse_nvpmodel, parse_tegra_release
from pela_export.runtime.device import cuda_version
from pela_export.tensorrt import GpuInfo

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
    import pela_export.runtime.device as device_mod

    monkeypatch.setattr(device_mod, "_cuda_from_cuda_python", lambda: None)  # as on a device without cuda-python
    vj = tmp_path / "version.json"
    vj.write_text(json.dumps({"cuda": {"name": "CUDA SDK", "version": "12.6.68"}}))
    assert cuda_version(version_file=vj, run=_runner({})) == "12.6.68"
    smi = "| NVIDIA-SMI 560.35   Driver Version: 560.35   CUDA Version: 12.6 |"
    assert cuda_version(version_file=tmp_path / "absent", run=_runner({"nvidia-smi": smi})) == "12.6"
    assert cuda_version(version_file=tmp_path / "absent", run=_runner({})) is None
    monkeypatch.setattr(device_mod, "_cuda_from_cuda_python", lambda: "12.2")
    assert cuda_version(version_file=vj, run=_runner({})) == "12.2"  # cuda-python wins when installed


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
