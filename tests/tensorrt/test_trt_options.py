"""BuildOptions validation (each error names its flag), profile parsing and plan_build decisions."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from onnx import TensorProto, helper
from trt_testutil import make_model, relu_model, save

from pela_export.errors import OptionError
from pela_export.tensorrt import (
    BuildOptions,
    ShapeRange,
    features_for_version,
    inspect_onnx,
    parse_profile,
    parse_profiles,
    plan_build,
)
from pela_export.tensorrt.plan import trt_version_number


def test_parse_profile() -> None:
    assert parse_profile("input:1x3x224x224,8x3x224x224,32x3x224x224") == (
        "input", ShapeRange((1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224)))
    assert parse_profile("in:put:2x3") == ("in:put", ShapeRange((2, 3), (2, 3), (2, 3)))  # split on the last ':'
    assert parse_profiles(["a:1x2", "b:1,2,3"])["b"] == ShapeRange((1,), (2,), (3,))


@pytest.mark.parametrize("spec,match", [
    ("1x3x224x224", "no input name"),
    ("input:1x3,2x3", "gives 2 shapes"),
    ("input:1x3xA", "not a shape"),
    ("input:8x3,1x3,16x3", "min <= opt <= max"),
    ("input:1x3,1x3x4,1x3", "different ranks"),
])
def test_bad_profiles_name_the_flag(spec: str, match: str) -> None:
    with pytest.raises(OptionError, match=match) as exc:
        parse_profile(spec)
    assert "--profile" in str(exc.value)


def test_duplicate_profile() -> None:
    with pytest.raises(OptionError, match="--profile given twice"):
        parse_profiles(["x:1", "x:2"])


@pytest.mark.parametrize("kw,flag", [
    ({"precision": "int4"}, "--trt-precision"),
    ({"workspace_mib": 0}, "--workspace"),
    ({"workspace_mib": 1.5}, "--workspace"),
    ({"opt_level": 6}, "--opt-level"),
    ({"opt_level": -1}, "--opt-level"),
    ({"dla_core": -1}, "--dla-core"),
    ({"dla_core": True}, "--dla-core"),
    ({"hardware_compat": "hopper+"}, "--hardware-compat"),
    ({"calibration_cache": "/nonexistent/calib.cache"}, "--calib-cache"),
    ({"max_batch": 0}, "--max-batch"),
    ({"opt_batch": 9}, "--opt-batch"),
    ({"version_compatible": "yes"}, "--version-compatible"),
])
def test_validate_names_the_flag(kw: dict[str, Any], flag: str) -> None:
    with pytest.raises(OptionError) as exc:
        BuildOptions(**kw).validate()
    assert flag in str(exc.value) and exc.value.fix


def test_timing_cache_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="--timing-cache"):
        BuildOptions(timing_cache=tmp_path).validate()


def test_round_trip(tmp_path: Path) -> None:
    opts = BuildOptions(precision="fp16", profiles=parse_profiles(["input:1x3,2x3,4x3"]), workspace_mib=64,
                        timing_cache=tmp_path / "t.cache", dla_core=0, hardware_compat="ampere+")
    assert BuildOptions.from_dict(opts.to_dict()) == opts


def _dyn_model(tmp_path: Path, dims: list[Any]) -> Path:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, dims)
    return save(make_model([helper.make_node("Relu", ["input"], ["output"])], inputs=[x], outputs=[y]), tmp_path / "d.onnx")


def test_default_profile_from_dynamic_batch(tmp_path: Path) -> None:
    g = inspect_onnx(save(relu_model(), tmp_path / "m.onnx"))
    plan = plan_build(BuildOptions(max_batch=32, opt_batch=4), features_for_version("10.3"), g)
    assert plan.profiles == {"input": ShapeRange((1, 3, 4, 4), (4, 3, 4, 4), (32, 3, 4, 4))}
    assert any("min 1, opt 4, max 32" in d for d in plan.decisions)


def test_other_dynamic_axes_need_a_profile(tmp_path: Path) -> None:
    g = inspect_onnx(_dyn_model(tmp_path, ["N", 3, "H", "W"]))
    with pytest.raises(OptionError, match="--profile input:") as exc:
        plan_build(BuildOptions(), features_for_version("10.3"), g)
    assert "input:1x3x1x1" in str(exc.value)
    plan = plan_build(BuildOptions(profiles=parse_profiles(["input:1x3x8x8,1x3x16x16,2x3x32x32"])),
                      features_for_version("10.3"), g)
    assert plan.profiles["input"].max == (2, 3, 32, 32)


@pytest.mark.parametrize("spec,match", [
    ("image:1x3x4x4", "does not have"),
    ("input:1x3x4", "rank 3"),
    ("input:1x4x4x4", "dimension 1 is fixed at 3"),
])
def test_profile_must_fit_the_graph(tmp_path: Path, spec: str, match: str) -> None:
    g = inspect_onnx(save(relu_model(), tmp_path / "m.onnx"))
    with pytest.raises(OptionError, match=match):
        plan_build(BuildOptions(profiles=parse_profiles([spec])), features_for_version("8.6"), g)


def test_static_graph_needs_no_profile(tmp_path: Path) -> None:
    g = inspect_onnx(_dyn_model(tmp_path, [2, 3]))
    assert plan_build(BuildOptions(), features_for_version("11.1"), g).profiles == {}


def test_graph_precision_detection(tmp_path: Path) -> None:
    from trt_testutil import fp16_model, qdq_model

    assert inspect_onnx(relu_model()).precision == "fp32"
    assert inspect_onnx(fp16_model()).precision == "fp16"
    assert inspect_onnx(qdq_model()).precision == "int8"
    g = inspect_onnx(qdq_model())
    assert g.inputs[0].dims == (None, 3, 4, 4) and g.inputs[0].dim_names[0] == "batch"
    assert [t.name for t in g.inputs] == ["input"]  # initializers are not inputs


def test_decisions_record_automatic_choices(tmp_path: Path) -> None:
    from trt_testutil import fp16_model

    g = inspect_onnx(fp16_model())
    p11 = plan_build(BuildOptions(), features_for_version("11.1"), g)
    assert p11.strongly_typed and p11.builder_flags == [] and p11.precision == "fp16"
    assert any("no weak typing" in d for d in p11.decisions)
    p86 = plan_build(BuildOptions(), features_for_version("8.6.2"), g)  # JetPack 6.0 ships 8.6.2
    assert not p86.strongly_typed and p86.builder_flags == ["FP16"] and p86.explicit_batch
    assert any("explicit-batch" in d for d in p86.decisions)
    p10 = plan_build(BuildOptions(precision="fp32"), features_for_version("10.3"), g)
    assert any("may run those layers in FP32" in d for d in p10.decisions)


@pytest.mark.parametrize("header,version,outcome", [
    ("TRT-8602-EntropyCalibration2", "8.6.2", "ok"),
    ("TRT-100300-EntropyCalibration2", "10.3.0", "ok"),
    ("TRT-8602-EntropyCalibration2", "10.3.0", "note"),
    ("TRT-100300-MinMaxCalibration", "10.3.0", "note"),  # replayed as EntropyCalibration2: same scales
    ("TRT-8601-EntropyCalibration2", "8.6.2", "note"),
    ("not a cache", "10.3.0", "--calib-cache .*not a TensorRT calibration cache"),
])
def test_calibration_cache_header(tmp_path: Path, header: str, version: str, outcome: str) -> None:
    cache = tmp_path / "calib.cache"
    cache.write_text(f"{header}\ninput: 3c23d70a\n")
    g = inspect_onnx(relu_model())
    opts = BuildOptions(precision="int8", calibration_cache=cache)
    if outcome.startswith("--"):
        with pytest.raises(OptionError, match=outcome):
            plan_build(opts, features_for_version(version), g)
        return
    plan = plan_build(opts, features_for_version(version), g)
    assert plan.quantization == "implicit" and plan.calibration_cache == cache
    notes = [d for d in plan.decisions if "is replayed as" in d]
    assert bool(notes) == (outcome == "note")
    if notes:
        assert f"replayed as TRT-{trt_version_number(version)}-EntropyCalibration2" in notes[0]


def test_calibration_cache_is_never_silently_ignored(calib_cache: Path) -> None:
    from trt_testutil import qdq_model

    with pytest.raises(OptionError, match="--calib-cache given.*does not use INT8"):
        plan_build(BuildOptions(precision="fp16", calibration_cache=calib_cache), features_for_version("10.3"),
                   inspect_onnx(relu_model()))
    with pytest.raises(OptionError, match="--calib-cache given.*no implicit INT8"):
        plan_build(BuildOptions(calibration_cache=calib_cache), features_for_version("11.1"), inspect_onnx(relu_model()))
    plan = plan_build(BuildOptions(precision="int8", calibration_cache=calib_cache), features_for_version("11.1"),
                      inspect_onnx(qdq_model()))
    assert plan.calibration_cache is None and any("Q/DQ nodes carry the scales" in d for d in plan.decisions)
