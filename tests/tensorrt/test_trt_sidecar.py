"""Which TensorRT runtime may run a plan, as NVIDIA documents it (developer guide, "Version Compatibility";
support matrix 11.4.1, "Engine Portability"): standard plans need the very release (major.minor.patch.build),
version-compatible plans run on the same or a later release of their major and on the documented later
majors only (8 -> 9/10, 10 -> 11)."""
from __future__ import annotations

from pathlib import Path

import pytest
from fake_tensorrt import make_fake_tensorrt
from trt_testutil import ORIN

from pela_export.errors import ArtifactError
from pela_export.tensorrt import BuildOptions, HostBackend, TrtRunner, build_engine, compatibility_problems
from pela_export.tensorrt.sidecar import same_release, version_problem


def _meta(built: str, vc: bool) -> dict[str, object]:
    return {"tensorrt_version": built, "options": {"version_compatible": vc},
            "gpu": {"name": ORIN.name, "compute_capability": ORIN.compute_capability}}


@pytest.mark.parametrize("built,local,ok", [
    ("10.3.0", "10.3.0", True),
    ("10.3.0.30", "10.3.0.30", True),
    ("10.3.0.26", "10.3.0.30", False),  # same major.minor.patch, another build: not the same release
    ("10.3.0", "10.3.0.30", True),  # one side does not report its build number: the three numbers decide
    ("10.3", "10.3.0", True),
    ("10.3.0", "10.3.1", False),
    ("10.3.0", "10.16", False),
    ("8.6.1", "10.3.0", False),
])
def test_standard_plans_need_the_same_release(built: str, local: str, ok: bool) -> None:
    assert same_release(built, local) is ok
    problems = compatibility_problems(_meta(built, False), local, ORIN)
    assert (problems == []) is ok
    if not ok:
        assert f"built with TensorRT {built}, this device has TensorRT {local}" in problems[0]
        assert "major.minor.patch.build equal" in problems[0]


@pytest.mark.parametrize("built,local,why", [
    ("10.3.0", "10.3.0", None),
    ("10.3.0", "10.16", None),  # later release of the same major
    ("10.3.0.26", "10.3.0.30", None),  # later build of the same release
    ("11.0.0", "11.1", None),  # "11.0 ... compatible with TensorRT 11.1 and later 11.x versions"
    ("10.3.0", "11.1", None),  # "engines built with TensorRT 10 work with TensorRT 11"
    ("8.6.1", "10.3.0", None),  # "engines built with TensorRT 8 work with TensorRT 9 and TensorRT 10 runtimes"
    ("8.6.1", "9.3.0", None),
    ("8.6.1", "11.1", "across majors only"),  # "a TensorRT 8 engine cannot run with a TensorRT 11 runtime"
    ("10.16", "10.3.0", "never an earlier one"),
    ("10.3.0.30", "10.3.0.26", "never an earlier one"),
    ("11.1", "10.16", "never an earlier one"),
    ("8.5.3", "8.6.1", "8.6 or later"),  # version compatibility exists from 8.6 on
])
def test_version_compatible_plans_follow_the_documented_pairs(built: str, local: str, why: str | None) -> None:
    got = version_problem(built, local, version_compatible=True)
    if why is None:
        assert got is None
        assert compatibility_problems(_meta(built, True), local, ORIN) == []
    else:
        assert got is not None and why in got and f"built with TensorRT {built}, this device has TensorRT {local}" in got


def test_runner_runs_a_version_compatible_10x_plan_on_11(models: dict[str, Path], tmp_path: Path) -> None:
    """End to end through TrtRunner's check: a 10.3 version-compatible plan on TensorRT 11.1 is accepted (and the
    lean runtime it embeds is allowed to load); an 8.6 one is refused with the reason."""
    plan = build_engine(models["fp32"], tmp_path / "a" / "model.plan", BuildOptions(version_compatible=True),
                        trt=make_fake_tensorrt("10.3.0"), gpu=ORIN).plan_path
    trt = make_fake_tensorrt("11.1")
    TrtRunner(plan, trt=trt, backend=HostBackend(ORIN))
    assert trt._fake.called("Runtime", "set:engine_host_code_allowed")[0].args == (True,)
    old = build_engine(models["fp32"], tmp_path / "b" / "model.plan", BuildOptions(version_compatible=True),
                       trt=make_fake_tensorrt("8.6.1"), gpu=ORIN).plan_path
    with pytest.raises(ArtifactError, match="across majors only from 8 to 9/10 and from 10 to 11"):
        TrtRunner(old, trt=make_fake_tensorrt("11.1"), backend=HostBackend(ORIN))
    TrtRunner(old, trt=make_fake_tensorrt("10.16"), backend=HostBackend(ORIN))
