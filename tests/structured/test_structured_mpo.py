"""MPOLinear: factorisation helper, TT-SVD exactness and truncation, forward without W,
config round trip, and every lowering against ONNX Runtime (no DFT)."""
import itertools
import json
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from pela_export.errors import OptionError, PelaExportError
from pela_export.export.onnx_export import export_onnx
from pela_export.lowrank.layer import LowRankLinear
from pela_export.structured import mpo as mpo_module
from pela_export.structured.base import LAYER_TYPES, LoweringUnavailable
from pela_export.structured.mpo import MPOChain, MPOLinear
from pela_export.structured.mpo_math import balanced_factors, full_bond_dims, prime_factors


def _linear(out_f=64, in_f=96, seed=0, bias=True):
    torch.manual_seed(seed)
    return nn.Linear(in_f, out_f, bias=bias)


def _rel(a, b):
    return float((a.detach().double() - b.detach().double()).norm() / b.detach().double().norm())


def _ort(module, x, path, exporter="dynamo"):
    export_onnx(module, x, path, exporter=exporter)
    proto = onnx.load(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    return proto, got


# -- factorisation helper ----------------------------------------------------------------------
def test_balanced_factors():
    assert balanced_factors(192, 3) == (4, 6, 8)
    assert balanced_factors(768, 3) == (8, 8, 12)
    assert balanced_factors(64, 3) == (4, 4, 4)
    for dim, n in ((3072, 4), (768, 5), (96, 5), (30, 3)):
        fs = balanced_factors(dim, n)
        assert len(fs) == n and math.prod(fs) == dim and all(f > 1 for f in fs) and list(fs) == sorted(fs)
    assert prime_factors(192) == [2, 2, 2, 2, 2, 2, 3]


def test_unfactorable_dimension_names_layer_and_fix():
    with pytest.raises(OptionError) as err:
        balanced_factors(197, 3, where="blocks.0.mlp.fc1", what="in_features")
    msg = str(err.value)
    assert "blocks.0.mlp.fc1" in msg and "in_features 197" in msg and "leave this layer out" in msg
    with pytest.raises(OptionError) as err:
        balanced_factors(12, 4, where="head", what="out_features")  # 12 = 2·2·3: at most 3 factors
    assert "--structure-opt cores=N with N <= 3" in str(err.value) and "head" in str(err.value)
    with pytest.raises(OptionError, match=r"fc: in_features 98 .*\n.*--structure-opt cores=N with N <= 3"):
        MPOLinear.from_linear(nn.Linear(98, 64), cores=4, name="fc")


# -- decomposition -----------------------------------------------------------------------------
@pytest.mark.parametrize("cores", [2, 3, 4, 5])
def test_exact_at_full_bond_dim(cores):
    lin = _linear()
    layer = MPOLinear.from_linear(lin, cores=cores)
    assert list(layer.bond_dims) == full_bond_dims(layer.out_factors, layer.in_factors)
    assert _rel(layer.effective_weight(), lin.weight) < 1e-5
    x = torch.randn(4, 96)
    assert _rel(layer(x), lin(x)) < 1e-5
    shapes = layer.core_shapes()
    assert shapes[0][0] == 1 and shapes[-1][-1] == 1 and len(shapes) == cores
    assert [tuple(layer.core(k).shape) for k in range(cores)] == shapes


def test_truncation_error_decreases_with_bond_dim():
    torch.manual_seed(1)  # a weight with a decaying spectrum, like trained layers
    u, _ = torch.linalg.qr(torch.randn(64, 64))
    v, _ = torch.linalg.qr(torch.randn(96, 64))
    lin = nn.Linear(96, 64)
    with torch.no_grad():
        lin.weight.copy_(u @ torch.diag(0.9 ** torch.arange(64.0)) @ v.T)
    errors = [_rel(MPOLinear.from_linear(lin, cores=3, bond_dim=d).effective_weight(), lin.weight)
              for d in (1, 2, 4, 8, 16, 32, 64)]
    assert all(b <= a + 1e-6 for a, b in itertools.pairwise(errors)), errors
    assert errors[0] > 0.1 and errors[-1] < 1e-5


def test_relative_tolerance_bounds_error_and_shrinks_bonds():
    lin = _linear(seed=2)
    exact = MPOLinear.from_linear(lin, cores=3)
    for tol in (0.05, 0.3):
        layer = MPOLinear.from_linear(lin, cores=3, tol=tol)
        assert _rel(layer.effective_weight(), lin.weight) <= tol + 1e-6
    assert sum(layer.bond_dims) < sum(exact.bond_dims)


def test_forward_is_x_times_effective_weight_without_forming_w(monkeypatch):
    lin = _linear(seed=3)
    layer = MPOLinear.from_linear(lin, cores=4, bond_dim=6)
    x = torch.randn(3, 5, 96)
    w = layer.effective_weight().detach()
    expected = x @ w.T + layer.bias
    monkeypatch.setattr(mpo_module, "merge_cores", lambda *a, **k: pytest.fail("forward formed W"))
    got = layer(x)
    assert got.shape == (3, 5, 64) and _rel(got, expected) < 1e-5
    x1 = torch.randn(96)  # a single vector works too
    assert layer(x1).shape == (64,) and _rel(layer(x1), x1 @ w.T + layer.bias) < 1e-5


def test_from_lowrank_and_no_bias():
    torch.manual_seed(4)
    low = LowRankLinear.from_factors(torch.randn(64, 8), torch.randn(8, 96), None)
    layer = MPOLinear.from_linear(low, cores=3)
    assert layer.bias is None and layer.effective_bias is None
    assert _rel(layer.effective_weight(), low.weight_product) < 1e-5
    x = torch.randn(2, 96)
    assert _rel(layer(x), low(x)) < 1e-5


def test_config_round_trip_and_registry():
    layer = MPOLinear.from_linear(_linear(seed=5), cores=3, bond_dim=5)
    assert LAYER_TYPES.get("mpo") is MPOLinear and layer.kind == "mpo"
    cfg = json.loads(json.dumps(layer.config()))
    fresh = MPOLinear.from_config(cfg)
    fresh.load_state_dict(layer.state_dict())
    x = torch.randn(2, 96)
    assert torch.equal(fresh(x), layer(x))
    with pytest.raises(OptionError, match="incomplete"):
        MPOLinear.from_config({"in_features": 96})


def test_param_counts_by_hand():
    # 64 = 4·4·4 (out), 96 = 4·4·6 (in); bond cap 3 -> cores (1,4,4,3) (3,4,4,3) (3,4,6,1): 48 + 144 + 72
    layer = MPOLinear.from_linear(_linear(seed=6), cores=3, bond_dim=3)
    assert layer.out_factors == (4, 4, 4) and layer.in_factors == (4, 4, 6)
    assert layer.param_counts().stored == 48 + 144 + 72 + 64


# -- lowerings ---------------------------------------------------------------------------------
@pytest.mark.parametrize("form,exporter", [("structured", "dynamo"), ("structured", "legacy"),
                                           ("lowrank", "dynamo"), ("lowrank", "legacy"), ("dense", "dynamo")])
def test_lowering_matches_module_in_onnxruntime(tmp_path, form, exporter):
    layer = MPOLinear.from_linear(_linear(seed=7), cores=3, bond_dim=6).eval()
    assert layer.available_lowerings() == {"structured": None, "lowrank": None, "dense": None}
    low = layer.lowered(form).eval()
    x = torch.randn(2, 5, 96)  # (batch, tokens, features), as in a transformer
    with torch.no_grad():
        ref = layer(x)
        assert _rel(low(x), ref) < 1e-5
    proto, got = _ort(low, x, tmp_path / f"{form}.onnx", exporter=exporter)
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & {"DFT", "STFT"}, ops
    assert np.abs(got - ref.numpy()).max() <= 1e-4 * (1 + np.abs(ref.numpy()).max())
    if form == "structured":
        assert isinstance(low, MPOChain) and "MatMul" in ops and "Gemm" not in ops


def test_structured_form_reuses_layer_parameters():
    layer = MPOLinear.from_linear(_linear(seed=8), cores=3, bond_dim=4)
    chain = layer.lowered("structured")
    assert all(a is b for a, b in zip(chain.cores, layer.cores)) and chain.bias is layer.bias


@pytest.mark.parametrize("cores", [3, 4, 5])
def test_lowrank_merge_is_exact(cores):
    layer = MPOLinear.from_linear(_linear(seed=9), cores=cores, bond_dim=5)
    low = layer.lowered("lowrank")
    assert isinstance(low, MPOChain) and len(low.cores) == 2
    k = layer.merge_bond()
    d = layer.bond_dims[k - 1]
    i_l, j_l = math.prod(layer.out_factors[:k]), math.prod(layer.in_factors[:k])
    assert low.cores[0].numel() == i_l * j_l * d
    assert low.cores[1].numel() == (64 // i_l) * (96 // j_l) * d
    w2 = MPOChain(list(low.cores), low.out_factors, low.in_factors, low.bonds, None)(torch.eye(96)).T
    assert _rel(w2, layer.effective_weight()) < 1e-5
    x = torch.randn(6, 96)
    assert _rel(low(x), layer(x)) < 1e-5


def test_lowrank_user_rank_is_truncated_svd():
    layer = MPOLinear.from_linear(_linear(seed=10), cores=3, bond_dim=6)
    w = layer.effective_weight().detach()
    s = torch.linalg.svdvals(w.double())
    low = layer.lowered("lowrank", rank=10)
    assert isinstance(low, LowRankLinear) and low.rank == 10
    err = float((low.weight_product.detach().double() - w.double()).norm())
    assert err == pytest.approx(float(s[10:].square().sum().sqrt()), rel=1e-4)
    full = layer.lowered("lowrank", rank=64)
    x = torch.randn(2, 96)
    assert _rel(full(x), layer(x)) < 1e-5


def test_bad_inputs_raise_option_errors():
    lin = _linear()
    for kwargs, text in (({"cores": 1}, "core count"), ({"cores": 9}, "core count"), ({"bond_dim": 0}, "bond"),
                         ({"tol": 1.5}, "tolerance"), ({"in_factors": (4, 4, 5)}, "in_features factors"),
                         ({"out_factors": (8, 8)}, "out_features factors"),
                         ({"in_factors": 96}, "in_features factors")):
        with pytest.raises(OptionError, match=text) as err:
            MPOLinear.from_linear(lin, name="blocks.1.fc", **kwargs)
        assert "blocks.1.fc" in str(err.value) and "fix:" in str(err.value)
    with pytest.raises(OptionError, match="Conv2d"):
        MPOLinear.from_linear(nn.Conv2d(3, 3, 1))
    with pytest.raises(OptionError, match="bond dimensions"):
        MPOLinear(96, 64, (4, 4, 6), (4, 4, 4), (3, 500))
    layer = MPOLinear.from_linear(lin, cores=3, bond_dim=3)
    with pytest.raises(LoweringUnavailable, match="fft"):
        layer.lowered("fft")
    with pytest.raises(OptionError, match="1..64"):
        layer.lowered("lowrank", rank=0)
    assert issubclass(OptionError, PelaExportError)
