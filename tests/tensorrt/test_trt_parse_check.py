"""Static ONNX-parser check from the shipped operator tables (no TensorRT)."""
from __future__ import annotations

from pathlib import Path

import pytest
from onnx import TensorProto, helper
from trt_testutil import make_model, relu_model, save

from pela_export.errors import OptionError
from pela_export.tensorrt import (
    TABLE_VERSIONS,
    check_onnx_for_trt,
    format_findings,
    nearest_table,
)
from pela_export.tensorrt.parse_check import errors_of, load_op_table

ALL = ("8.6", "8.6.1", "10.3", "10.13", "10.16", "11.1")


def hardmax_model():
    """Hardmax: unsupported by the TensorRT 8.6 ONNX parser, supported from 10.x on."""
    return make_model([helper.make_node("Hardmax", ["input"], ["output"], name="hm0", axis=-1)])


def test_tables_ship_with_the_package() -> None:
    for v in TABLE_VERSIONS:
        t = load_op_table(v)
        assert len(t.ops) > 150 and t.opset_range[1] is not None
    assert load_op_table("8.6").opset_range == (None, 17)
    assert load_op_table("8.6").ops["Hardmax"]["supported"] is False
    assert load_op_table("10.3").ops["Hardmax"]["supported"] is True


@pytest.mark.parametrize("version", ALL)
def test_op_unsupported_only_in_86(version: str, tmp_path: Path) -> None:
    findings = check_onnx_for_trt(save(hardmax_model(), tmp_path / "hm.onnx"), version)
    errs = errors_of(findings)
    if version.startswith("8.6"):
        assert [(f.code, f.op, f.nodes) for f in errs] == [("unsupported-op", "Hardmax", ["hm0"])]
        assert "8.6" in errs[0].message
    else:
        assert errs == []


def test_clean_graph_has_no_findings_on_exact_tables() -> None:
    for v in ("8.6", "10.16", "11.1"):
        assert check_onnx_for_trt(relu_model(), v) == []
    assert format_findings([]) == "no findings"


def test_restrictions_are_warnings_with_their_text() -> None:
    m = make_model([helper.make_node("MaxPool", ["input"], ["output"], name="pool0", kernel_shape=[1, 1])])
    (f,) = check_onnx_for_trt(m, "8.6")
    assert f.severity == "warning" and f.code == "restricted-op" and f.nodes == ["pool0"]
    assert "2D/3D only; no Indices output" in f.message
    assert "warning: MaxPool" in format_findings([f]) and "[nodes: pool0]" in str(f)


def test_unknown_and_custom_domain_ops() -> None:
    swish = make_model([helper.make_node("Swish", ["input"], ["output"], name="sw0")], opset=24)
    (f10,) = [f for f in check_onnx_for_trt(swish, "10.16") if f.severity != "info"]
    assert f10.severity == "unknown" and f10.code == "unknown-op" and "not proven unsupported" in f10.message
    assert [f for f in check_onnx_for_trt(swish, "11.1") if f.severity != "info"] == []  # 11.1 lists Swish
    custom = make_model([helper.make_node("FancyOp", ["input"], ["output"], name="c0", domain="com.example")],
                        domains=[("com.example", 1)])
    (fc,) = [f for f in check_onnx_for_trt(custom, "10.3") if f.severity != "info"]
    assert fc.severity == "unknown" and fc.code == "custom-domain" and "plugin" in fc.message


def test_opset_range() -> None:
    errs = errors_of(check_onnx_for_trt(make_model([helper.make_node("Relu", ["input"], ["output"])], opset=18), "8.6"))
    assert [f.code for f in errs] == ["opset"] and "up to 17" in errs[0].message
    old = check_onnx_for_trt(make_model([helper.make_node("Relu", ["input"], ["output"])], opset=8), "10.16")
    assert [(f.severity, f.code) for f in old] == [("warning", "opset")]


def test_ops_inside_subgraphs_are_checked() -> None:
    branch = helper.make_graph([helper.make_node("Hardmax", ["input"], ["hb"], name="inner_hm")], "then", [],
                               [helper.make_tensor_value_info("hb", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Relu", ["input"], ["rb"], name="inner_relu")], "else", [],
                              [helper.make_tensor_value_info("rb", TensorProto.FLOAT, None)])
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 4, 4])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, None)
    m = make_model([helper.make_node("If", ["cond"], ["output"], name="if0", then_branch=branch, else_branch=other)],
                   inputs=[cond, x], outputs=[y])
    errs = errors_of(check_onnx_for_trt(m, "8.6"))
    assert [f.nodes for f in errs] == [["inner_hm"]]


def test_version_mapping_says_which_table() -> None:
    assert nearest_table("8.6.1") == ("8.6", None)
    assert nearest_table("10.13.3") == ("10.13", None)
    t, why = nearest_table("10.5")
    assert t == "10.3" and "10.5" in why and "10.3" in why
    assert nearest_table("10.14")[0] == "10.13" and nearest_table("12.0")[0] == "11.1"
    assert nearest_table("9.2")[0] == "8.6"  # 9.2 pins the same parser as 8.6
    with pytest.raises(OptionError):
        nearest_table("latest")
    info = [f for f in check_onnx_for_trt(relu_model(), "10.5") if f.severity == "info"]
    assert any("nearest one, 10.3" in f.message for f in info) and any("proxy" in f.message for f in info)


def _folded_int8_weights_model():
    """What the INT8 variant's fold_weights option writes: an INT8 weight initializer behind DequantizeLinear."""
    import numpy as np
    from onnx import numpy_helper

    w = numpy_helper.from_array(np.full((4, 4), 3, np.int8), "w_q")
    s = numpy_helper.from_array(np.full(4, 0.01, np.float32), "w_scale")
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4])
    return make_model([helper.make_node("DequantizeLinear", ["w_q", "w_scale"], ["w"], name="w_dq", axis=0),
                       helper.make_node("MatMul", ["input", "w"], ["output"], name="mm0")],
                      inputs=[x], outputs=[y], initializers=[w, s])


@pytest.mark.parametrize("version", ALL)
def test_int8_weight_initializers_do_not_parse_before_10(version: str) -> None:
    errs = errors_of(check_onnx_for_trt(_folded_int8_weights_model(), version))
    if version.startswith("8.6"):
        assert [(f.code, f.nodes) for f in errs] == [("int8-weights", ["w_dq"])]
        assert "invalid weights type of Int8" in errs[0].message and "fold_weights" in errs[0].message
    else:
        assert errs == []


def test_plan_build_refuses_int8_weight_initializers_on_86() -> None:
    from pela_export.errors import OnnxCheckError
    from pela_export.tensorrt import BuildOptions, features_for_version, inspect_onnx, plan_build

    g = inspect_onnx(_folded_int8_weights_model())
    assert g.int8_weight_dq == ("w_dq",)
    with pytest.raises(OnnxCheckError, match="invalid weights type of Int8") as exc:
        plan_build(BuildOptions(precision="int8"), features_for_version("8.6.1"), g)
    assert "--trt-version 10.3" in exc.value.fix
    assert plan_build(BuildOptions(), features_for_version("10.3"), g).quantization == "explicit"
