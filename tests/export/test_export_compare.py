"""The comparator: explicit tolerances, every failing output listed."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pela_export.errors import VerificationError
from pela_export.export import compare_arrays, compare_outputs
from pela_export.models.base import Tolerance

TOL = Tolerance(atol=1e-4, rtol=1e-3)


def _outs(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"logits": rng.standard_normal((2, 5)).astype(np.float32),
            "features": rng.standard_normal((2, 3, 4)).astype(np.float32)}


def test_identical_outputs_pass() -> None:
    ref = _outs()
    c = compare_outputs(ref, {k: v.copy() for k, v in ref.items()}, TOL)
    assert c.ok and c.failures() == []
    assert all(o.max_abs_err == 0.0 and o.max_rel_err == 0.0 for o in c.outputs)
    c.raise_if_failed("verify")  # no-op
    json.dumps(c.to_dict())


def test_within_atol_plus_rtol_passes_elementwise() -> None:
    ref = {"y": np.array([0.0, 1000.0], np.float32)}
    # 0.5 gap on 1000 is inside rtol*|ref| = 1.0; 5e-5 on 0 is inside atol
    assert compare_outputs(ref, {"y": np.array([5e-5, 1000.5], np.float32)}, TOL).ok
    c = compare_outputs(ref, {"y": np.array([2e-4, 1000.5], np.float32)}, TOL)
    assert not c.ok
    s = c.outputs[0]
    assert s.num_out_of_tol == 1 and s.worst_index == [0]
    assert s.worst_allowed == pytest.approx(1e-4)
    assert s.max_abs_err == pytest.approx(0.5, rel=1e-3)


def test_two_wrong_outputs_are_both_listed() -> None:
    ref = _outs()
    cand = {"logits": ref["logits"] + 0.1, "features": ref["features"] * 2 + 1}
    c = compare_outputs(ref, cand, TOL, ref_name="pytorch", cand_name="onnxruntime")
    assert [o.name for o in c.failed] == ["logits", "features"]
    with pytest.raises(VerificationError) as info:
        c.raise_if_failed("verify")
    err = info.value
    assert len(err.failures) == 2
    assert err.failures[0].startswith("logits:") and err.failures[1].startswith("features:")
    text = str(err)
    assert "verify" in text and "2 of 2 output(s)" in text
    assert "allowed" in text and "max abs err" in text  # observed vs allowed numbers
    assert "--atol" in text and "--legacy-exporter" in text and "--simplifier none" in text
    assert "10/10 elements" in err.failures[0]


def test_shape_and_dtype_mismatch_reported() -> None:
    ref = {"a": np.zeros((2, 3), np.float32), "b": np.zeros(4, np.float32), "c": np.zeros(2, np.float32)}
    cand = {"a": np.zeros((3, 2), np.float32), "b": np.zeros(4, np.float16), "c": np.zeros(2, np.float32)}
    c = compare_outputs(ref, cand, TOL)
    probs = {o.name: o.problem for o in c.failed}
    assert set(probs) == {"a", "b"}
    assert "shape mismatch" in probs["a"] and "[3, 2]" in probs["a"] and "[2, 3]" in probs["a"]
    assert "dtype mismatch" in probs["b"]


def test_missing_and_extra_outputs_fail() -> None:
    c = compare_outputs({"logits": np.zeros(2)}, {"output": np.zeros(2)}, TOL)
    assert not c.ok
    names = {o.name for o in c.failed}
    assert names == {"logits", "output"}
    assert any("missing from onnxruntime" in f for f in c.failures())


def test_nan_handling() -> None:
    ref = np.array([np.nan, 1.0, np.inf], np.float32)
    assert compare_arrays("y", ref, ref.copy(), TOL).ok  # same NaN/Inf positions agree
    s = compare_arrays("y", ref, np.array([0.0, 1.0, np.inf], np.float32), TOL)
    assert not s.ok and s.nonfinite_mismatch == 1 and "NaN/Inf" in (s.problem or "")


def test_scalar_and_empty_outputs() -> None:
    assert compare_arrays("s", np.float32(1.0), np.float32(1.0), TOL).ok
    assert not compare_arrays("s", np.float32(1.0), np.float32(2.0), TOL).ok
    assert compare_arrays("e", np.zeros((0, 3)), np.zeros((0, 3)), TOL).ok
