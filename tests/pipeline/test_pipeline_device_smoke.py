"""bench/device_smoke.sh and its helper bench/gpu_latency.py, checked on the CPU before a GPU is lent: the helper's
measuring path on a tiny timm model, its plan and version probe, and the script's dry run (every part listed,
each skip with its reason, meta.json with device, versions, date and command)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).parents[2]
PARTS = ["cuda-python", "gpu-latency", "digits-run", "device-bench", "latency-run", "device-latency", "latency-table-run",
         "pytest-tensorrt"]


@pytest.fixture(scope="module")
def gpu_latency() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_latency", ROOT / "bench" / "gpu_latency.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_latency_times_original_once_and_compressed_per_alignment(gpu_latency: ModuleType, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PELA_EXPORT_CACHE", str(tmp_path / "cache"))
    code = gpu_latency.main(["--model", "tiny_timm:deit_tiny_64", "--device", "cpu", "--dtype", "fp32",
                             "--batch-sizes", "1,2", "--aligns", "none,8,512", "--runs", "2", "--warmup", "0",
                             "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")])
    assert code == 0
    result = json.loads((tmp_path / "out" / "gpu_latency.json").read_text())
    rows = [r for r in result["rows"] if r["backend"] == "torch-cpu-fp32"]
    assert [(r["variant"], r["align"], r["batch"]) for r in rows] == [
        ("original", None, 1), ("original", None, 2), ("compressed", None, 1), ("compressed", None, 2),
        ("compressed", 8, 1), ("compressed", 8, 2)]
    params = {(r["variant"], r["align"]): r["params"] for r in rows}
    assert params[("compressed", 8)] <= params[("compressed", None)] < params[("original", None)]
    assert all(r["p50_ms"] > 0 and r["runs"] == 2 for r in rows)
    assert result["settings"]["aligns"] == [None, 8, 512] and result["command"].startswith("python bench/gpu_latency.py")
    # an alignment wider than the layers shrinks nothing: a note, and the other rows still come (digits at --align 64)
    assert any("align512: not compressed" in n and "would not save parameters" in n for n in result["notes"])
    md = (tmp_path / "out" / "gpu_latency.md").read_text()
    assert "| tiny_timm:deit_tiny_64 | torch-cpu-fp32 | compressed | 8 | 2 |" in md
    assert any("ONNX Runtime CUDA EP skipped" in n for n in result["notes"])  # --device cpu: never the CUDA EP
    assert not list((tmp_path / "out").glob("**/*.onnx"))  # models stay in --work, out of the results folder


def test_gpu_latency_plan_and_versions(gpu_latency: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_latency.main(["--dry-run"]) == 0
    plan = capsys.readouterr().out
    for text in ("default: original + compressed (unaligned, --align 8, --align 64) at batch 1, 8, 32, torch cuda fp16",
                 "timm:deit_small_patch16_224:"):
        assert text in plan
    assert gpu_latency.main(["--versions", str(tmp_path / "v.json")]) == 0
    found = json.loads((tmp_path / "v.json").read_text())
    assert {"cuda_driver", "cuda_toolkit", "cuda_python", "tensorrt"} <= set(found["device_facts"])
    assert "CPUExecutionProvider" in found["onnxruntime"]["providers"] and "version" in found["torch"]


def test_gpu_latency_without_cuda_says_so(gpu_latency: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    assert gpu_latency.main(["--model", "default", "--batch-sizes", "1"]) == 3
    assert "skipped, torch sees no CUDA GPU" in capsys.readouterr().out


def test_device_smoke_dry_run_lists_every_part(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path)}
    done = subprocess.run(["bash", str(ROOT / "bench" / "device_smoke.sh"), "--dry-run", "--results",
                           str(tmp_path / "res")], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    meta = json.loads((tmp_path / "res" / "meta.json").read_text())
    assert [p["part"] for p in meta["parts"]] == PARTS
    assert meta["dry_run"] and meta["date"] and meta["device"] and meta["versions"]["device_facts"]
    assert meta["command"] == f"bash bench/device_smoke.sh --dry-run --results {tmp_path / 'res'}"
    for p in meta["parts"]:
        assert p["status"] in ("dry-run", "skipped") and p["note"], p  # a command to run, or why not
    import torch

    gpu = {p["part"]: p for p in meta["parts"]}["gpu-latency"]
    if not torch.cuda.is_available():
        assert gpu["status"] == "skipped" and "torch sees no CUDA GPU" in gpu["note"]
    assert "| digits-run | dry-run |" in (tmp_path / "res" / "summary.md").read_text()
    assert (tmp_path / "gpu-smoke.tar.gz").is_file()  # the copy a device session takes home through $OUT
