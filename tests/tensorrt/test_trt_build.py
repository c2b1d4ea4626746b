"""build_engine end to end against fake TensorRT modules of every manifest version."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fake_tensorrt import _decode_flags, make_fake_tensorrt
from trt_testutil import ORIN

from pela_export.errors import OptionError
from pela_export.tensorrt import (
    BuildOptions,
    TensorRTError,
    build_engine,
    parse_profiles,
    sidecar_path,
)
from pela_export.tensorrt.plan import trt_version_number

WEAK = ("8.6.1", "10.3.0", "10.13.3", "10.16")

# precision case -> (ONNX variant, options) ; expected BuilderFlags per typing mode
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "fp32": ("fp32", {"precision": "fp32"}),
    "fp16": ("fp16", {"precision": "fp16"}),
    "int8-qdq": ("int8", {"precision": "int8"}),
    "int8-cache": ("fp32", {"precision": "int8"}),
}
WEAK_FLAGS = {"fp32": [], "fp16": ["FP16"], "int8-qdq": ["INT8"], "int8-cache": ["INT8"]}
#: cases whose graph carries its precision: strongly typed by default wherever STRONGLY_TYPED exists (10.x, 11)
CARRIED = ("fp16", "int8-qdq")


def _build(trt: Any, onnx_path: Path, tmp_path: Path, **kw: Any) -> Any:
    return build_engine(onnx_path, tmp_path / "out" / "model.plan", BuildOptions(**kw), trt=trt, gpu=ORIN)


def _network_flags(trt: Any) -> list[str]:
    (call,) = trt._fake.called("Builder", "create_network")
    return _decode_flags(trt, "NetworkDefinitionCreationFlag", int(call.args[0]))


def _flags_set(trt: Any) -> list[str]:
    return [c.args[0].name for c in trt._fake.called("IBuilderConfig", "set_flag")]


@pytest.mark.parametrize("case", list(CASES))
def test_precision_cases(version: str, case: str, models: dict[str, Path], calib_cache: Path, tmp_path: Path) -> None:
    variant, kw = CASES[case]
    if case == "int8-cache":
        kw = {**kw, "calibration_cache": calib_cache}
    trt = make_fake_tensorrt(version)
    if version == "11.1" and case in ("fp32", "fp16", "int8-qdq"):
        kw = {**kw, "precision": "auto"}  # 11 takes precision from the graph
    if version == "11.1" and case == "int8-cache":
        with pytest.raises(OptionError, match="calibration cache|--calib-cache|--trt-precision"):
            _build(trt, models[variant], tmp_path, **kw)
        assert trt._fake.calls == []  # refused before touching TensorRT
        return
    rec = _build(trt, models[variant], tmp_path, **kw)
    net = _network_flags(trt)
    assert ("EXPLICIT_BATCH" in net) == (version == "8.6.1")
    if version == "11.1" or (version != "8.6.1" and case in CARRIED):
        assert net == ["STRONGLY_TYPED"] and rec.strongly_typed and rec.precision_mode.startswith("strongly typed")
        assert _flags_set(trt) == []
        assert trt._fake.called("IBuilderConfig", "set:int8_calibrator") == []
    else:
        assert "STRONGLY_TYPED" not in net and not rec.strongly_typed
        assert _flags_set(trt) == WEAK_FLAGS[case]
    calib_set = trt._fake.called("IBuilderConfig", "set:int8_calibrator")
    assert bool(calib_set) == (case == "int8-cache")
    if case == "int8-cache":  # dynamic batch: the calibration profile is the build profile
        assert trt._fake.called("IBuilderConfig", "set_calibration_profile")
        # replayed with the header of this TensorRT's entropy-2 calibrator, scales untouched
        header = f"TRT-{trt_version_number(version)}-EntropyCalibration2\n".encode()
        assert calib_set[0].args[0].read_calibration_cache() == header + calib_cache.read_bytes().split(b"\n", 1)[1]
    assert rec.precision == {"fp32": "fp32", "fp16": "fp16", "int8-qdq": "int8", "int8-cache": "int8"}[case]


def test_plan_is_raw_bytes_and_sidecar_has_fields(version: str, models: dict[str, Path], tmp_path: Path) -> None:
    trt = make_fake_tensorrt(version)
    opts = {"precision": "auto", "workspace_mib": 256, "opt_level": 2, "timing_cache": tmp_path / "timing.cache"}
    rec = _build(trt, models["fp16"], tmp_path, **opts)
    assert rec.plan_path.read_bytes() == trt._fake.plans[-1]  # exactly what TensorRT returned, no header
    meta = json.loads(sidecar_path(rec.plan_path).read_text())
    assert meta == rec.metadata | {"format": "pela-export.tensorrt-plan/1"}
    assert meta["tensorrt_version"] == trt.__version__
    assert meta["gpu"] == {"name": ORIN.name, "compute_capability": "8.7", "source": "test"}
    assert meta["precision"] == "fp16" and meta["strongly_typed"] == (version != "8.6.1")  # 10.x: automatic
    assert meta["precision_mode"] == rec.precision_mode == meta["build_plan"]["precision_mode"]
    assert meta["profiles"] == {"input": {"min": [1, 3, 4, 4], "opt": [1, 3, 4, 4], "max": [8, 3, 4, 4]}}
    assert meta["options"]["workspace_mib"] == 256 and meta["options"]["opt_level"] == 2
    assert any("dynamic batch axis" in d for d in meta["decisions"])
    assert len(meta["onnx"]["sha256"]) == 64 and meta["plan"]["sha256"] == rec.plan_sha256
    assert meta["plan"]["bytes"] == len(trt._fake.plans[-1]) and meta["created"].endswith("+00:00")
    assert meta["tool"] == {"name": "pela-export", "version": "0.1.0"}
    assert rec.trtexec_script.name == "model.trtexec.sh" and rec.trtexec_script.stat().st_mode & 0o111
    assert "trtexec" in rec.trtexec_script.read_text()
    # workspace, opt level, timing cache reached the config
    (pool,) = trt._fake.called("IBuilderConfig", "set_memory_pool_limit")
    assert pool.args[0].name == "WORKSPACE" and pool.args[1] == 256 << 20
    assert trt._fake.called("IBuilderConfig", "set:builder_optimization_level")[0].args == (2,)
    assert (tmp_path / "timing.cache").read_bytes().startswith(b"FAKE-TIMING-CACHE")
    (prof,) = trt._fake.called("IOptimizationProfile", "set_shape")
    assert prof.args == ("input", (1, 3, 4, 4), (1, 3, 4, 4), (8, 3, 4, 4))
    assert not list((tmp_path / "out").glob(".*.tmp"))  # atomic writes left nothing behind


def test_parser_errors_name_node_and_operator(version: str, models: dict[str, Path], tmp_path: Path) -> None:
    errs = [{"desc": "Assertion failed: unsupported", "node": 0, "node_name": "relu0", "node_operator": "Relu"},
            {"desc": "second problem", "node": 0, "node_name": "relu0", "node_operator": "Relu"}]
    trt = make_fake_tensorrt(version, parse_errors=errs)
    with pytest.raises(TensorRTError) as exc:
        _build(trt, models["fp32"], tmp_path)
    msg = str(exc.value)
    assert "2 error(s)" in msg and msg.count("node relu0 (Relu)") == 2 and "second problem" in msg
    assert "UNSUPPORTED_NODE" in msg and exc.value.fix
    # 8.6 has only ParserError.node() (index); 10+ has node_name()/node_operator()
    names = {c.name for c in trt._fake.called("ParserError")}
    assert names >= ({"node"} if version == "8.6.1" else {"node_name", "node_operator"})
    assert not (tmp_path / "out" / "model.plan").exists()


def test_build_failure_reports_tensorrt_log(models: dict[str, Path], tmp_path: Path) -> None:
    trt = make_fake_tensorrt("10.3.0", build_fails=True)
    with pytest.raises(TensorRTError, match="build failed on request"):
        _build(trt, models["fp32"], tmp_path)


@pytest.mark.parametrize("version,strongly", [("10.3.0", True), ("10.16", True)])
def test_strongly_typed_on_10(version: str, strongly: bool, models: dict[str, Path], tmp_path: Path) -> None:
    trt = make_fake_tensorrt(version)
    rec = _build(trt, models["fp16"], tmp_path, strongly_typed=strongly)
    assert _network_flags(trt) == ["STRONGLY_TYPED"] and _flags_set(trt) == [] and rec.precision == "fp16"


UNSUPPORTED = [  # (version, options, flag named in the error)
    ("8.6.1", {"strongly_typed": True}, "--strongly-typed"),
    ("11.1", {"strongly_typed": False}, "--strongly-typed"),
    ("8.6.1", {"hardware_compat": "same-compute-capability"}, "--hardware-compat"),
    ("10.3.0", {"hardware_compat": "same-compute-capability"}, "--hardware-compat"),
    ("11.1", {"precision": "fp16"}, "--trt-precision"),  # FP32 graph: 11 cannot lower precision by flag
    ("10.16", {"precision": "fp16", "strongly_typed": True}, "--trt-precision"),
    ("10.3.0", {"dla_core": 0, "precision": "fp32"}, "--dla-core"),
]


@pytest.mark.parametrize("version,kw,flag", UNSUPPORTED)
def test_unsupported_requests_raise_option_error(version: str, kw: dict[str, Any], flag: str,
                                                 models: dict[str, Path], tmp_path: Path) -> None:
    trt = make_fake_tensorrt(version)
    with pytest.raises(OptionError, match=flag):
        _build(trt, models["fp32"], tmp_path, **kw)


def test_qdq_graph_needs_int8_on_weak_typing(models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="Q/DQ"):
        _build(make_fake_tensorrt("10.3.0"), models["int8"], tmp_path, precision="fp16")


@pytest.mark.parametrize("version", ["8.6.1", "10.3.0", "11.1"])
def test_dla_core_with_gpu_fallback(version: str, models: dict[str, Path], tmp_path: Path) -> None:
    trt = make_fake_tensorrt(version, num_dla_cores=2)
    variant, prec = ("fp16", "auto") if version == "11.1" else ("fp32", "fp16")
    _build(trt, models[variant], tmp_path, precision=prec, dla_core=1)
    assert "GPU_FALLBACK" in _flags_set(trt)
    assert trt._fake.called("IBuilderConfig", "set:default_device_type")[0].args[0].name == "DLA"
    assert trt._fake.called("IBuilderConfig", "set:DLA_core")[0].args == (1,)
    with pytest.raises(OptionError, match="--dla-core 2: this device has 2"):
        _build(make_fake_tensorrt(version, num_dla_cores=2), models[variant], tmp_path, precision=prec, dla_core=2)
    with pytest.raises(OptionError, match="0 DLA"):
        _build(make_fake_tensorrt(version), models[variant], tmp_path, precision=prec, dla_core=0)


def test_version_and_hardware_compatibility(version: str, models: dict[str, Path], tmp_path: Path) -> None:
    trt = make_fake_tensorrt(version)
    level = "same-compute-capability" if version in ("10.13.3", "10.16", "11.1") else "ampere+"
    _build(trt, models["fp32"], tmp_path, precision="auto", version_compatible=True, hardware_compat=level)
    assert "VERSION_COMPATIBLE" in _flags_set(trt)
    (hw,) = trt._fake.called("IBuilderConfig", "set:hardware_compatibility_level")
    assert hw.args[0].name == ("SAME_COMPUTE_CAPABILITY" if level != "ampere+" else "AMPERE_PLUS")


def test_timing_cache_from_other_device_is_replaced(models: dict[str, Path], tmp_path: Path) -> None:
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old cache from another GPU")
    trt = make_fake_tensorrt("10.13.3", timing_cache_mismatch=True)
    rec = _build(trt, models["fp32"], tmp_path, timing_cache=cache)
    assert any("starting a new one" in d for d in rec.decisions)
    assert [bytes(c.args[0]) for c in trt._fake.called("IBuilderConfig", "create_timing_cache")] == \
        [b"old cache from another GPU", b""]
    assert cache.read_bytes() == b"FAKE-TIMING-CACHE 10.13.3"


def test_user_profile_is_used(models: dict[str, Path], tmp_path: Path) -> None:
    trt = make_fake_tensorrt("10.3.0")
    rec = _build(trt, models["fp32"], tmp_path, profiles=parse_profiles(["input:2x3x4x4,4x3x4x4,16x3x4x4"]))
    assert trt._fake.called("IOptimizationProfile", "set_shape")[0].args[1:] == ((2, 3, 4, 4), (4, 3, 4, 4), (16, 3, 4, 4))
    assert not any("dynamic batch axis" in d for d in rec.decisions)


def test_rejected_timing_cache_falls_back_to_a_fresh_one(models: dict[str, Path], tmp_path: Path) -> None:
    """create_timing_cache returns None for a blob TensorRT rejects, and set_timing_cache(None, ...) raises
    TypeError (pybind11), which escaped the ONNX Runtime fallback: start a fresh cache with a warning instead,
    as Polygraphy does."""
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"stale cache from TensorRT 8.6")
    trt = make_fake_tensorrt("10.3.0", timing_cache_rejected=True)
    said: list[str] = []
    rec = build_engine(models["fp32"], tmp_path / "out" / "model.plan", BuildOptions(timing_cache=cache), trt=trt,
                       gpu=ORIN, log=said.append)
    assert [bytes(c.args[0]) for c in trt._fake.called("IBuilderConfig", "create_timing_cache")] == \
        [b"stale cache from TensorRT 8.6", b""]
    assert any(m.startswith("warning: timing cache") and "rejected" in m for m in said)
    assert any("rejected by TensorRT" in d for d in rec.decisions)
    assert cache.read_bytes() == b"FAKE-TIMING-CACHE 10.3.0"  # the fresh cache replaces the stale file


def test_version_compatible_86_build_parses_instancenorm_natively(tmp_path: Path) -> None:
    """8.6's parser imports InstanceNormalization as a plugin by default, which a version/hardware-compatible
    plan cannot carry: set OnnxParserFlag.NATIVE_INSTANCENORM before parsing (trtexec 8.6 does the same);
    10.x parses it natively by default."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    from trt_testutil import make_model, save

    scale = numpy_helper.from_array(np.ones(3, np.float32), "scale")
    bias = numpy_helper.from_array(np.zeros(3, np.float32), "bias")
    m = save(make_model([helper.make_node("InstanceNormalization", ["input", "scale", "bias"], ["output"],
                                          name="in0")], initializers=[scale, bias]), tmp_path / "in.onnx")
    for version, kw in (("8.6.1", {"version_compatible": True}), ("8.6.1", {"hardware_compat": "ampere+"}),
                        ("10.3.0", {"version_compatible": True}), ("8.6.1", {})):
        trt = make_fake_tensorrt(version)
        rec = build_engine(m, tmp_path / "out" / "m.plan", BuildOptions(**kw), trt=trt, gpu=ORIN)
        names = [f"{c.cls}.{c.name}" for c in trt._fake.calls]
        flags = [c.args[0].name for c in trt._fake.called("OnnxParser", "set_flag")]
        if version == "8.6.1" and kw:
            assert flags == ["NATIVE_INSTANCENORM"]
            assert names.index("OnnxParser.set_flag") < names.index("OnnxParser.parse_from_file")
            assert any("NATIVE_INSTANCENORM" in d and "has InstanceNormalization" in d for d in rec.decisions)
        else:
            assert flags == [], (version, kw)
