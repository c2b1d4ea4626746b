"""export_onnx / OnnxFromTorch / load_onnx / opset conversion."""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from pela_export.errors import ExportError, OnnxCheckError, OptionError
from pela_export.export import (
    OnnxFromTorch,
    OpsetConversionError,
    check_parameter_preservation,
    convert_opset,
    export_onnx,
    load_onnx,
    ort_run,
    ort_session,
    verify_onnx,
)
from pela_export.export import onnx_export as onnx_export_mod
from pela_export.lowrank.layer import LowRankLinear
from pela_export.models.base import LoadedModel, Tolerance

EXPORTERS = ["dynamo", "legacy"]


def _batch_dim(path: Path) -> int | str:
    d = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    return d.dim_value if d.HasField("dim_value") else d.dim_param


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_mlp_export_opset17_dynamic_batch(mlp_exports, exporter: str) -> None:
    model, res = mlp_exports(exporter)
    proto = load_onnx(res.path)
    assert res.opset == res.opset_requested == 17
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert res.exporter == exporter and res.fallback_reason is None
    assert isinstance(_batch_dim(res.path), str) and res.input_shape[1:] == [16]
    assert not (res.path.parent / f"{res.path.name}.data").exists() and res.external_data is False
    assert [p.name for p in res.path.parent.iterdir() if p.name.startswith(".")] == []  # no temp files left
    inputs = [np.random.default_rng(i).standard_normal((b, 16)).astype(np.float32) for i, b in enumerate((1, 3))]
    v = verify_onnx(model, res.path, inputs, Tolerance(1e-5, 1e-4), "input", "logits")
    assert v.ok, v.failures()
    assert v.batch_sizes == [1, 3]
    assert res.to_dict()["path"] == str(res.path)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_tiny_vit_lowrank_export(vit_model, vit_exports, exporter: str) -> None:
    res = vit_exports(exporter)
    assert res.opset == 17 and res.ir_version <= 8
    if exporter == "dynamo":
        assert res.opset_exported == 18 and res.conversions  # torchlib emits 18; we convert down
    sess = ort_session(res.path, threads=1)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            ref = vit_model(x).numpy()
        out = ort_run(sess, {"input": x.numpy()})["logits"]
        assert out.shape == (batch, 10)
        np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-3)
    # the dynamo optimizer must not fold V and U of any LowRankLinear into one matrix
    check = check_parameter_preservation(vit_model, load_onnx(res.path))
    assert check.ok and check.lowrank_layers == 9
    assert all(f.first_found == f.second_found == "value" for f in check.factors)


def test_static_batch(tmp_path: Path, mlp: nn.Module) -> None:
    res = export_onnx(mlp, torch.randn(2, 16), tmp_path / "static.onnx", dynamic_batch=False)
    assert res.input_shape == [2, 16] and res.dynamic_batch is False
    sess = ort_session(res.path)
    assert ort_run(sess, {"input": np.zeros((2, 16), np.float32)})["logits"].shape == (2, 8)
    with pytest.raises(Exception, match="(?i)dimension|shape"):  # onnxruntime's own error type
        ort_run(sess, {"input": np.zeros((3, 16), np.float32)})


def test_batch1_example_is_widened_and_recorded(tmp_path: Path, mlp: nn.Module) -> None:
    res = export_onnx(mlp, torch.randn(1, 16), tmp_path / "b1.onnx", exporter="dynamo")
    assert isinstance(_batch_dim(res.path), str)
    assert any("batch 1 -> 2" in c for c in res.auto_choices)


@pytest.mark.parametrize(("opset", "exporter"), [(13, "legacy"), (16, "dynamo"), (18, "dynamo")])
def test_other_opsets_honoured(tmp_path: Path, mlp: nn.Module, opset: int, exporter: str) -> None:
    res = export_onnx(mlp, torch.randn(2, 16), tmp_path / f"o{opset}.onnx", opset=opset,
                      exporter=exporter)  # type: ignore[arg-type]
    assert res.opset == opset == onnx.load(str(res.path)).opset_import[0].version
    x = np.ones((3, 16), np.float32)
    with torch.no_grad():
        ref = mlp(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ort_run(ort_session(res.path), {"input": x})["logits"], ref, atol=1e-5)


def test_dynamo_cannot_reach_opset13_and_says_so(tmp_path: Path, mlp: nn.Module) -> None:
    # onnx.version_converter has no Div 14 -> 13 adapter; we must fail loudly, not ship opset 14
    with pytest.raises(ExportError, match="opset 13") as info:
        export_onnx(mlp, torch.randn(2, 16), tmp_path / "o13.onnx", opset=13, exporter="dynamo")
    assert "--legacy-exporter" in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("opset", [12, 21, "17", 17.0, True])
def test_invalid_opset(tmp_path: Path, mlp: nn.Module, opset: object) -> None:
    with pytest.raises(OptionError, match="--opset"):
        export_onnx(mlp, torch.randn(2, 16), tmp_path / "x.onnx", opset=opset)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_invalid_exporter(tmp_path: Path, mlp: nn.Module) -> None:
    with pytest.raises(OptionError, match="exporter"):
        export_onnx(mlp, torch.randn(2, 16), tmp_path / "x.onnx", exporter="tensorrt")  # type: ignore[arg-type]


class _Broken(nn.Module):
    """Fails inside forward, for both exporters alike."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("deliberate failure in forward")


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_export_failure_leaves_nothing(tmp_path: Path, exporter: str) -> None:
    target = tmp_path / "out" / "model.onnx"
    with pytest.raises(ExportError) as info:
        export_onnx(_Broken(), torch.randn(2, 4), target, exporter=exporter)  # type: ignore[arg-type]
    msg = str(info.value)
    assert "deliberate failure" in msg and "fix:" in msg
    assert ("--legacy-exporter" in msg)
    assert not target.exists()
    assert not target.parent.exists() or list(target.parent.iterdir()) == []


def test_checker_failure_leaves_nothing(tmp_path: Path, mlp: nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    def bad_check(*args: object, **kwargs: object) -> None:
        raise onnx.checker.ValidationError("synthetic checker failure")

    monkeypatch.setattr(onnx.checker, "check_model", bad_check)
    with pytest.raises(OnnxCheckError, match="synthetic checker failure"):
        export_onnx(mlp, torch.randn(2, 16), tmp_path / "m.onnx", exporter="legacy")
    assert list(tmp_path.iterdir()) == []


def test_fallback_exporter_is_loud_and_recorded(tmp_path: Path, mlp: nn.Module,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("synthetic dynamo failure")

    monkeypatch.setattr(onnx_export_mod, "_export_dynamo", boom)
    with pytest.raises(ExportError, match="synthetic dynamo failure"):
        export_onnx(mlp, torch.randn(2, 16), tmp_path / "a.onnx")
    with pytest.warns(RuntimeWarning, match="fell back to legacy"):
        res = export_onnx(mlp, torch.randn(2, 16), tmp_path / "b.onnx", fallback_exporter=True)
    assert res.exporter == "legacy" and res.exporter_requested == "dynamo"
    assert res.fallback_reason and "synthetic dynamo failure" in res.fallback_reason


def test_export_keeps_training_flag(tmp_path: Path, mlp: nn.Module) -> None:
    mlp.train()
    export_onnx(mlp, torch.randn(2, 16), tmp_path / "t.onnx", exporter="legacy")
    assert mlp.training


def test_onnx_from_torch_loader(tmp_path: Path) -> None:
    model = nn.Sequential(LowRankLinear(8, 6, 2), nn.ReLU()).eval()
    loaded = LoadedModel(model=model, name="tiny", source="test", input_shape=(8,), input_shape_origin="user",
                         output_name="out")
    loader = OnnxFromTorch(loaded, opset=17, exporter="legacy")
    path = loader(tmp_path / "tiny.onnx")
    assert path.exists() and loader.result is not None
    assert loader.result.output_names == ["out"]
    with pytest.raises(OptionError):
        OnnxFromTorch(loaded, opset=99)


def test_load_onnx_errors(tmp_path: Path, mlp_exports) -> None:
    with pytest.raises(OnnxCheckError, match="not found"):
        load_onnx(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\xff this is not a protobuf \x12\x34" * 10)
    with pytest.raises(OnnxCheckError) as info:
        load_onnx(junk)
    assert str(junk) in str(info.value) and "fix:" in str(info.value)
    text = tmp_path / "text.onnx"
    text.write_text("hello")
    with pytest.raises(OnnxCheckError):
        load_onnx(text)
    _, res = mlp_exports("dynamo")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(res.path.read_bytes()[: res.file_bytes // 2])
    with pytest.raises(OnnxCheckError):
        load_onnx(truncated)
    with pytest.raises(OnnxCheckError, match="not a regular file"):
        load_onnx(tmp_path)


def _reduce_pad_model(pad_axes: bool = False) -> onnx.ModelProto:
    """An opset-18 graph as dynamo writes it: Pad (no axes) then ReduceMean(axes as input)."""
    inits = [helper.make_tensor("pads", TensorProto.INT64, [4], [0, 1, 0, 1]),
             helper.make_tensor("axes", TensorProto.INT64, [1], [1])]
    pad_inputs = ["x", "pads"] + (["", "pad_axes"] if pad_axes else [])
    if pad_axes:
        inits.append(helper.make_tensor("pad_axes", TensorProto.INT64, [2], [0, 1]))
    nodes = [helper.make_node("Pad", pad_inputs, ["p"], mode="constant"),
             helper.make_node("ReduceMean", ["p", "axes"], ["y"], keepdims=0, noop_with_empty_axes=0)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b"])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


def test_opset18_to_17_rewrite(tmp_path: Path) -> None:
    model = _reduce_pad_model()
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    p18 = tmp_path / "m18.onnx"
    onnx.save(model, str(p18))
    expected = ort_run(ort_session(p18), {"x": x})["y"]
    converted, notes = convert_opset(model, 17)
    onnx.checker.check_model(converted, full_check=True)
    assert converted.opset_import[0].version == 17
    assert any("ReduceMean" in n for n in notes)
    assert "axes" not in {i.name for i in converted.graph.initializer}  # unused axes input removed
    p17 = tmp_path / "m17.onnx"
    onnx.save(converted, str(p17))
    np.testing.assert_allclose(ort_run(ort_session(p17), {"x": x})["y"], expected)


def test_opset_rewrite_refuses_what_it_cannot_express() -> None:
    with pytest.raises(OpsetConversionError, match="Pad.*axes") as info:
        convert_opset(_reduce_pad_model(pad_axes=True), 17)
    assert "--opset 18" in str(info.value) and "--legacy-exporter" in str(info.value)


def _tiny_swin() -> nn.Module:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=64, embed_dim=24,
                                 depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), window_size=2, num_classes=10)


@pytest.mark.parametrize("exporter", EXPORTERS)  # ~12 s for both on 2 cores: not marked slow
def test_tiny_swin_lowrank_export(tmp_path: Path, lowrankify, exporter: str) -> None:
    model = lowrankify(_tiny_swin(), 8).eval()
    start = time.perf_counter()
    res = export_onnx(model, torch.randn(2, 3, 64, 64), tmp_path / "swin.onnx", exporter=exporter)  # type: ignore[arg-type]
    assert time.perf_counter() - start < 120
    assert res.opset == 17 and isinstance(_batch_dim(res.path), str)
    inputs = [np.random.default_rng(b).standard_normal((b, 3, 64, 64)).astype(np.float32) for b in (1, 3)]
    v = verify_onnx(model, res.path, inputs, Tolerance(1e-4, 1e-3), "input", "logits")
    assert v.ok, v.failures()
    assert check_parameter_preservation(model, load_onnx(res.path)).ok
