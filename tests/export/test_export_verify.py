"""verify_onnx / make_verification_inputs / ort_session."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pela_export.errors import InputShapeError, OnnxCheckError, OptionError, VerificationError
from pela_export.export import make_verification_inputs, ort_session, verify_onnx
from pela_export.lowrank.layer import LowRankLinear
from pela_export.models.base import LoadedModel, Tolerance


def _loaded(model: nn.Module | None = None) -> LoadedModel:
    return LoadedModel(model=model or nn.Identity(), name="t", source="test", input_shape=(16,),
                       input_shape_origin="user")


def test_make_verification_inputs_random_and_real() -> None:
    loaded = _loaded()
    a = make_verification_inputs(loaded, n_random=3, batch_sizes=(1, 4))
    assert [x.shape for x in a] == [(1, 16), (4, 16), (1, 16)]
    assert all(x.dtype == np.float32 for x in a)
    b = make_verification_inputs(loaded, n_random=3, batch_sizes=(1, 4))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))  # seeded
    assert not np.array_equal(a[0], a[2])  # different seeds per input
    real = np.random.default_rng(0).standard_normal((10, 16))  # float64: cast to the model dtype
    c = make_verification_inputs(loaded, real=real, n_random=1, batch_sizes=(1, 4))
    assert [x.shape for x in c] == [(1, 16), (4, 16), (4, 16), (2, 16)]
    assert c[1].dtype == np.float32 and np.allclose(c[1], real[:4])
    with pytest.raises(InputShapeError, match="real inputs"):
        make_verification_inputs(loaded, real=np.zeros((2, 15)))
    with pytest.raises(OptionError):
        make_verification_inputs(loaded, n_random=0)
    with pytest.raises(OptionError):
        make_verification_inputs(loaded, batch_sizes=(0,))


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_verify_passes_then_fails_when_weights_change(mlp_exports, exporter: str) -> None:
    model, res = mlp_exports(exporter)
    inputs = make_verification_inputs(_loaded(model), n_random=3, batch_sizes=(1, 4))
    ok = verify_onnx(model, res.path, inputs, Tolerance(1e-5, 1e-4), "input", "logits", threads=1)
    assert ok.ok and ok.batch_sizes == [1, 4, 1]
    assert ok.outputs["logits"]["ok"] and ok.outputs["logits"]["inputs"] == 3
    json.dumps(ok.to_dict())
    ok.raise_if_failed()

    changed = nn.Sequential(LowRankLinear(16, 32, 4), nn.GELU(), nn.Linear(32, 8))
    changed.load_state_dict(model.state_dict())
    with torch.no_grad():
        changed[2].bias += 0.5
    bad = verify_onnx(changed, res.path, inputs, Tolerance(1e-5, 1e-4), "input", "logits")
    assert not bad.ok and bad.outputs["logits"]["failed_inputs"] == 3
    assert bad.outputs["logits"]["max_abs_err"] == pytest.approx(0.5, abs=1e-4)
    with pytest.raises(VerificationError) as info:
        bad.raise_if_failed("verify")
    assert len(info.value.failures) == 3 and "batch 4" in info.value.failures[1]
    json.dumps(bad.to_dict())


def test_verify_wrong_input_name(mlp_exports) -> None:
    model, res = mlp_exports("legacy")
    with pytest.raises(InputShapeError, match="pixel_values"):
        verify_onnx(model, res.path, [np.zeros((1, 16), np.float32)], Tolerance(), "pixel_values", "logits")


def test_verify_wrong_output_name_is_a_failure(mlp_exports) -> None:
    model, res = mlp_exports("legacy")
    v = verify_onnx(model, res.path, [np.zeros((1, 16), np.float32)], Tolerance(), "input", "probs")
    assert not v.ok
    assert any("missing from onnxruntime" in f for f in v.failures())


def test_ort_session_errors(tmp_path: Path) -> None:
    with pytest.raises(OnnxCheckError, match="not found"):
        ort_session(tmp_path / "nope.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"garbage")
    with pytest.raises(OnnxCheckError, match="ONNX Runtime cannot load"):
        ort_session(junk)


def test_ort_session_threads_validated(mlp_exports) -> None:
    _, res = mlp_exports("legacy")
    with pytest.raises(OptionError, match="--threads"):
        ort_session(res.path, threads=0)


def test_ort_sessions_do_not_spin_by_default(tmp_path) -> None:
    """Spin-waiting cost ~50 ms per deit_small call on a 2-vCPU VM; sessions turn it off unless asked."""
    import onnx
    from onnx import TensorProto, helper

    from pela_export.export.runtime import ort_session

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    quiet = ort_session(path, threads=2).get_session_options()
    assert quiet.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    spinning = ort_session(path, threads=2, spinning=True).get_session_options()
    with pytest.raises(RuntimeError, match="allow_spinning"):  # left at ORT's default (spin) when asked
        spinning.get_session_config_entry("session.intra_op.allow_spinning")
