"""cuda-python on Jetson: the runtime the wheel bundles must not be newer than the driver's CUDA (Jetson drivers
have no minor version compatibility), so the backend checks it at start-up and names the pin for the JetPack.

The fake cudart returns what the real one does (evidence: cudaRuntimeGetVersion is the wheel's own version,
12090 for cuda-python 12.9, and cudaDriverGetVersion is 0 without a driver); where cuda-bindings is installed
the same queries run on it.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from fake_cuda import make_fake_cudart

import pela_export.tensorrt.cuda_versions as cv
from pela_export.errors import DependencyError
from pela_export.pipeline.package_scripts import BUILD_ENGINES
from pela_export.tensorrt import CudaPythonBackend
from pela_export.tensorrt.cuda_backend import CUDA_PYTHON_FIX, DRIVER_ERRORS, import_cudart

VERSION_QUERIES = {"cudaDriverGetVersion", "cudaRuntimeGetVersion"}


@pytest.mark.parametrize("driver,runtime,pin,jetpack", [
    (12060, 12090, "cuda-python==12.6.*", "JetPack 6.1 / 6.2"),  # pip's default 12.x on JetPack 6.1/6.2
    (12020, 12060, "cuda-python==12.2.*", "JetPack 6.0"),
    (13000, 13050, "cuda-python==13.0.*", "JetPack 7"),
    (12060, 13000, "cuda-python==12.6.*", "JetPack 6.1 / 6.2"),  # cuda-python 13 on JetPack 6
])
def test_jetson_runtime_newer_than_driver_names_the_pin(driver: int, runtime: int, pin: str, jetpack: str) -> None:
    rt = make_fake_cudart(driver_version=driver, runtime_version=runtime)
    with pytest.raises(DependencyError) as exc:
        CudaPythonBackend(cudart=rt, tegra=True)
    rt_text, drv_text = f"{runtime // 1000}.{runtime % 1000 // 10}", f"{driver // 1000}.{driver % 1000 // 10}"
    assert f"bundles the CUDA {rt_text} runtime" in exc.value.problem
    assert f"supports CUDA up to {drv_text}" in exc.value.problem and "cudaErrorInsufficientDriver" in exc.value.problem
    assert f"pip install '{pin}'` ({jetpack})" in exc.value.fix
    assert rt._fake.names_called() == VERSION_QUERIES  # refused before any call that initialises CUDA


def test_matching_or_older_runtime_starts() -> None:
    for driver, runtime in ((12060, 12060), (12060, 12020), (13000, 12090)):
        b = CudaPythonBackend(cudart=make_fake_cudart(driver_version=driver, runtime_version=runtime), tegra=True)
        assert (b.versions.driver, b.versions.runtime) == (driver, runtime)
        b.close()


def test_desktop_driver_runs_a_newer_minor_but_not_a_newer_major() -> None:
    """CUDA minor version compatibility (desktop drivers): 12.9 on a 12.2 driver starts; 13.0 on 12.8 does not."""
    CudaPythonBackend(cudart=make_fake_cudart(driver_version=12020, runtime_version=12090), tegra=False).close()
    with pytest.raises(DependencyError, match="a CUDA runtime of a later major needs a newer driver") as exc:
        CudaPythonBackend(cudart=make_fake_cudart(driver_version=12080, runtime_version=13000), tegra=False)
    assert "`pip install 'cuda-python>=12,<13'`" in exc.value.fix


def test_no_driver_is_named_before_any_cuda_call() -> None:
    rt = make_fake_cudart(driver_version=0, runtime_version=12090)
    with pytest.raises(DependencyError, match=r"no NVIDIA driver is loaded \(cudaDriverGetVersion reports 0\)") as e:
        CudaPythonBackend(cudart=rt)
    assert "nvidia-smi" in (e.value.fix or "") and rt._fake.names_called() == VERSION_QUERIES


def test_jetson_is_detected_from_nv_tegra_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = tmp_path / "nv_tegra_release"
    monkeypatch.setattr(cv, "TEGRA_RELEASE", release)
    CudaPythonBackend(cudart=make_fake_cudart(driver_version=12060, runtime_version=12090)).close()  # no file: desktop
    release.write_text("# R36 (release), REVISION: 4.0\n")
    with pytest.raises(DependencyError, match="Jetson drivers do not run a newer CUDA minor"):
        CudaPythonBackend(cudart=make_fake_cudart(driver_version=12060, runtime_version=12090))


def test_fixes_and_bundle_instructions_carry_the_jetpack_pins() -> None:
    """The generic fix, the cudaErrorInsufficientDriver fix and the bundle's build_engines.sh all name the pins."""
    for text in (CUDA_PYTHON_FIX, DRIVER_ERRORS["cudaErrorInsufficientDriver"], BUILD_ENGINES):
        for pin in ("cuda-python==12.2.*", "cuda-python==12.6.*", "cuda-python==13.0.*"):
            assert pin in text, (pin, text[:200])
    assert "'cuda-python>=12,<13'" not in BUILD_ENGINES.split("desktop GPU:")[0]  # never the unpinned line for Jetson


def test_version_queries_on_the_real_bindings() -> None:
    """Where cuda-python is installed: the runtime version is the wheel's own (its distribution's major.minor),
    the driver's is an integer (0 without a driver), and the start-up check reads them as the fake does."""
    real = import_cudart()
    if real is None:
        pytest.skip("cuda-python is not installed")
    v = cv.read_versions(real)
    dist = cv.cuda_python_package()
    assert v.runtime is not None and v.driver is not None and dist is not None
    assert cv.version_pair(v.runtime) == tuple(int(x) for x in dist.split()[1].split(".")[:2])
    problem = cv.startup_problem(v, tegra=False, package=dist)
    if v.driver == 0:
        assert problem is not None and "no NVIDIA driver is loaded" in problem.problem
    elif v.runtime_pair <= v.driver_pair:  # type: ignore[operator]
        assert problem is None
