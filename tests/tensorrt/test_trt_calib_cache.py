"""INT8 calibration caches on the TensorRT side (issue 14, item 1): whatever header a cache arrives with, the
cache-replaying calibrator hands TensorRT ``TRT-<local version>-EntropyCalibration2`` (TensorRT skips a cache
whose header names another version or calibrator, then fails with "no scaling factors"), and every trtexec
script reads its own copy stamped for its target version and restamped from the local trtexec when it runs."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from fake_tensorrt import make_fake_tensorrt
from trt_testutil import ORIN

from pela_export.tensorrt import BuildOptions, build_engine, features_for_version, inspect_onnx, plan_build
from pela_export.tensorrt.trtexec import write_trtexec_script

BODY = b"input: 3c23d70a\n/fc/MatMul_output_0: 3d237c3a\n"


@pytest.fixture
def minmax_cache(tmp_path: Path) -> Path:
    """A cache as `--calib-method max` used to write it: MinMaxCalibration, stamped for another version."""
    p = tmp_path / "model.int8.calib.cache"
    p.write_bytes(b"TRT-100300-MinMaxCalibration\n" + BODY)
    return p


@pytest.mark.parametrize("version,number", [("8.6.1", 8601), ("10.3.0", 100300), ("10.16", 101600)])
def test_replayed_with_the_local_header_whatever_wrote_it(version: str, number: int, models: dict[str, Path],
                                                          minmax_cache: Path, tmp_path: Path) -> None:
    trt = make_fake_tensorrt(version)
    rec = build_engine(models["fp32"], tmp_path / "out" / "m.plan",
                       BuildOptions(precision="int8", calibration_cache=minmax_cache), trt=trt, gpu=ORIN)
    (call,) = trt._fake.called("IBuilderConfig", "set:int8_calibrator")
    assert call.args[0].read_calibration_cache() == f"TRT-{number}-EntropyCalibration2\n".encode() + BODY
    assert any(f"is replayed as TRT-{number}-EntropyCalibration2" in d for d in rec.decisions)
    assert minmax_cache.read_bytes().startswith(b"TRT-100300-MinMaxCalibration")  # the source is not rewritten


def test_each_trtexec_script_reads_a_cache_for_its_version(models: dict[str, Path], minmax_cache: Path,
                                                           tmp_path: Path) -> None:
    g = inspect_onnx(models["fp32"])
    opts = BuildOptions(precision="int8", calibration_cache=minmax_cache)
    for version, header in (("8.6.1", b"TRT-8601-"), ("8.6", b"TRT-8600-"), ("10.3", b"TRT-100300-")):
        plan_path = tmp_path / "engines" / version / "m.plan"
        script = write_trtexec_script(models["fp32"], plan_path, plan_build(opts, features_for_version(version), g))
        cache = plan_path.with_name("m.calib.cache")
        assert cache.read_bytes() == header + b"EntropyCalibration2\n" + BODY
        assert "--calib=m.calib.cache" in script.read_text()


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sed") is None, reason="needs bash and sed")
def test_the_script_restamps_the_cache_from_the_local_trtexec(models: dict[str, Path], minmax_cache: Path,
                                                              tmp_path: Path) -> None:
    """The bundle says 8.6; JetPack 6.0's trtexec is 8.6.2 ([TensorRT v8602] in its first line)."""
    plan_path = tmp_path / "engines" / "8.6" / "m.plan"
    plan = plan_build(BuildOptions(precision="int8", calibration_cache=minmax_cache), features_for_version("8.6"),
                      inspect_onnx(models["fp32"]))
    script = write_trtexec_script(models["fp32"], plan_path, plan)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "trtexec"
    fake.write_text('#!/bin/sh\necho "&&&& RUNNING TensorRT.trtexec [TensorRT v8602] # trtexec $*"\n'
                    f'[ "$1" = --help ] || head -n 1 "$(dirname "$0")/../engines/8.6/m.calib.cache" > '
                    f'"{tmp_path}/seen"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["bash", str(script)], check=True, env=env, capture_output=True, timeout=60)
    assert (tmp_path / "seen").read_text() == "TRT-8602-EntropyCalibration2\n"  # what trtexec --calib read
