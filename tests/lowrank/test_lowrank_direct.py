"""Layers whose .weight model code reads directly: served by the factors (F.linear) or left dense with the reason."""
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from pela_export.lowrank import factorize_model
from pela_export.lowrank.direct import FactoredWeight, find_direct_weight_reads


class Block(nn.Module):
    """BEiT-style attention input (F.linear on qkv.weight with a bias built in forward) and a transposed read."""

    def __init__(self, d: int = 48) -> None:
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.q_bias = nn.Parameter(torch.randn(3 * d) * 0.1)
        self.proj = nn.Linear(3 * d, d)
        self.fc = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.linear(x, self.qkv.weight, self.q_bias)
        h = h @ self.proj.weight.t() + self.proj.bias  # not F.linear: two factors cannot serve it
        return x + self.fc(torch.relu(h))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(Block(), Block()).eval()


def _trial(model: nn.Module) -> object:
    return model(torch.randn(2, 5, 48))


def test_probe_tells_served_from_dense_reads() -> None:
    reads = find_direct_weight_reads(_model(), ["0.qkv", "0.proj", "0.fc"], _trial)
    assert set(reads) == {"0.qkv", "0.proj"}  # fc is only called
    assert reads["0.qkv"].served and "test_lowrank_direct.py" in reads["0.qkv"].where
    assert not reads["0.proj"].served and ".weight.t" in reads["0.proj"].other_uses
    assert type(_model()[0].qkv) is nn.Linear  # classes restored


def test_factorize_serves_f_linear_and_keeps_the_rest_dense() -> None:
    model = _model()
    res = factorize_model(model, ratio=2, include=["*.qkv", "*.proj", "*.fc"], trial=_trial)
    status = {r.name: (r.status, r.reason) for r in res.layers}
    assert status["0.qkv"][0] == "factorized" and "served by the two factors" in status["0.qkv"][1]
    assert status["0.proj"][0] == "skipped" and "left dense" in status["0.proj"][1] and ".weight.t" in status["0.proj"][1]
    assert status["0.fc"] == ("factorized", "")
    assert [r.name for r in res.layers] == [f"{i}.{n}" for i in range(2) for n in ("qkv", "proj", "fc")]
    x = torch.randn(3, 5, 48)
    assert res.model(x).shape == model(x).shape
    assert isinstance(res.model[0].qkv.weight, FactoredWeight)


def test_without_trial_the_export_would_fail_clearly() -> None:
    res = factorize_model(_model(), ratio=2, include=["*.proj"])  # no trial: nothing known about direct reads
    with pytest.raises(AttributeError, match="can only be passed as F.linear's weight"):
        res.model(torch.randn(1, 5, 48))


@pytest.mark.parametrize("dynamo", [True, False])
def test_export_keeps_factors_of_the_served_layer(dynamo: bool, tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    import onnx

    from pela_export.export.params import check_parameter_preservation

    model = factorize_model(_model(), ratio=2, include=["*.qkv", "*.proj", "*.fc"], trial=_trial).model
    x = torch.randn(2, 5, 48)
    path = tmp_path / "m.onnx"
    kw = {} if dynamo else {"opset_version": 17}
    torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=dynamo, **kw)
    check = check_parameter_preservation(model, onnx.load(str(path)))
    assert check.ok and check.lowrank_layers == 4
    got = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, model(x).detach().numpy(), atol=1e-5, rtol=1e-4)


class BiasMLPBlock(nn.Module):
    """SwinV2-style: an MLP on fixed coordinates (a buffer) makes an additive bias; the exporter folds it."""

    def __init__(self, d: int = 48) -> None:
        super().__init__()
        self.register_buffer("coords", torch.linspace(-1, 1, 5 * 64).reshape(5, 64))
        self.meta = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, d))
        self.fc = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(x) + self.meta(self.coords)


def test_layers_fed_constants_stay_dense() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(BiasMLPBlock(), BiasMLPBlock()).eval()
    res = factorize_model(model, ratio=2, include=["*.meta.*", "*.fc"], trial=_trial)
    status = {r.name: (r.status, r.reason) for r in res.layers}
    assert status["0.meta.0"][0] == "skipped" and "does not depend on the model's input" in status["0.meta.0"][1]
    assert status["1.meta.2"][0] == "skipped" and status["1.fc"] == ("factorized", "")
    same = factorize_model(model, ratio=2, include=["*.meta.*", "*.fc"], trial=lambda m: m(torch.ones(2, 5, 48)))
    assert all(r.status == "skipped" for r in same.layers)  # why the trial must vary its inputs
