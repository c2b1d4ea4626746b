"""Structured unrestricted-rank adapters: circulant, Toeplitz, Kronecker, LDR."""
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
from pela_export.structured import adapters_ops as ops
from pela_export.structured.adapters import (
    CirculantLinear,
    KroneckerLinear,
    LDRLinear,
    ToeplitzLinear,
)
from pela_export.structured.base import LAYER_TYPES, LoweringUnavailable

KINDS = {"circulant": (CirculantLinear, {}), "toeplitz": (ToeplitzLinear, {}),
         "kronecker": (KroneckerLinear, {}), "ldr": (LDRLinear, {"rank": 3})}
SHAPES = [(16, 16), (24, 36), (36, 24)]  # (in, out)
DFT_OPS = {"DFT", "STFT"}


def _base(in_f: int, out_f: int, lowrank: bool = False) -> nn.Module:
    torch.manual_seed(1)
    if lowrank:
        return LowRankLinear.from_factors(torch.randn(out_f, 3) * 0.3, torch.randn(3, in_f) * 0.3, torch.randn(out_f))
    return nn.Linear(in_f, out_f)


def _layer(kind: str, in_f: int = 24, out_f: int = 36, lowrank: bool = False, train: bool = True):
    cls, hyper = KINDS[kind]
    layer = cls.from_base(_base(in_f, out_f, lowrank), **hyper)
    if train:  # a "trained" delta: every trainable tensor random, outputs O(1)
        torch.manual_seed(2)
        with torch.no_grad():
            for p in layer.parameters():
                if p.requires_grad:
                    p.normal_(std=0.1)
    return layer


def _onnx_run(module: nn.Module, x: torch.Tensor, tmp_path, exporter: str = "legacy") -> tuple[np.ndarray, set[str]]:
    path = tmp_path / f"m-{exporter}.onnx"
    export_onnx(module, x[:2], path, exporter=exporter)
    ops_used = {n.op_type for n in onnx.load(str(path)).graph.node}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0], ops_used


def test_registered() -> None:
    for kind, (cls, _) in KINDS.items():
        assert LAYER_TYPES.get(kind) is cls and cls.kind == kind


@pytest.mark.parametrize("lowrank", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_equals_base_at_init_and_base_frozen(kind: str, lowrank: bool) -> None:
    base = _base(24, 36, lowrank)
    cls, hyper = KINDS[kind]
    layer = cls.from_base(base, **hyper)
    x = torch.randn(5, 24)
    assert torch.equal(layer(x), base(x))
    assert torch.count_nonzero(layer.delta_weight()) == 0
    assert all(not p.requires_grad for p in base.parameters())
    assert all(p.requires_grad for n, p in layer.named_parameters() if not n.startswith("base."))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", KINDS)
def test_forward_equals_effective_weight(kind: str, shape: tuple[int, int]) -> None:
    layer = _layer(kind, *shape)
    x = torch.randn(2, 3, shape[0])
    ref = x @ layer.effective_weight().t() + layer.bias
    torch.testing.assert_close(layer(x), ref, atol=1e-5, rtol=1e-5)


def test_circulant_fft_equals_materialised_matrix() -> None:
    c = torch.randn(2, 3, 5, dtype=torch.float64)
    m = ops.block_circulant_matrix(c)
    for p in range(2):
        for q in range(3):
            for i in range(5):
                for j in range(5):
                    assert m[p * 5 + i, q * 5 + j] == c[p, q, (i - j) % 5]
    x = torch.randn(4, 15, dtype=torch.float64)
    torch.testing.assert_close(ops.block_circulant_fft(c, x), x @ m.t())


def test_circulant_block_one_represents_any_matrix() -> None:
    target = torch.randn(6, 4)
    layer = CirculantLinear.from_base(nn.Linear(4, 6), block=1)
    with torch.no_grad():
        layer.c.copy_(target.unsqueeze(-1))
    torch.testing.assert_close(layer.delta_weight(), target)


def test_toeplitz_fft_equals_materialised_matrix() -> None:
    out_f, in_f = 5, 7
    t = torch.randn(out_f + in_f - 1, dtype=torch.float64)
    m = ops.toeplitz_matrix(t, out_f, in_f)
    assert all(m[i, j] == m[i + 1, j + 1] for i in range(out_f - 1) for j in range(in_f - 1))
    assert m[0, in_f - 1] == t[0] and m[out_f - 1, 0] == t[-1]
    x = torch.randn(3, in_f, dtype=torch.float64)
    torch.testing.assert_close(ops.toeplitz_fft(t, x, out_f), x @ m.t())


def test_kronecker_full_size_factors_are_exact() -> None:
    a0, b0 = torch.randn(4, 6), torch.randn(9, 4)  # out = 36, in = 24
    layer = KroneckerLinear.from_base(nn.Linear(24, 36), factors=(4, 6))
    with torch.no_grad():
        layer.a.copy_(a0)
        layer.b.copy_(b0)
    torch.testing.assert_close(layer.delta_weight(), torch.kron(a0, b0))
    any_w = torch.randn(36, 24)  # factors (out, in): B is 1×1, so A⊗B is any matrix
    full = KroneckerLinear.from_base(nn.Linear(24, 36), factors=(36, 24))
    with torch.no_grad():
        full.a.copy_(any_w)
        full.b.fill_(1.0)
    torch.testing.assert_close(full.delta_weight(), any_w)
    x = torch.randn(3, 24)
    torch.testing.assert_close(full.delta_forward(x), x @ any_w.t(), atol=1e-5, rtol=1e-5)


def test_kronecker_balanced_default_factors() -> None:
    layer = KroneckerLinear.from_base(nn.Linear(784, 256))
    assert layer.factors == (16, 28) and tuple(layer.b.shape) == (16, 28)


def test_ldr_fft_equals_materialised_and_skew_definition() -> None:
    h = torch.randn(6, dtype=torch.float64)
    s = ops.skew_circulant_matrix(h)
    for i in range(6):
        for j in range(6):
            assert s[i, j] == (h[i - j] if i >= j else -h[i - j + 6])
    g, h = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    m = ops.ldr_matrix(g, h, 6, 6)
    torch.testing.assert_close(m, sum(ops.circulant_matrix(g[k]) @ ops.skew_circulant_matrix(h[k]) for k in range(3)))
    x = torch.randn(4, 6, dtype=torch.float64)
    torch.testing.assert_close(ops.ldr_fft(g, h, x), x @ m.t())


def test_ldr_full_displacement_rank_represents_any_matrix() -> None:
    """r = n: with h_k = e_k, ΔW is linear in g and that map is invertible, so any n×n target is reached."""
    n = 6
    layer = LDRLinear.from_base(nn.Linear(n, n).double(), rank=n)
    h = torch.eye(n, dtype=torch.float64)
    basis = torch.eye(n * n, dtype=torch.float64).reshape(n * n, n, n)
    jac = torch.stack([ops.ldr_matrix(gi, h, n, n).flatten() for gi in basis], dim=1)  # (n², n²)
    assert torch.linalg.matrix_rank(jac) == n * n
    target = torch.randn(n, n, dtype=torch.float64)
    g = torch.linalg.solve(jac, target.flatten()).reshape(n, n)
    with torch.no_grad():
        layer.g.copy_(g)
        layer.h.copy_(h)
    torch.testing.assert_close(layer.delta_weight(), target)


@pytest.mark.parametrize("kind", KINDS)
def test_one_training_step_reduces_loss_and_only_touches_delta(kind: str) -> None:
    layer = _layer(kind, train=False)
    torch.manual_seed(3)
    x = torch.randn(64, 24)
    target = layer.base(x) + x @ (0.05 * torch.randn(36, 24)).t()
    before = {n: p.detach().clone() for n, p in layer.named_parameters()}
    opt = torch.optim.SGD([p for p in layer.parameters() if p.requires_grad], lr=1e-2)
    loss0 = torch.nn.functional.mse_loss(layer(x), target)
    loss0.backward()
    opt.step()
    with torch.no_grad():
        loss1 = torch.nn.functional.mse_loss(layer(x), target)
    assert loss1.item() < loss0.item()
    changed = {n for n, p in layer.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(not n.startswith("base.") for n in changed)


@pytest.mark.parametrize("lowrank", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_lowerings_match_module_in_onnx_runtime_without_dft(kind: str, lowrank: bool, tmp_path) -> None:
    layer = _layer(kind, lowrank=lowrank).eval()
    x = torch.randn(5, 24)
    want = layer(x).detach().numpy()
    exact = layer.available_lowerings()["lowrank"] is None  # a trained full-rank ΔW is not: truncate at 24
    for form in ("structured", "lowrank", "dense"):
        module = layer.lowered(form, rank=24 if form == "lowrank" and not exact else None)
        got, used = _onnx_run(module, x, tmp_path)
        assert np.abs(got - want).max() < 1e-4, form
        assert not used & DFT_OPS, (form, used)
    if lowrank:  # structured keeps the base as two GEMMs
        assert isinstance(layer.lowered("structured").base, LowRankLinear)


@pytest.mark.parametrize("kind", KINDS)
def test_structured_form_with_dynamo_exporter(kind: str, tmp_path) -> None:
    layer = _layer(kind).eval()
    x = torch.randn(5, 24)
    got, used = _onnx_run(layer.lowered("structured"), x, tmp_path, exporter="dynamo")
    assert np.abs(got - layer(x).detach().numpy()).max() < 1e-4
    assert not used & DFT_OPS
    assert ("MatMul" in used) if kind == "kronecker" else ("Conv" in used)


@pytest.mark.parametrize("kind", ["circulant", "ldr"])
def test_allow_dft_exports_a_dft(kind: str, tmp_path) -> None:
    layer = _layer(kind).eval()
    module = layer.lowered("structured", allow_dft=True)
    x = torch.randn(5, 24)
    torch.testing.assert_close(module(x), layer(x), atol=1e-5, rtol=1e-5)
    try:
        got, used = _onnx_run(module, x, tmp_path, exporter="dynamo")
    except Exception as exc:  # noqa: BLE001 - the exporter's FFT support varies by torch version
        pytest.skip(f"this torch's ONNX exporter cannot export torch.fft: {str(exc).splitlines()[0]}")
    assert "DFT" in used
    assert np.abs(got - layer(x).detach().numpy()).max() < 1e-4


def test_lowrank_lowering_exact_only_when_rank_is_low() -> None:
    dense_base = _layer("kronecker")
    reason = dense_base.available_lowerings()["lowrank"]
    assert reason and "numerical rank" in reason
    with pytest.raises(LoweringUnavailable, match="no exact low-rank form"):
        dense_base.lowered("lowrank")
    layer = _layer("kronecker", lowrank=True)
    with torch.no_grad():  # rank(A⊗B) = rank(A)·rank(B) = 1: effective rank <= 3 + 1
        layer.a.copy_(torch.outer(torch.randn(6), torch.randn(4)))
        layer.b.copy_(torch.outer(torch.randn(6), torch.randn(6)))
    assert layer.available_lowerings() == {"structured": None, "lowrank": None, "dense": None}
    low = layer.lowered("lowrank")
    assert low.rank <= 3 + torch.linalg.matrix_rank(layer.a) * torch.linalg.matrix_rank(layer.b)
    x = torch.randn(4, 24)
    torch.testing.assert_close(low(x), layer(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_config_round_trip(kind: str) -> None:
    layer = _layer(kind, lowrank=kind == "ldr")
    cfg = json.loads(json.dumps(layer.config()))
    clone = type(layer).from_config(cfg)
    clone.load_state_dict(layer.state_dict())
    x = torch.randn(3, 24)
    torch.testing.assert_close(clone(x), layer(x))
    assert all(not p.requires_grad for p in clone.base.parameters())


def test_param_counts_by_hand() -> None:
    dense = 24 * 36 + 36
    expect = {"circulant": 36 * 24 // 12, "toeplitz": 36 + 24 - 1, "kronecker": 6 * 4 + 6 * 6, "ldr": 2 * 3 * 36}
    for kind, trainable in expect.items():
        layer = _layer(kind, train=False)
        counts = layer.param_counts()
        assert (counts.trainable, counts.stored) == (trainable, dense + trainable), kind
        assert layer.delta_params() == trainable
    low = _layer("toeplitz", lowrank=True, train=False).param_counts()
    assert low.stored == 3 * (24 + 36) + 36 + 59 and low.trainable == 59


def test_bad_inputs_give_option_errors() -> None:
    with pytest.raises(OptionError, match=r"layer 'enc.fc'.*in_features=13 is prime") as err:
        KroneckerLinear.from_base(nn.Linear(13, 12), name="enc.fc")
    assert "factors=" in str(err.value)
    with pytest.raises(OptionError, match="does not divide in_features=24"):
        KroneckerLinear.from_base(nn.Linear(24, 36), factors=(4, 5))
    with pytest.raises(OptionError, match=r"layer 'fc'.*LDR displacement rank must be an integer >= 1, got 0"):
        LDRLinear.from_base(nn.Linear(8, 8), rank=0, name="fc")
    with pytest.raises(OptionError, match="exceeds n"):
        LDRLinear.from_base(nn.Linear(8, 8), rank=9)
    with pytest.raises(OptionError, match="block 5 does not divide"):
        CirculantLinear.from_base(nn.Linear(24, 36), block=5)
    with pytest.raises(OptionError, match="nn.Linear or LowRankLinear"):
        ToeplitzLinear.from_base(nn.Conv1d(3, 3, 1))
    layer = _layer("toeplitz")
    with pytest.raises(LoweringUnavailable, match="1..24"):
        layer.lowered("lowrank", rank=0)
    with pytest.raises(LoweringUnavailable, match="unknown lowering"):
        layer.lowered("sparse")
