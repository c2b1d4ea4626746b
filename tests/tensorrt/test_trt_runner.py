"""TrtRunner: its TensorRT calls against each version's API, and the build-record checks.

Running a real engine needs CUDA; here the runner drives fake TensorRT modules
with host memory (HostBackend), which exercises exactly the name-based calls
(set_input_shape, set_tensor_address, execute_async_v3) it makes on a GPU.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_tensorrt import VERSIONS, load_manifest, make_fake_tensorrt
from trt_testutil import ORIN, relu_kernel

import pela_export.tensorrt.runner as runner_mod
from pela_export.errors import ArtifactError, InputShapeError
from pela_export.tensorrt import (
    BuildOptions,
    GpuInfo,
    HostBackend,
    TrtRunner,
    build_engine,
    sidecar_path,
)
from pela_export.tensorrt.runner import RUNNER_API

X = np.linspace(-1, 1, 2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)


def _plan(tmp_path: Path, onnx_path: Path, version: str, **kw: Any) -> Path:
    kw.setdefault("precision", "auto")
    rec = build_engine(onnx_path, tmp_path / "out" / "model.plan", BuildOptions(**kw), trt=make_fake_tensorrt(version),
                       gpu=ORIN, rebuild_command="pela-export build model.onnx --out out")
    return rec.plan_path


@pytest.mark.parametrize("version", VERSIONS)
def test_runner_api_names_exist_in_every_version(version: str) -> None:
    m = load_manifest(version)
    for cls, names in RUNNER_API.items():
        have = set(m["enums"].get(cls) or m["classes_with_inherited"].get(cls) or m["classes"].get(cls) or [])
        assert have, f"{cls} missing in {version}"
        assert set(names) <= have, f"{version}: {cls} lacks {sorted(set(names) - have)}"


def test_runner_source_uses_only_declared_names() -> None:
    """Every attribute the runner reads on the runtime/engine/context is declared in RUNNER_API."""
    tree = ast.parse(Path(runner_mod.__file__).read_text())
    holders = {"engine", "context", "runtime", "eng"}
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            v = node.value
            if (isinstance(v, ast.Attribute) and isinstance(v.value, ast.Name) and v.value.id == "self"
                    and v.attr in holders) or (isinstance(v, ast.Name) and v.id in holders):
                used.add(node.attr)
    declared = {n for names in RUNNER_API.values() for n in names}
    assert used and used <= declared, sorted(used - declared)


@pytest.mark.parametrize("version", VERSIONS)
def test_run_against_each_version(version: str, models: dict[str, Path], tmp_path: Path) -> None:
    plan = _plan(tmp_path, models["fp32"], version)
    trt = make_fake_tensorrt(version, kernel=relu_kernel)
    r = TrtRunner(plan, trt=trt, backend=HostBackend(ORIN))
    assert [(t.name, t.is_input, t.shape, t.trt_dtype) for t in r.io] == [
        ("input", True, (-1, 3, 4, 4), "FLOAT"), ("output", False, (-1, 3, 4, 4), "FLOAT")]
    out = r.run({"input": X})
    np.testing.assert_array_equal(out["output"], np.maximum(X, 0))
    calls = trt._fake.names_called()
    assert {"Runtime.deserialize_cuda_engine", "ICudaEngine.create_execution_context",
            "IExecutionContext.set_input_shape", "IExecutionContext.set_tensor_address",
            "IExecutionContext.execute_async_v3"} <= calls
    assert trt._fake.called("IExecutionContext", "set_input_shape")[0].args == ("input", (2, 3, 4, 4))
    assert {c.args[0] for c in trt._fake.called("IExecutionContext", "set_tensor_address")} == {"input", "output"}
    assert trt._fake.called("IExecutionContext", "execute_async_v3")[0].args == (HostBackend.stream_handle,)
    assert "Runtime.set:engine_host_code_allowed" not in calls


def test_benchmark_and_compare(models: dict[str, Path], tmp_path: Path) -> None:
    plan = _plan(tmp_path, models["fp32"], "10.3.0")
    r = TrtRunner(plan, trt=make_fake_tensorrt("10.3.0", kernel=relu_kernel), backend=HostBackend(ORIN))
    stats = r.benchmark({"input": X}, warmup=2, runs=7)
    assert stats.n_runs == 7 and stats.batch == 2 and stats.p50_ms <= stats.p99_ms
    cmp = r.compare_with_onnxruntime(models["fp32"], {"input": X})
    assert cmp.ok and cmp.cand_name == "tensorrt 10.3.0"
    wrong = TrtRunner(plan, trt=make_fake_tensorrt("10.3.0"), backend=HostBackend(ORIN))  # no kernel: zeros
    bad = wrong.compare_with_onnxruntime(models["fp32"], {"input": X})
    assert not bad.ok and bad.failures()[0].startswith("output:")


def test_input_checks(models: dict[str, Path], tmp_path: Path) -> None:
    r = TrtRunner(_plan(tmp_path, models["fp32"], "10.16"), trt=make_fake_tensorrt("10.16"), backend=HostBackend(ORIN))
    with pytest.raises(InputShapeError, match=r"outside the engine's profile.*\(1, 3, 4, 4\) \.\. \(8, 3, 4, 4\)"):
        r.run({"input": np.zeros((9, 3, 4, 4), np.float32)})
    with pytest.raises(InputShapeError, match="missing"):
        r.run({"image": X})
    with pytest.raises(InputShapeError, match="expects"):
        r.run({"input": np.zeros((2, 4, 4, 4), np.float32)})
    with pytest.raises(InputShapeError, match="float32"):
        r.run({"input": X.astype(np.complex64)})
    assert r.run({"input": X.astype(np.float64)})["output"].dtype == np.float32  # same-kind cast


def test_version_mismatch_is_a_clear_error(models: dict[str, Path], tmp_path: Path) -> None:
    plan = _plan(tmp_path, models["fp32"], "10.3.0")
    with pytest.raises(ArtifactError) as exc:
        TrtRunner(plan, trt=make_fake_tensorrt("10.16"), backend=HostBackend(ORIN))
    msg = str(exc.value)
    assert "built with TensorRT 10.3.0, this device has TensorRT 10.16" in msg
    assert "rebuild the engine on this device: pela-export build model.onnx --out out" in msg
    assert "model.trtexec.sh" in msg


def test_mismatch_without_recorded_command_gives_trtexec_for_this_version(models: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    rec = build_engine(models["fp32"], tmp_path / "model.plan", BuildOptions(precision="fp16"),
                       trt=make_fake_tensorrt("8.6.1"), gpu=ORIN)
    with pytest.raises(ArtifactError) as exc:
        TrtRunner(rec.plan_path, trt=make_fake_tensorrt("10.3.0"), backend=HostBackend(ORIN))
    fix = exc.value.fix
    assert f"trtexec --onnx={tmp_path / 'model.onnx'} --saveEngine={rec.plan_path} --fp16" in fix
    assert "--explicitBatch" not in fix  # regenerated for 10.3, not copied from the 8.6 build


def test_gpu_mismatch(models: dict[str, Path], tmp_path: Path) -> None:
    plan = _plan(tmp_path, models["fp32"], "10.13.3")
    with pytest.raises(ArtifactError, match=r"built for Orin \(nvgpu\) \(compute capability 8.7\), this GPU is "
                                            r"NVIDIA Thor \(compute capability 11.0\)"):
        TrtRunner(plan, trt=make_fake_tensorrt("10.13.3"), backend=HostBackend(GpuInfo("NVIDIA Thor", "11.0")))
    with pytest.raises(ArtifactError, match="GPU-model specific"):
        TrtRunner(plan, trt=make_fake_tensorrt("10.13.3"), backend=HostBackend(GpuInfo("Other Orin", "8.7")))
    TrtRunner(plan, trt=make_fake_tensorrt("10.13.3"), backend=HostBackend(GpuInfo()))  # unknown GPU: not checked


def test_hardware_compatible_plan_runs_on_other_ampere_gpus(models: dict[str, Path], tmp_path: Path) -> None:
    plan = _plan(tmp_path, models["fp32"], "10.3.0", hardware_compat="ampere+")
    TrtRunner(plan, trt=make_fake_tensorrt("10.3.0"), backend=HostBackend(GpuInfo("NVIDIA RTX A6000", "8.6")))
    with pytest.raises(ArtifactError, match="ampere"):
        TrtRunner(plan, trt=make_fake_tensorrt("10.3.0"), backend=HostBackend(GpuInfo("Tesla T4", "7.5")))


def test_version_compatible_plan_runs_on_newer_same_major(models: dict[str, Path], tmp_path: Path) -> None:
    plan = _plan(tmp_path, models["fp32"], "10.3.0", version_compatible=True)
    trt = make_fake_tensorrt("10.16")
    TrtRunner(plan, trt=trt, backend=HostBackend(ORIN))
    assert trt._fake.called("Runtime", "set:engine_host_code_allowed")[0].args == (True,)
    newer = _plan(tmp_path / "newer", models["fp32"], "10.16", version_compatible=True)
    with pytest.raises(ArtifactError, match="never an earlier one"):  # 10.x on 11: tests/tensorrt/test_trt_sidecar.py
        TrtRunner(newer, trt=make_fake_tensorrt("10.3.0"), backend=HostBackend(ORIN))


def test_sidecar_problems(models: dict[str, Path], tmp_path: Path) -> None:
    plan = _plan(tmp_path, models["fp32"], "8.6.1")
    trt = make_fake_tensorrt("8.6.1")
    plan.write_bytes(plan.read_bytes() + b"x")
    with pytest.raises(ArtifactError, match="checksum"):
        TrtRunner(plan, trt=trt, backend=HostBackend(ORIN))
    sc = sidecar_path(plan)
    sc.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ArtifactError, match="not a pela-export.tensorrt-plan/1 record"):
        TrtRunner(plan, trt=trt, backend=HostBackend(ORIN))
    sc.unlink()
    with pytest.raises(ArtifactError, match="no build record"):
        TrtRunner(plan, trt=trt, backend=HostBackend(ORIN))
    with pytest.raises(ArtifactError, match="could not deserialise"):  # corrupted plan, check skipped
        plan.write_bytes(b"garbage")
        TrtRunner(plan, trt=trt, backend=HostBackend(ORIN), check_sidecar=False)
    with pytest.raises(ArtifactError, match="not found"):
        TrtRunner(tmp_path / "missing.plan", trt=trt, backend=HostBackend(ORIN))
