"""Real-device tests are gated on the torch-free CUDA backend starting (tests/fixtures/cuda_gate.py, the
``torch_free_cuda`` fixture), not on torch having CUDA: the device runtime runs TensorRT without torch."""
from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

import pytest
from cuda_gate import cuda_backend_problem, start_cuda_backend
from fake_cuda import install_fake_cuda, make_fake_cudart

from pela_export.tensorrt import CudaPythonBackend

TESTS = Path(__file__).parents[1]


def _torch_with_cuda(monkeypatch: pytest.MonkeyPatch, available: bool) -> None:
    """A stand-in torch whose ``cuda.is_available()`` answers ``available`` (the gate must not ask it)."""
    torch = types.ModuleType("torch")
    torch.cuda = types.SimpleNamespace(is_available=lambda: available)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", torch)


def test_gate_opens_on_cuda_python_without_torch_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    _torch_with_cuda(monkeypatch, False)
    rt = make_fake_cudart()
    install_fake_cuda(monkeypatch, rt)
    assert cuda_backend_problem() is None
    backend, problem = start_cuda_backend()
    assert isinstance(backend, CudaPythonBackend) and problem is None and backend._rt is rt
    backend.close()
    assert rt._fake.streams == {}  # the probe cleans up after itself


@pytest.mark.parametrize("cudart", [None, "no-driver", "wheel-too-new-for-jetson"])
def test_gate_stays_closed_when_cuda_python_cannot_start_even_if_torch_has_cuda(
        cudart: str | None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _torch_with_cuda(monkeypatch, True)
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.0\n")
    import pela_export.tensorrt.cuda_versions as cv

    monkeypatch.setattr(cv, "TEGRA_RELEASE", release)
    fake = {None: None, "no-driver": make_fake_cudart(driver_version=0),
            "wheel-too-new-for-jetson": make_fake_cudart(driver_version=12060, runtime_version=12090)}[cudart]
    install_fake_cuda(monkeypatch, fake)
    problem = cuda_backend_problem()
    assert problem is not None
    expected = {None: "needs NVIDIA cuda-python", "no-driver": "no NVIDIA driver is loaded",
                "wheel-too-new-for-jetson": "cuda-python==12.6.*"}[cudart]
    assert expected in problem


def test_real_device_tests_never_gate_on_torch() -> None:
    """No real-device test decides on ``torch.cuda.is_available()``; they take the ``torch_free_cuda`` fixture."""
    real = [TESTS / "tensorrt" / "test_trt_real.py", *sorted((TESTS / "runtime").glob("test_*real*.py"))]
    for path in real:
        tree = ast.parse(path.read_text())
        calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        assert not any(c.endswith("cuda.is_available") for c in calls), path
        assert "torch_free_cuda" in path.read_text(), path
