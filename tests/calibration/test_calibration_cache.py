"""TensorRT calibration cache: exact line format, version-dependent header, round trip."""
from __future__ import annotations

import numpy as np
import pytest

from pela_export.calibration import (CalibrationCache, format_scale, make_cache, parse_scale, read_cache, trt_version_number,
                         write_cache)
from pela_export.errors import ArtifactError, OptionError


def test_scale_hex_is_big_endian_float32_bits() -> None:
    assert format_scale(1.0) == "3f800000"
    assert format_scale(0.5) == "3f000000"
    assert format_scale(-2.0) == "c0000000"
    assert format_scale(1 / 127) == "3c010204"
    assert parse_scale("3f800000") == 1.0


@pytest.mark.parametrize(("version", "number"), [("8.6.1", 8601), ("8.6.2", 8602), ("10.3.0", 100300),
                                                 ("10.0.1", 100001)])
def test_version_number_follows_nv_tensorrt_version(version: str, number: int) -> None:
    assert trt_version_number(version) == number


def test_tensorrt_11_has_no_implicit_int8_cache() -> None:
    with pytest.raises(OptionError, match="Q/DQ"):
        trt_version_number("11.0.0")
    with pytest.raises(OptionError):
        trt_version_number("eight")


def test_written_bytes(tmp_path) -> None:
    path = tmp_path / "m.calib.cache"
    write_cache(path, {"input": 1.0, "/fc/MatMul_output_0": 0.5}, trt_version="8.6.1")
    assert path.read_bytes() == b"TRT-8601-EntropyCalibration2\ninput: 3f800000\n/fc/MatMul_output_0: 3f000000\n"
    with pytest.raises(OptionError, match="calibrator"):
        make_cache({"x": 1.0}, trt_version="8.6.2", calibrator="Percentile")


def test_round_trip_keeps_float32_scales_exactly(tmp_path) -> None:
    rng = np.random.default_rng(0)
    scales = {f"t{i}:odd name": float(np.float32(s)) for i, s in enumerate(rng.uniform(1e-4, 3.0, 20))}
    path = tmp_path / "c.cache"
    written = write_cache(path, scales, trt_version="10.3.0")
    back = read_cache(path)
    assert back == written
    assert back.version_number == 100300 and back.calibrator == "EntropyCalibration2"
    assert back.scales == scales  # bit-exact, names with ':' survive (split on the last colon)


def test_malformed_caches_are_artifact_errors(tmp_path) -> None:
    with pytest.raises(ArtifactError, match="header"):
        CalibrationCache.parse("input: 3f800000\n")
    with pytest.raises(ArtifactError, match="line 2"):
        CalibrationCache.parse("TRT-8602-EntropyCalibration2\ninput 3f80zz00\n")
    with pytest.raises(ArtifactError, match="not found"):
        read_cache(tmp_path / "missing.cache")


def test_every_scale_method_writes_the_header_of_the_calibrator_that_reads_it() -> None:
    """The header names the calibrator that replays the cache (ours and trtexec --calib: entropy-2), not
    how the scales were chosen: a MinMaxCalibration header made our own build refuse the --calib-method max cache
    and TensorRT skip it."""
    from pela_export.calibration import CALIBRATOR_BY_METHOD, SCALE_METHODS

    for method in SCALE_METHODS.names():
        cache = make_cache({"x": 0.5}, trt_version="10.3.0", calibrator=CALIBRATOR_BY_METHOD[method])
        assert cache.header == "TRT-100300-EntropyCalibration2", method
    with pytest.raises(OptionError, match="EntropyCalibration2"):
        make_cache({"x": 0.5}, trt_version="10.3.0", calibrator="MinMaxCalibration")


def test_a_cache_is_restamped_per_target_version() -> None:
    theirs = CalibrationCache.parse("TRT-8601-MinMaxCalibration\ninput: 3c010204\n")  # e.g. written by TensorRT
    assert theirs.for_version("10.3.0").to_text() == "TRT-100300-EntropyCalibration2\ninput: 3c010204\n"
    assert theirs.for_version("8.6.2").header == "TRT-8602-EntropyCalibration2"
    assert theirs.for_version("8.6").header == "TRT-8600-EntropyCalibration2"  # qdq-translator's 8.6 default
