"""simplify_onnx: every registered simplifier, and loud recorded fallbacks."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from pela_export.errors import ExportError, OptionError
from pela_export.export import (
    SIMPLIFIERS,
    check_parameter_preservation,
    load_onnx,
    simplify_onnx,
    verify_onnx,
)
from pela_export.models.base import Tolerance


def test_registry_names() -> None:
    assert SIMPLIFIERS.names() == ["none", "onnxsim", "onnxslim"]
    with pytest.raises(OptionError, match="--simplifier"):
        SIMPLIFIERS.get("polygraphy")


@pytest.mark.parametrize("method", ["onnxsim", "onnxslim", "none"])
@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_each_simplifier_on_tiny_vit(vit_model, vit_exports, tmp_path: Path, method: str, exporter: str) -> None:
    src = vit_exports(exporter).path
    dst = tmp_path / f"vit_{method}.onnx"
    res = simplify_onnx(src, dst, method=method)
    assert res.method_used == res.method_requested == method and res.warnings == [] and not res.fell_back
    assert res.nodes_after <= res.nodes_before
    if method == "none":
        assert res.nodes_after == res.nodes_before
    proto = load_onnx(dst)
    assert proto.opset_import[0].version == 17
    assert check_parameter_preservation(vit_model, proto).ok  # simplifiers keep the factors apart
    inputs = [np.random.default_rng(b).standard_normal((b, 3, 32, 32)).astype(np.float32) for b in (1, 3)]
    v = verify_onnx(vit_model, dst, inputs, Tolerance(1e-4, 1e-3), "input", "logits")
    assert v.ok, v.failures()
    assert res.to_dict()["fell_back"] is False


def test_onnxsim_check_failure_falls_back(mlp_exports, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxsim

    monkeypatch.setattr(onnxsim, "simplify", lambda model, **kw: (model, False))
    _, exp = mlp_exports("dynamo")
    with pytest.warns(RuntimeWarning, match="onnxsim.*falling back to 'onnxslim'"):
        res = simplify_onnx(exp.path, tmp_path / "s.onnx")
    assert res.method_requested == "onnxsim" and res.method_used == "onnxslim" and res.fell_back
    assert len(res.warnings) == 1 and "check failed" in res.warnings[0]
    load_onnx(tmp_path / "s.onnx")


def test_exception_falls_through_to_none(mlp_exports, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxsim
    import onnxslim

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("synthetic simplifier crash")

    monkeypatch.setattr(onnxsim, "simplify", boom)
    monkeypatch.setattr(onnxslim, "slim", boom)
    _, exp = mlp_exports("legacy")
    with pytest.warns(RuntimeWarning):
        res = simplify_onnx(exp.path, tmp_path / "n.onnx")
    assert res.method_used == "none" and len(res.warnings) == 2
    assert all("synthetic simplifier crash" in w for w in res.warnings)
    assert onnx.load(str(tmp_path / "n.onnx")).graph == onnx.load(str(exp.path)).graph


def test_missing_onnxsim_is_a_dependency_warning(mlp_exports, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxsim", None)  # makes `import onnxsim` raise ImportError
    _, exp = mlp_exports("legacy")
    with pytest.warns(RuntimeWarning, match="DependencyError"):
        res = simplify_onnx(exp.path, tmp_path / "d.onnx", method="onnxsim", fallbacks=("none",))
    assert res.method_used == "none" and "pip install onnxsim" in res.warnings[0]


def test_all_failing_raises_and_writes_nothing(mlp_exports, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxsim

    monkeypatch.setattr(onnxsim, "simplify", lambda model, **kw: (model, False))
    _, exp = mlp_exports("legacy")
    with pytest.warns(RuntimeWarning), pytest.raises(ExportError, match="every simplifier failed") as info:
        simplify_onnx(exp.path, tmp_path / "x.onnx", method="onnxsim", fallbacks=())
    assert "--simplifier none" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_unknown_method_rejected_before_work(mlp_exports, tmp_path: Path) -> None:
    _, exp = mlp_exports("legacy")
    with pytest.raises(OptionError, match="unknown simplifier 'magic'"):
        simplify_onnx(exp.path, tmp_path / "x.onnx", method="onnxsim", fallbacks=("magic",))


def test_in_place_simplify(mlp_exports, tmp_path: Path) -> None:
    _, exp = mlp_exports("legacy")
    copy = tmp_path / "inplace.onnx"
    copy.write_bytes(exp.path.read_bytes())
    res = simplify_onnx(copy, copy, method="onnxslim")
    assert res.method_used == "onnxslim"
    load_onnx(copy)
