"""TrtFeatures: presence-based detection vs the static version table, on every manifest."""
from __future__ import annotations

import dataclasses

import pytest
from fake_tensorrt import VERSIONS, load_manifest, make_fake_tensorrt

from pela_export.tensorrt import detect_features, features_for_version
from pela_export.tensorrt.callbacks import OVERRIDDEN


@pytest.mark.parametrize("version", VERSIONS)
def test_static_table_agrees_with_the_api_surface(version: str) -> None:
    detected = detect_features(make_fake_tensorrt(version))
    static = features_for_version(version)
    diff = {f.name: (getattr(detected, f.name), getattr(static, f.name))
            for f in dataclasses.fields(detected) if getattr(detected, f.name) != getattr(static, f.name)}
    assert diff == {}, f"features_for_version({version}) disagrees with the manifest: {diff}"


EXPECTED = {  # version: (explicit batch required, strongly typed flag, weak typing, calibrator, SAME_CC, node_name)
    "8.6.1": (True, False, True, True, False, False),
    "10.3.0": (False, True, True, True, False, True),
    "10.13.3": (False, True, True, True, True, True),
    "10.16": (False, True, True, True, True, True),
    "11.1": (False, True, False, False, True, True),
}


@pytest.mark.parametrize("version", VERSIONS)
def test_version_differences(version: str) -> None:
    f = detect_features(make_fake_tensorrt(version))
    exp = EXPECTED[version]
    got = (f.explicit_batch_required, f.strongly_typed_flag, f.weak_typing, f.int8_calibrator,
           "SAME_COMPUTE_CAPABILITY" in f.hardware_compat_levels, f.parser_error_node_name)
    assert got == exp
    assert f.explicit_batch_flag == (version != "11.1")  # 10.x still has the (ignored) flag
    assert f.strongly_typed_only == (version == "11.1")
    assert f.version_compatible and f.builder_optimization_level and f.timing_cache and f.dla
    assert f.memory_pool_limit and f.parse_from_file and f.engine_host_code_allowed


@pytest.mark.parametrize("version", VERSIONS)
def test_callbacks_only_override_python_overridable_methods(version: str) -> None:
    m = load_manifest(version)
    for cls, methods in OVERRIDDEN.items():
        if cls not in m["classes"]:
            assert version == "11.1" and cls == "IInt8EntropyCalibrator2"
            continue
        assert set(methods) <= set(m["python_overridable"][cls]), (version, cls)
        assert "__init__" in m["classes"][cls]  # subclasses call the base __init__


def test_fake_module_is_strict() -> None:
    trt = make_fake_tensorrt("11.1")
    with pytest.raises(AttributeError, match="11.1"):
        trt.BuilderFlag.FP16  # noqa: B018
    with pytest.raises(AttributeError, match="11.1"):
        trt.IInt8EntropyCalibrator2  # noqa: B018
    assert not hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    config = builder.create_builder_config()
    with pytest.raises(AttributeError, match="11.1"):
        config.int8_calibrator = object()
    with pytest.raises(AttributeError, match="11.1"):
        builder.platform_has_fast_fp16  # noqa: B018  (removed in 11)
    with pytest.raises(TypeError):
        trt.IBuilderConfig()  # no Python constructor
    old = make_fake_tensorrt("8.6.1")
    assert hasattr(old.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    assert not hasattr(old.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    assert old.__version__ == "8.6.1"


@pytest.mark.parametrize("version", VERSIONS)
def test_fake_exposes_every_manifest_name(version: str) -> None:
    from fake_tensorrt import SKIPPED_DUNDERS

    m = load_manifest(version)
    trt = make_fake_tensorrt(version)
    for cls, members in m["classes"].items():
        c = getattr(trt, cls)
        missing = [n for n in m["classes_with_inherited"].get(cls, members) if n not in SKIPPED_DUNDERS
                   and not hasattr(c, n)]
        assert missing == [], (cls, missing)
        assert not hasattr(c, "definitely_not_a_member")
    for enum, values in m["enums"].items():
        e = trt.ILogger.Severity if enum == "ILogger.Severity" else getattr(trt, enum)
        assert all(hasattr(e, v) for v in values) and not hasattr(e, "NOT_A_VALUE")
    assert all(callable(getattr(trt, f)) for f in m["functions"])
