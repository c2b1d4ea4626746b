"""Every registered precision spec states every fact the pipeline, report, bundle and CLI read from it,
and the derived tables (flags, converter options, checks, order, colours) come from the specs."""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import fields

import pytest

from pela_export.errors import OptionError
from pela_export.options import add_arguments, option_fields
from pela_export.precision.spec import (ORT_LEVELS, PrecisionOptions, check_precision_options, precision_order,
                                        precision_spec, precision_specs, split_variant, variant_name)

SPECS = precision_specs()


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_every_spec_has_every_fact(spec) -> None:
    assert re.match(r"^[a-z][a-z0-9_+-]*$", spec.name) and spec.label and isinstance(spec.order, int)
    assert re.match(r"^#[0-9a-f]{6}$", spec.color)
    atol, rtol = spec.golden_tolerance
    assert 0 < atol < 1 and 0 < rtol < 1
    assert spec.ort_level in ORT_LEVELS and (spec.ort_level == "all" or spec.ort_level_reason)
    assert all(f in ("FP16", "INT8", "BF16", "FP8") for f in spec.trt_flags)
    assert isinstance(spec.needs_calibration, bool) and isinstance(spec.quantized, bool)
    assert issubclass(spec.options, PrecisionOptions)
    opts = spec.default_options()
    assert opts.given() == {} and opts.converter_options() == {}
    for f in option_fields(spec.options):  # every option owns a flag and defaults to "the converter's"
        assert f.metadata["flag"].startswith("--") and f.metadata["help"] and f.default is None
    if spec.converter is None:
        assert spec.name == "fp32" and not option_fields(spec.options)
    else:
        assert callable(spec.resolve()) and spec.resolve().needs_calibration == spec.needs_calibration


def test_builtin_facts_are_the_tables_they_replace() -> None:
    assert [s.name for s in SPECS] == ["fp32", "fp16", "int8", "int8fp16"]
    assert {s.name: s.golden_tolerance for s in SPECS} == {"fp32": (2e-3, 1e-2), "fp16": (1e-2, 1e-2),
                                                           "int8": (5e-2, 5e-2), "int8fp16": (6e-2, 6e-2)}
    assert {s.name: s.ort_level for s in SPECS} == {"fp32": "all", "fp16": "all", "int8": "basic",
                                                    "int8fp16": "basic"}
    assert {s.name: s.trt_flags for s in SPECS} == {"fp32": (), "fp16": ("FP16",), "int8": ("INT8",),
                                                    "int8fp16": ("FP16", "INT8")}
    assert [s.name for s in SPECS if s.quantized] == ["int8", "int8fp16"]
    assert {s.name: s.shares_options for s in SPECS if s.shares_options} == {"int8fp16": ("fp16", "int8")}


def test_flags_are_unique_and_parse_into_converter_options() -> None:
    p = argparse.ArgumentParser()
    for s in SPECS:
        add_arguments(s.options, p)  # argparse itself fails on a duplicate flag
    ns = p.parse_args(["--fp16-io", "fp16", "--fp16-keep-ops", "Softmax,Exp", "--fp16-range-margin", "0.5",
                       "--calib-method", "max", "--int8-exclude", "a,b", "--calib-batch-size", "8"])
    fp16 = precision_spec("fp16").options.from_namespace(ns)
    int8 = precision_spec("int8").options.from_namespace(ns)
    assert fp16.converter_options() == {"block_ops": ("Softmax", "Exp"), "keep_io_fp32": False, "range_margin": 0.5}
    assert int8.converter_options() == {"method": "max", "exclude_nodes": ("a", "b")}
    assert int8.calibration_batch_size() == 8
    names = [f.name for s in SPECS for f in fields(s.options)]
    assert len(names) == len(set(names))


def test_an_option_of_an_unselected_precision_names_flag_and_precision() -> None:
    int8 = precision_spec("int8").options(int8_keep_worst=2)
    with pytest.raises(OptionError, match="--int8-keep-worst is only used with --precision int8 or int8fp16, "):
        check_precision_options(("fp16",), {"int8": int8})
    with pytest.raises(OptionError, match="--fp16-io is only used with --precision fp16 or int8fp16, "):
        check_precision_options(("int8",), {"fp16": precision_spec("fp16").options(fp16_io="fp16")})
    with pytest.raises(OptionError, match="expected Int8RunOptions"):
        check_precision_options(("int8",), {"int8": precision_spec("fp16").options()})
    with pytest.raises(OptionError, match="--calib-batch-size must be"):
        check_precision_options(("int8",), {"int8": precision_spec("int8").options(calib_batch_size=0)})
    out = check_precision_options(("fp32", "int8"), {"int8": int8})
    assert list(out) == ["fp32", "int8"] and out["int8"] is int8


def test_one_variant_name_and_order() -> None:
    assert variant_name("compressed", "int8") == "compressed.int8"
    assert split_variant("compressed.int8") == ("compressed", "int8") and split_variant("original") == ("original", "fp32")
    assert precision_order(["zz", "int8", "fp32", "fp16", "int8"]) == ["fp32", "fp16", "int8", "zz"]


def test_spec_module_imports_without_onnx_numpy_or_torch() -> None:
    code = ("import sys\nfor m in ('torch', 'onnx', 'numpy', 'onnxruntime'): sys.modules[m] = None\n"
            "from pela_export.precision.spec import precision_names\nprint(precision_names())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "['fp32', 'fp16', 'int8', 'int8fp16']" in done.stdout, done.stderr


def test_int8fp16_reads_the_int8_and_fp16_flags() -> None:
    """One run's INT8 variants calibrate alike and its FP16 variants keep the same ops FP32: int8fp16 has no
    flags of its own and takes --calib-* / --int8-* and --fp16-* as int8 and fp16 do, even when they are not
    selected; an option set on int8fp16 itself (API) wins over the shared one."""
    p = argparse.ArgumentParser()
    for s in SPECS:
        add_arguments(s.options, p)
    ns = p.parse_args(["--calib-method", "max", "--int8-exclude", "a", "--calib-batch-size", "8",
                       "--fp16-keep-ops", "Softmax", "--fp16-io", "fp16"])
    given = {s.name: s.options.from_namespace(ns) for s in SPECS}
    out = check_precision_options(("int8fp16",), given)
    assert list(out) == ["int8fp16"]
    assert out["int8fp16"].converter_options() == {"method": "max", "exclude_nodes": ("a",), "block_ops": ("Softmax",),
                                                   "keep_io_fp32": False}
    assert out["int8fp16"].calibration_batch_size() == 8
    assert check_precision_options(("int8fp16",), {})["int8fp16"].converter_options() == {}
    spec = precision_spec("int8fp16")
    own = spec.options(int8=precision_spec("int8").options(calib_method="entropy"))
    both = check_precision_options(("int8", "int8fp16"), {"int8": given["int8"], "int8fp16": own})
    assert both["int8"].converter_options()["method"] == "max"
    assert both["int8fp16"].converter_options() == {"method": "entropy"}
    with pytest.raises(OptionError, match="--calib-batch-size must be"):
        check_precision_options(("int8fp16",), {"int8": precision_spec("int8").options(calib_batch_size=0)})


def test_a_spec_that_shares_options_must_say_how() -> None:
    from dataclasses import dataclass

    from pela_export.precision.spec import register_precision

    @dataclass(frozen=True)
    class Plain(PrecisionOptions):
        pass

    with pytest.raises(ValueError, match="does not implement share"):
        register_precision("zzshare", label="Z", order=99, color="#000000", golden_tolerance=(0.1, 0.1),
                           options=Plain, shares_options=("int8",))
    assert "zzshare" not in [s.name for s in precision_specs()]
