"""Kernelized sparse deltas (SNELL) and the global sparsity budget."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from pela_export.errors import OptionError
from pela_export.export.onnx_export import export_onnx
from pela_export.lowrank.layer import LowRankLinear
from pela_export.structured.base import LAYER_TYPES
from pela_export.structured.snell import SNELLLinear
from pela_export.structured.sparsity import (
    allocate_sparsity,
    apply_sparsity,
    rebalance_sparsity,
)

DFT_OPS = {"DFT", "STFT"}


def _base(lowrank: bool = False, in_f: int = 20, out_f: int = 12) -> nn.Module:
    torch.manual_seed(1)
    if lowrank:
        return LowRankLinear.from_factors(torch.randn(out_f, 3) * 0.3, torch.randn(3, in_f) * 0.3, torch.randn(out_f))
    return nn.Linear(in_f, out_f)


def _trained(kernel: str = "distance", lowrank: bool = False, scale: float = 0.2, **hyper) -> SNELLLinear:
    torch.manual_seed(2)
    layer = SNELLLinear.from_base(_base(lowrank), rank=4, kernel=kernel, **hyper)
    with torch.no_grad():
        layer.scale.fill_(scale)
    return layer


def _onnx_run(module: nn.Module, x: torch.Tensor, tmp_path) -> tuple[np.ndarray, set[str]]:
    path = tmp_path / "m.onnx"
    export_onnx(module, x[:2], path, exporter="legacy")
    used = {n.op_type for n in onnx.load(str(path)).graph.node}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0], used


def test_registered() -> None:
    assert LAYER_TYPES.get("snell") is SNELLLinear


@pytest.mark.parametrize("lowrank", [False, True])
@pytest.mark.parametrize("kernel", ["distance", "rbf"])
def test_equals_base_at_init(kernel: str, lowrank: bool) -> None:
    base = _base(lowrank)
    layer = SNELLLinear.from_base(base, rank=4, kernel=kernel)
    x = torch.randn(5, 20)
    assert torch.equal(layer(x), base(x))
    assert layer.delta_nonzeros() == 0
    assert all(not p.requires_grad for p in base.parameters())


def test_kernels_follow_their_definitions() -> None:
    for kernel in ("distance", "rbf"):
        layer = _trained(kernel)
        kmat = layer.kernel_matrix()
        a, b = layer.a.detach(), layer.b.detach()
        for i, j in [(0, 0), (3, 7), (11, 19)]:
            parts = [b[i, :2] - a[j, :2], b[i, 2:] - a[j, 2:]]  # rank 4, heads 2
            if kernel == "distance":
                want = parts[0].norm() - parts[1].norm()
            else:
                want = torch.exp(-0.5 * parts[0].pow(2).sum()) - torch.exp(-0.5 * parts[1].pow(2).sum())
            torch.testing.assert_close(kmat[i, j], want, atol=1e-5, rtol=1e-5)
        # the point of the kernel: rank well above LoRA's r = 4 from the same parameters
        assert torch.linalg.matrix_rank(kmat) > 4


@pytest.mark.parametrize("kernel", ["distance", "rbf"])
def test_forward_equals_effective_weight_and_topk_is_exact(kernel: str) -> None:
    layer = _trained(kernel, nonzeros=37)
    x = torch.randn(2, 3, 20)
    torch.testing.assert_close(layer(x), x @ layer.effective_weight().t() + layer.bias, atol=1e-5, rtol=1e-5)
    delta = layer.delta_weight().detach()
    assert layer.delta_nonzeros() == 37 == int(layer.mask().sum())
    kept = delta[delta != 0].abs().min()
    dropped = (layer.dense_delta().detach() * ~layer.mask()).abs().max()
    assert kept >= dropped  # magnitude competition: every survivor beats every pruned entry


def test_threshold_and_density_modes() -> None:
    layer = _trained(threshold=0.1)
    dense = layer.dense_delta().detach()
    assert layer.delta_nonzeros() == int((dense.abs() > 0.1).sum())
    assert SNELLLinear.from_base(_base(), rank=4, density=0.25).nonzeros == 60
    assert SNELLLinear.from_base(_base(), rank=4).nonzeros == 24  # default density 0.1 of 240


def test_straight_through_mask_gradient() -> None:
    grads = {}
    for ste in (True, False):
        layer = _trained(nonzeros=30, straight_through=ste)
        g = torch.randn(12, 20, generator=torch.Generator().manual_seed(0))
        (layer.delta_weight() * g).sum().backward()
        grads[ste] = layer.scale.grad.clone()
        kmat, mask = layer.kernel_matrix().detach(), layer.mask()
        want = (kmat * g).sum() if ste else (kmat * g * mask).sum()
        torch.testing.assert_close(grads[ste], want, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(grads[True], grads[False])


@pytest.mark.parametrize("kernel", ["distance", "rbf"])
def test_training_steps_reduce_loss_and_only_touch_delta(kernel: str) -> None:
    layer = SNELLLinear.from_base(_base(), rank=4, kernel=kernel, density=0.5)
    torch.manual_seed(3)
    x = torch.randn(64, 20)
    target = layer.base(x) + x @ (0.1 * torch.randn(12, 20)).t()
    before = {n: p.detach().clone() for n, p in layer.named_parameters()}
    opt = torch.optim.SGD([p for p in layer.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(layer(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[1] < losses[0] and losses[2] < losses[0]
    changed = {n for n, p in layer.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"a", "b", "scale"}  # step 1 moves the zero scale, then A and B learn


@pytest.mark.parametrize("lowrank", [False, True])
def test_lowerings_match_module_in_onnx_runtime(lowrank: bool, tmp_path) -> None:
    layer = _trained("rbf", lowrank=lowrank, nonzeros=50).eval()
    x = torch.randn(5, 20)
    want = layer(x).detach().numpy()
    assert layer.available_lowerings()["structured"] is None
    assert "no parameter advantage" in layer.lowering_notes()["structured"]
    for form in ("structured", "lowrank", "dense"):
        module = layer.lowered(form, rank=12 if form == "lowrank" else None)
        got, used = _onnx_run(module, x, tmp_path)
        assert np.abs(got - want).max() < 1e-4, form
        assert not used & DFT_OPS
    assert isinstance(layer.lowered("structured").base, LowRankLinear if lowrank else nn.Linear)


def test_param_counts_and_nonzeros() -> None:
    layer = _trained(nonzeros=40)
    counts = layer.param_counts()
    trainable = (20 + 12) * 4 + 1
    assert (counts.trainable, counts.stored) == (trainable, 20 * 12 + 12 + trainable)
    assert layer.delta_nonzeros() == 40


def test_config_round_trip() -> None:
    layer = _trained("rbf", lowrank=True, threshold=0.05)
    clone = SNELLLinear.from_config(json.loads(json.dumps(layer.config())))
    clone.load_state_dict(layer.state_dict())
    x = torch.randn(3, 20)
    torch.testing.assert_close(clone(x), layer(x))
    assert clone.threshold == 0.05 and clone.nonzeros is None


def _two_layer_model(scales: tuple[float, float]) -> nn.Sequential:
    torch.manual_seed(4)
    first = SNELLLinear.from_base(nn.Linear(20, 12), rank=4)
    second = SNELLLinear.from_base(nn.Linear(20, 12), rank=4)
    second.load_state_dict(first.state_dict())  # identical kernels: only scale / importance differ
    with torch.no_grad():
        first.scale.fill_(scales[0])
        second.scale.fill_(scales[1])
    return nn.Sequential(first, nn.Identity(), second)


@pytest.mark.parametrize("total", [0, 1, 57, 240, 301, 480])
def test_global_allocation_respects_budget_exactly(total: int) -> None:
    model = _two_layer_model((0.3, 0.1))
    alloc = allocate_sparsity(model, total)
    assert set(alloc) == {"0", "2"} and sum(alloc.values()) == total
    assert all(0 <= k <= 240 for k in alloc.values())


def test_global_allocation_favours_larger_and_more_important_layers() -> None:
    by_magnitude = allocate_sparsity(_two_layer_model((0.3, 0.1)), 240)
    assert by_magnitude["0"] > by_magnitude["2"]
    equal = _two_layer_model((0.2, 0.2))
    by_importance = allocate_sparsity(equal, 240, importance={"0": 1.0, "2": 3.0})
    assert by_importance["2"] > by_importance["0"] and sum(by_importance.values()) == 240
    untrained = _two_layer_model((0.0, 0.0))  # ΔW = 0: split by size × importance
    assert allocate_sparsity(untrained, 100, importance={"0": 3.0}) == {"0": 75, "2": 25}


def test_apply_and_rebalance_set_layer_budgets() -> None:
    model = _two_layer_model((0.3, 0.1))
    alloc = rebalance_sparsity(model, 100)
    assert model[0].nonzeros == alloc["0"] and model[2].nonzeros == alloc["2"]
    assert model[0].delta_nonzeros() + model[2].delta_nonzeros() == 100
    apply_sparsity(model, {"0": 5})
    assert model[0].nonzeros == 5 and model[0].threshold is None


def test_bad_inputs_give_option_errors() -> None:
    with pytest.raises(OptionError, match=r"layer 'blk.fc'.*SNELL rank must be an integer >= 1, got 0"):
        SNELLLinear.from_base(_base(), rank=0, name="blk.fc")
    with pytest.raises(OptionError, match="not a multiple of heads=2"):
        SNELLLinear.from_base(_base(), rank=3)
    with pytest.raises(OptionError, match="unknown SNELL kernel 'poly'"):
        SNELLLinear.from_base(_base(), kernel="poly")
    with pytest.raises(OptionError, match="nonzeros, threshold"):
        SNELLLinear.from_base(_base(), nonzeros=3, threshold=0.1)
    with pytest.raises(OptionError, match=r"0\.\.240"):
        SNELLLinear.from_base(_base(), nonzeros=241)
    with pytest.raises(OptionError, match="density must be in"):
        SNELLLinear.from_base(_base(), density=0.0)
    model = _two_layer_model((0.3, 0.1))
    with pytest.raises(OptionError, match=r"total_nonzeros=-1 is outside 0\.\.480"):
        allocate_sparsity(model, -1)
    with pytest.raises(OptionError, match=r"total_nonzeros=481 is outside 0\.\.480"):
        allocate_sparsity(model, 481)
    with pytest.raises(OptionError, match="unknown layers: nope"):
        allocate_sparsity(model, 10, importance={"nope": 1.0})
    with pytest.raises(OptionError, match="finite number >= 0"):
        allocate_sparsity(model, 10, importance={"0": -1.0})
    with pytest.raises(OptionError, match="no SNELL layers"):
        allocate_sparsity(nn.Linear(3, 3), 1)
    with pytest.raises(OptionError, match="unknown SNELL layers"):
        apply_sparsity(model, {"x": 1})
