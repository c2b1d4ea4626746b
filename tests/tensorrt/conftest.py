"""Fixtures for the TensorRT adapter's contract tests: tiny ONNX graphs and fake TensorRT modules."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fake_tensorrt import VERSIONS, make_fake_tensorrt
from trt_testutil import fp16_model, qdq_model, relu_model, save


@pytest.fixture
def models(tmp_path: Path) -> dict[str, Path]:
    """fp32 / fp16 / qdq variants of the same tiny graph (dynamic batch), saved in tmp_path."""
    return {"fp32": save(relu_model(), tmp_path / "model.onnx"),
            "fp16": save(fp16_model(), tmp_path / "model_fp16.onnx"),
            "int8": save(qdq_model(), tmp_path / "model_int8.onnx")}


@pytest.fixture
def calib_cache(tmp_path: Path) -> Path:
    p = tmp_path / "calib.cache"
    p.write_bytes(b"TRT-8601-EntropyCalibration2\ninput: 3c23d70a\n")
    return p


@pytest.fixture(params=VERSIONS)
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fake() -> Callable[..., Any]:
    return make_fake_tensorrt
