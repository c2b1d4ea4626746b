"""Low-rank convolutions: channel and spatial SVD exact at full rank, ONNX-verified, weighted, saved and reloaded."""
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pela_export.lowrank import (CONV_DECOMPOSITIONS, LowRankConv2d, collect_activation_stats, factorize_model,
                                 load_compressed, output_error, save_compressed)
from pela_export.lowrank.kinds import layer_matrix

GEOMETRIES = [
    dict(kernel_size=3, padding=1),
    dict(kernel_size=(3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2)),
    dict(kernel_size=1),
    dict(kernel_size=(5, 3), stride=2, padding=0),
]


@pytest.mark.parametrize("decomposition", CONV_DECOMPOSITIONS.names())
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "-".join(f"{k}{v}" for k, v in g.items()))
def test_full_rank_is_exact_float64(decomposition: str, geometry: dict) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, bias=True, **geometry).double()
    m = layer_matrix(conv, decomposition)
    left, s, right = torch.linalg.svd(m, full_matrices=False)
    layer = LowRankConv2d.from_conv(conv, left * s, right, decomposition)
    x = torch.randn(2, 6, 13, 11, dtype=torch.float64)
    torch.testing.assert_close(layer(x), conv(x), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(layer.weight_product, conv.weight, atol=1e-12, rtol=0)
    u, v = layer.factor_matrices()
    torch.testing.assert_close(u @ v, m, atol=1e-12, rtol=0)


def _convnet() -> nn.Module:
    class Block(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(c)
            self.conv2 = nn.Conv2d(c, c, 3, padding=1)
            self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.dw(self.conv2(torch.relu(self.bn(self.conv1(x)))))

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), Block(32), Block(32), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(32, 5)).eval()


@pytest.mark.parametrize("decomposition", ["channel", "spatial"])
def test_factorize_records_and_reloads(decomposition: str, tmp_path: Path) -> None:
    model = _convnet()
    res = factorize_model(model, ratio=2, conv_decomposition=decomposition)
    names = [r.name for r in res.factorized]
    assert names == ["1.conv1", "1.conv2", "2.conv1", "2.conv2"]  # stem, depthwise and head stay dense
    rec = res.layers[0]
    assert rec.kind == f"conv-{decomposition}" and res.to_dict()["conv_decomposition"] == decomposition
    assert (rec.out_features, rec.in_features) == ((32, 288) if decomposition == "channel" else (96, 96))
    lr = res.model.get_submodule("1.conv1")
    assert isinstance(lr, LowRankConv2d) and rec.params_after == sum(p.numel() for p in lr.parameters())
    assert rec.params_before == 32 * 32 * 9 and rec.params_after < rec.params_before
    save_compressed(res, tmp_path / "c.pt", tmp_path / "c.json")
    back, spec = load_compressed(_convnet(), tmp_path / "c.pt", tmp_path / "c.json")
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(back(x), res.model(x))
    assert isinstance(back.get_submodule("2.conv2"), LowRankConv2d)


def test_grouped_and_reflect_padding_left_dense_with_reason() -> None:
    from pela_export.lowrank import classify_layers

    model = _convnet()
    model[1].conv2 = nn.Conv2d(32, 32, 3, padding=1, padding_mode="reflect")
    why = {c.name: c.reason for c in classify_layers(model) if not c.chosen}
    assert "grouped convolution (groups=32)" in why["1.dw"] and "depthwise" in why["1.dw"]
    assert "padding_mode='reflect'" in why["1.conv2"]


def test_whitened_channel_svd_lowers_output_error_on_calibration_data() -> None:
    model = _convnet()
    torch.manual_seed(1)
    mix = torch.randn(3, 3) * torch.tensor([5.0, 0.2, 0.05])  # strongly anisotropic inputs
    batches = [torch.einsum("ij,bjhw->bihw", mix, torch.randn(8, 3, 8, 8)) for _ in range(4)]
    stats = collect_activation_stats(model, ["1.conv1", "1.conv2"], batches)
    assert stats["1.conv1"].gram.shape == (32 * 9, 32 * 9) and stats["1.conv1"].n_samples == 4 * 8 * 64
    errs = {}
    for method in ("svd", "whiten"):
        res = factorize_model(model, ratio=4, method=method, stats=stats, include=["1.conv1", "1.conv2"])
        errs[method] = [r.weighted_error for r in res.factorized]
    assert all(w < s for w, s in zip(errs["whiten"], errs["svd"]))
    w = layer_matrix(model[1].conv1)
    assert output_error(w, w, torch.eye(w.shape[1], dtype=w.dtype), stats["1.conv1"].gram) == pytest.approx(0.0)


@pytest.mark.parametrize("decomposition", ["channel", "spatial"])
def test_onnx_keeps_both_factors_and_verifies(decomposition: str, tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    import onnx

    from pela_export.export.params import check_parameter_preservation

    model = factorize_model(_convnet(), ratio=2, conv_decomposition=decomposition).model.eval()
    x = torch.randn(2, 3, 8, 8)
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=False, opset_version=17)
    check = check_parameter_preservation(model, onnx.load(str(path)))
    assert check.ok and check.lowrank_layers == 4 and all(f.ok for f in check.factors)
    got = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, model(x).detach().numpy(), atol=1e-5, rtol=1e-4)
