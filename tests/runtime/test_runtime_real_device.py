"""On a real Jetson/GPU with TensorRT: device-bench builds, checks and times the digits bundle on TensorRT with
torch made unimportable, so the torch-free runner (cuda-python memory and streams) is what ran.

Gated on TensorRT's bindings and on the cuda-python backend starting (``torch_free_cuda``), never on torch;
run on the device with ``python -m pytest -q -m tensorrt tests/runtime/test_runtime_real_device.py``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pela_export.tensorrt._trt import tensorrt_available

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu,
              pytest.mark.skipif(not tensorrt_available(), reason="TensorRT Python bindings not installed")]

SCRIPT = textwrap.dedent(r"""
    import json, sys
    for mod in ("torch", "timm", "torchvision", "transformers"):
        sys.modules[mod] = None  # the device path: numpy, TensorRT, cuda-python only
    from pela_export.cli.main import main
    code = main(["device-bench", sys.argv[1], "--out", sys.argv[2], "--backend", "tensorrt", "--runs", "30",
                 "--warmup", "2", "--batch-sizes", "1"])
    print("RESULT " + json.dumps({"code": code, "torch": sys.modules.get("torch") is not None}))
""")


def test_device_bench_runs_tensorrt_without_torch(digits_run: Path, tmp_path: Path, torch_free_cuda: object) -> None:
    env = {**os.environ, "PELA_EXPORT_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(digits_run / "bundle.tar.gz"), str(tmp_path / "dev")],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr
    result = json.loads(next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT "))[len("RESULT "):])
    assert result == {"code": 0, "torch": False}, done.stderr
    report = json.loads((tmp_path / "dev" / "device-report.json").read_text())
    assert report["device"]["backend"] == "tensorrt" and report["device"]["fallback_reason"] is None
    assert report["device"]["cuda_driver"] and report["device"]["cuda_python"]
    for name, v in report["variants"].items():
        assert v["backend"] == "tensorrt" and v["golden"]["ok"], (name, v["golden"])
