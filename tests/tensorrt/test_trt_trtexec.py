"""The trtexec command per TensorRT version (exact flags), and its agreement with the builder's script."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
from fake_tensorrt import make_fake_tensorrt
from trt_testutil import ORIN

from pela_export.errors import OptionError
from pela_export.tensorrt import (
    BuildOptions,
    build_engine,
    inspect_onnx,
    trtexec_command,
    trtexec_shell,
)

SHAPES = ["--minShapes=input:1x3x4x4", "--optShapes=input:1x3x4x4", "--maxShapes=input:8x3x4x4"]
COMMON = ["--memPoolSize=workspace:1024", "--builderOptimizationLevel=5", "--timingCacheFile=t.cache"]


def _cmd(models: dict[str, Path], variant: str, version: str, **kw: Any) -> list[str]:
    opts = BuildOptions(workspace_mib=1024, opt_level=5, timing_cache=Path("t.cache"), **kw)
    argv = trtexec_command("m.onnx", "m.plan", opts, version, graph=inspect_onnx(models[variant]))
    assert argv[:3] == ["trtexec", "--onnx=m.onnx", "--saveEngine=m.plan"]
    return argv[3:]


@pytest.mark.parametrize("version,expected", [
    ("8.6", ["--explicitBatch", "--fp16", *SHAPES, *COMMON]),
    ("8.6.1", ["--explicitBatch", "--fp16", *SHAPES, *COMMON]),
    ("10.3", ["--fp16", *SHAPES, *COMMON]),
    ("10.13.3", ["--fp16", *SHAPES, *COMMON]),
    ("10.16", ["--fp16", *SHAPES, *COMMON]),
])
def test_fp16_weakly_typed(models: dict[str, Path], version: str, expected: list[str]) -> None:
    assert _cmd(models, "fp32", version, precision="fp16") == expected


def test_11_has_no_precision_flags(models: dict[str, Path]) -> None:
    assert _cmd(models, "fp16", "11.1", precision="auto") == [*SHAPES, *COMMON]
    assert _cmd(models, "int8", "11.1", precision="int8") == [*SHAPES, *COMMON]
    with pytest.raises(OptionError, match="--trt-precision"):
        _cmd(models, "fp32", "11.1", precision="fp16")


def test_strongly_typed_on_10(models: dict[str, Path]) -> None:
    assert _cmd(models, "fp16", "10.16", precision="auto", strongly_typed=True) == ["--stronglyTyped", *SHAPES, *COMMON]


def test_int8(models: dict[str, Path], calib_cache: Path) -> None:
    assert _cmd(models, "int8", "8.6", precision="int8") == ["--explicitBatch", "--int8", *SHAPES, *COMMON]
    assert _cmd(models, "int8", "10.3", precision="fp16+int8") == ["--fp16", "--int8", *SHAPES, *COMMON]
    assert _cmd(models, "fp32", "10.3", precision="int8", calibration_cache=calib_cache) == \
        ["--int8", "--calib=m.calib.cache", *SHAPES, *COMMON]  # the per-version copy beside the plan
    with pytest.raises(OptionError, match="calib"):
        _cmd(models, "fp32", "10.3", precision="int8")


def test_dla_version_and_hardware_compat(models: dict[str, Path]) -> None:
    assert _cmd(models, "fp32", "10.3", precision="fp16", dla_core=0)[-2:] == ["--useDLACore=0", "--allowGPUFallback"]
    assert _cmd(models, "fp32", "10.3", precision="fp16", dla_core=1, gpu_fallback=False)[-1] == "--useDLACore=1"
    assert _cmd(models, "fp32", "8.6", version_compatible=True, hardware_compat="ampere+")[-2:] == \
        ["--versionCompatible", "--hardwareCompatibilityLevel=ampere+"]
    assert _cmd(models, "fp32", "10.13", hardware_compat="same-compute-capability")[-1] == \
        "--hardwareCompatibilityLevel=sameComputeCapability"
    with pytest.raises(OptionError, match="--hardware-compat"):
        _cmd(models, "fp32", "10.3", hardware_compat="same-compute-capability")


def test_static_input_has_no_shapes_and_minimal_command(tmp_path: Path) -> None:
    from onnx import TensorProto, helper
    from trt_testutil import make_model, save

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 4, 4])
    p = save(make_model([helper.make_node("Relu", ["input"], ["output"])], inputs=[x], outputs=[y]), tmp_path / "s.onnx")
    assert trtexec_command(p, tmp_path / "s.plan", BuildOptions(), "10.3") == \
        ["trtexec", f"--onnx={p}", f"--saveEngine={tmp_path / 's.plan'}"]


def test_shell_quoting() -> None:
    assert trtexec_shell(["trtexec", "--onnx=my model.onnx"]) == "trtexec '--onnx=my model.onnx'"


@pytest.mark.parametrize("fake_version,version", [("8.6.1", "8.6.1"), ("10.3.0", "10.3.0"), ("11.1", "11.1")])
def test_builder_script_matches_trtexec_command(models: dict[str, Path], tmp_path: Path, fake_version: str,
                                                version: str) -> None:
    variant, prec = ("fp16", "auto") if version == "11.1" else ("fp32", "fp16")
    opts = BuildOptions(precision=prec, workspace_mib=64)
    rec = build_engine(models[variant], tmp_path / "out" / "m.plan", opts, trt=make_fake_tensorrt(fake_version), gpu=ORIN)
    script = rec.trtexec_script.read_text()
    body = script.split('cd "$(dirname "$0")"\n', 1)[1]
    argv = shlex.split(body.replace("\\\n", " "))
    expected = trtexec_command(models[variant], rec.plan_path, opts, version)
    assert argv[3:] == expected[3:]  # same flags; paths are relative in the script
    assert argv[1] == f"--onnx=../{models[variant].name}" and argv[2] == "--saveEngine=m.plan"
    assert rec.metadata["trtexec"]["command"] == trtexec_shell(expected)


def test_scalar_shapes_only_from_10(models: dict[str, Path]) -> None:
    """trtexec 8.6 parses every shape as NxM... ('scalar' throws there); rank-0 inputs are static, so they are
    left out of its shape lists, while 10.x writes 'scalar'."""
    from dataclasses import replace

    from pela_export.tensorrt import ShapeRange, features_for_version, plan_build
    from pela_export.tensorrt.trtexec import trtexec_argv

    g = inspect_onnx(models["fp32"])
    for version, want in (("8.6", "input:1x3x4x4"), ("8.6.1", "input:1x3x4x4"), ("10.3", "input:1x3x4x4,t:scalar")):
        plan = plan_build(BuildOptions(), features_for_version(version), g)
        plan = replace(plan, profiles={**plan.profiles, "t": ShapeRange((), (), ())})
        argv = trtexec_argv("m.onnx", "m.plan", plan)
        assert f"--minShapes={want}" in argv and f"--optShapes={want}" in argv, (version, argv)
