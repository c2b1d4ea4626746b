"""Central-tensor sharing across blocks: one Parameter per group, counted once (hand count),
save → load into a freshly tied model, an "aux" training step, export, and bad inputs."""
import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pela_export.errors import OptionError
from pela_export.export.onnx_export import export_onnx
from pela_export.lowrank.select import set_submodule
from pela_export.structured.base import model_param_counts
from pela_export.structured.mpo import MPOLinear
from pela_export.structured.sharing import (auto_groups, mpo_layers, name_pattern, set_mpo_trainable,
                                            share_central_cores, shared_parameter_names, tie_central_cores)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.gelu(self.fc1(x)))


def _dense_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(Block(), Block())


def _to_mpo(model, **kw):
    for name, mod in list(model.named_modules()):
        if isinstance(mod, nn.Linear):
            set_submodule(model, name, MPOLinear.from_linear(mod, name=name, **kw))
    return model


def _mpo_model(seed=0, bond_dim=3):
    return _to_mpo(_dense_model(seed), cores=3, bond_dim=bond_dim)


# Hand count, bond cap 3. fc1: out 32 = 2·4·4, in 16 = 2·2·4 → cores (1,2,2,3) (3,4,2,3) (3,4,4,1)
# = 12 + 72 + 48, bias 32. fc2: out 16 = 2·2·4, in 32 = 2·4·4 → (1,2,2,3) (3,2,4,3) (3,4,4,1)
# = 12 + 72 + 48, bias 16. Two blocks: 2·(132+32 + 132+16) = 624; sharing the two central cores
# (72 each) saves 72 per group: 624 − 2·72 = 480. Auxiliary cores only: 4 layers · 60 = 240.
DENSE, MPO, SHARED, AUX = 2 * (16 * 32 + 32 + 32 * 16 + 16), 624, 480, 240


def test_hand_count_with_sharing_counts_shared_once():
    model = _mpo_model()
    assert model_param_counts(_dense_model()).stored == DENSE
    assert model_param_counts(model) .stored == MPO
    report = share_central_cores(model)
    assert report.params_before == MPO and report.params_after == SHARED
    assert model_param_counts(model).stored == SHARED == model_param_counts(model).trainable
    # the state_dict still names the shared core under each layer (same storage, saved once)
    assert sum(v.numel() for v in model.state_dict().values()) == MPO
    assert set_mpo_trainable(model, "aux").trainable == AUX
    assert set_mpo_trainable(model, "aux", train_bias=True).trainable == AUX + 2 * (32 + 16)
    assert set_mpo_trainable(model, "all").trainable == SHARED


def test_auto_groups_share_one_parameter_object():
    model = _mpo_model()
    assert name_pattern("blocks.3.mlp.fc1") == "blocks.*.mlp.fc1"
    assert auto_groups(model) == [["0.fc1", "1.fc1"], ["0.fc2", "1.fc2"]]
    report = share_central_cores(model, "auto")
    assert report.spec() == [["0.fc1", "1.fc1"], ["0.fc2", "1.fc2"]]
    assert [g.pattern for g in report.groups] == ["*.fc1", "*.fc2"]
    assert [g.parameter for g in report.groups] == ["0.fc1.cores.1", "0.fc2.cores.1"]
    for suffix in ("fc1", "fc2"):
        a, b = model[0].get_submodule(suffix), model[1].get_submodule(suffix)
        assert a.cores[1] is b.cores[1] and a.cores[0] is not b.cores[0] and a.cores[2] is not b.cores[2]
    assert shared_parameter_names(model) == {"0.fc1.cores.1": ["1.fc1.cores.1"], "0.fc2.cores.1": ["1.fc2.cores.1"]}
    assert report.to_dict()["groups"][0]["core_shape"] == [4 * 3, 3 * 2]


@pytest.mark.parametrize("init", ["first", "mean"])
def test_refit_lowers_each_layers_error(init):
    model = _to_mpo(_dense_model(1), cores=3)  # exact cores: any error comes from sharing
    report = share_central_cores(model, init=init, refit_sweeps=3)
    for group in report.groups:
        for name in group.layers:
            assert group.errors_after_refit[name] <= group.errors_before_refit[name] + 1e-6
        if init == "first":
            assert group.errors_before_refit[group.layers[0]] < 1e-6
    no_refit = share_central_cores(_to_mpo(_dense_model(1), cores=3), init=init, refit_sweeps=0)
    g = no_refit.groups[0]
    assert g.errors_after_refit == g.errors_before_refit


def test_explicit_groups_and_targets():
    dense = _dense_model(2)
    targets = {f"{i}.fc1": dense[i].fc1.weight.detach().clone() for i in (0, 1)}
    model = _to_mpo(dense, cores=3, bond_dim=3)
    report = share_central_cores(model, [["0.fc1", "1.fc1"]], targets=targets)
    assert report.spec() == [["0.fc1", "1.fc1"]] and model[0].fc2.cores[1] is not model[1].fc2.cores[1]
    assert all(0 < e < 1 for e in report.groups[0].errors_after_refit.values())


def test_save_load_into_freshly_tied_model_restores_outputs():
    model = _mpo_model(3)
    report = share_central_cores(model)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    configs = {name: layer.config() for name, layer in mpo_layers(model).items()}

    fresh = _dense_model(99)
    for name, cfg in configs.items():
        set_submodule(fresh, name, MPOLinear.from_config(cfg))
    tied = tie_central_cores(fresh, report.spec())
    assert tied.params_before == MPO and tied.params_after == SHARED and tied.groups[0].init == "tied"
    buf.seek(0)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert fresh[0].fc1.cores[1] is fresh[1].fc1.cores[1]
    assert model_param_counts(fresh).stored == SHARED
    x = torch.randn(4, 16)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_aux_step_changes_only_auxiliary_cores():
    model = _mpo_model(4)
    share_central_cores(model)
    set_mpo_trainable(model, "aux")
    before = {n: p.detach().clone() for n, p in model.named_parameters(remove_duplicate=False)}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.randn(8, 16)).square().mean().backward()
    opt.step()
    changed = {n for n, p in model.named_parameters(remove_duplicate=False) if not torch.equal(p, before[n])}
    aux = {f"{b}.{fc}.cores.{k}" for b in (0, 1) for fc in ("fc1", "fc2") for k in (0, 2)}
    assert changed == aux
    # "all": the shared core trains too, and stays one tensor
    set_mpo_trainable(model, "all")
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.randn(8, 16)).square().mean().backward()
    opt.step()
    assert not torch.equal(model[0].fc1.cores[1], before["0.fc1.cores.1"])
    assert model[0].fc1.cores[1] is model[1].fc1.cores[1]


@pytest.mark.parametrize("lower", [False, True])
def test_shared_model_exports_with_one_initializer_per_shared_core(tmp_path, lower):
    model = _mpo_model(5)
    share_central_cores(model)
    if lower:  # the structured lowering keeps the sharing (it reuses the layer's parameters)
        for name, layer in mpo_layers(model).items():
            set_submodule(model, name, layer.lowered("structured"))
        assert model_param_counts(model).stored == SHARED
    model.eval()
    x = torch.randn(3, 16)
    path = tmp_path / "shared.onnx"
    export_onnx(model, x, path)
    proto = onnx.load(str(path))
    # float tensors (not the GELU scalars): the shared cores appear once
    floats = [i for i in proto.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and i.dims]
    assert sum(int(np.prod(i.dims)) for i in floats) == SHARED
    assert not {n.op_type for n in proto.graph.node} & {"DFT", "STFT"}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4, rtol=1e-4)


def test_timm_blocks_share_by_suffix():
    tiny_timm = pytest.importorskip("tiny_timm")
    model = tiny_timm.deit_tiny_64().eval()
    for name, mod in list(model.named_modules()):
        if isinstance(mod, nn.Linear) and name.startswith("blocks."):
            set_submodule(model, name, MPOLinear.from_linear(mod, name=name, cores=3, bond_dim=8))
    before = model_param_counts(model).stored
    report = share_central_cores(model, refit_sweeps=1)
    assert sorted(g.pattern for g in report.groups) == ["blocks.*.attn.proj", "blocks.*.attn.qkv",
                                                        "blocks.*.mlp.fc1", "blocks.*.mlp.fc2"]
    assert all(len(g.layers) == 4 for g in report.groups)
    saved = sum(3 * int(np.prod(g.core_shape)) for g in report.groups)
    assert model_param_counts(model).stored == before - saved == report.params_after
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 64, 64))).all()


def test_bad_inputs_raise_option_errors():
    model = _mpo_model()
    model.append(nn.Linear(16, 16))
    cases = [
        ([["0.fc1"]], "at least two"),
        ([["0.fc1", "9.fc1"]], "not a module"),
        ([["0.fc1", "2"]], "not an MPO layer"),
        ([["0.fc1", "1.fc1"], ["1.fc1", "0.fc2"]], "in sharing groups 0 and 1"),
        ([["0.fc1", "0.fc2"]], "cores differ"),
        ("everything", "not understood"),
        (None, "must be"),
    ]
    for groups, text in cases:
        with pytest.raises(OptionError, match=text) as err:
            share_central_cores(model, groups)
        assert "fix:" in str(err.value)
    with pytest.raises(OptionError, match="initialisation"):
        share_central_cores(model, init="median")
    with pytest.raises(OptionError, match="refit_sweeps"):
        share_central_cores(model, refit_sweeps=-1)
    with pytest.raises(OptionError, match="scope"):
        set_mpo_trainable(model, "central")
    with pytest.raises(OptionError, match="target weight"):
        share_central_cores(model, [["0.fc1", "1.fc1"]], targets={"0.fc1": torch.zeros(3, 3)})
    # layers built with a tolerance get different bonds: sharing says which and how to fix it
    tol_model = _to_mpo(_dense_model(6), cores=3, tol=0.4)
    tol_model[1].fc1 = MPOLinear.from_linear(nn.Linear(16, 32), cores=3, bond_dim=1)
    with pytest.raises(OptionError, match="bond_dim="):
        share_central_cores(tol_model, [["0.fc1", "1.fc1"]])
