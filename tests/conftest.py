import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
if str(FIXTURES) not in sys.path:
    sys.path.insert(0, str(FIXTURES))


@pytest.fixture(scope="session")
def default_cache(tmp_path_factory):
    """One trained embedded default per test session (shared cache dir)."""
    import os

    cache = os.environ.get("PELA_EXPORT_CACHE")
    return Path(cache) if cache else tmp_path_factory.mktemp("pela-cache")


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory, default_cache):
    """One `pela-export run` of the embedded default ending in its deployment bundle (``<run>/bundle`` and
    ``<run>/bundle.tar.gz``); shared by the package and runtime tests, so treat it as read-only (copy to tamper)."""
    from pela_export.cli.main import main

    out = tmp_path_factory.mktemp("digits-run") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PELA_EXPORT_CACHE", str(default_cache))
        code = main(["run", "--out", str(out), "--skip", "bench", "--skip", "report", "--calib-samples", "32",
                     "--eval-samples", "200", "--no-progress"])
    assert code == 0
    return out


@pytest.fixture
def torch_free_cuda():
    """The gate of real-device tests: a started cuda-python CUDA backend (what the device runtime uses instead of
    torch), closed afterwards; the test is skipped, saying why, where it does not start. Never gate on torch."""
    from cuda_gate import start_cuda_backend

    backend, problem = start_cuda_backend()
    if backend is None:
        pytest.skip(f"needs the torch-free CUDA backend (cuda-python) to start on a GPU: {problem}")
    yield backend
    backend.close()
