"""Structured training: what trains (scope), what stays frozen, shared tensors stay shared."""
import pytest
import torch
from framework_fakes import tie_cores, tiny_model

from pela_export.errors import OptionError
from pela_export.lowrank import factorize_model
from pela_export.structured.apply import structure_model
from pela_export.structured.train import default_config, set_trainable, train_structured
from pela_export.train import PelaLoss, TrainConfig, from_arrays, train_pela


def _data(n=32):
    g = torch.Generator().manual_seed(0)
    return from_arrays(torch.randn(n, 5, 8, generator=g), torch.randint(0, 4, (n,), generator=g), name="random")


CFG = default_config(epochs=1, batch_size=8, lr=1e-2, warmup_steps=0)


def test_adapter_trains_only_its_delta():
    teacher = tiny_model()
    student, _ = structure_model(teacher, "test-adapter", base="lowrank", ratio=2)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    result = train_structured(student, teacher, _data(), CFG)
    after = student.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(k.endswith((".a", ".b")) for k in changed), changed  # delta only: no base, no head
    assert {n for n, p in student.named_parameters() if p.requires_grad} == {
        n for n in after if n.endswith((".a", ".b"))}  # flags say what was trained
    assert len(result.history) == 1 and result.history[0]["wp"] >= 0


def test_shared_core_trains_as_one_tensor():
    teacher = tiny_model()
    student, _ = structure_model(teacher, "test-chain", hyper={"rank": 4})
    tie_cores(student, ["blocks.0.attn.qkv", "blocks.1.attn.qkv"])
    core = student.blocks[0].attn.qkv.core
    before = core.detach().clone()
    train_structured(student, teacher, _data(), CFG)
    assert student.blocks[1].attn.qkv.core is core and not torch.equal(core.detach(), before)


def test_predicate_and_scopes():
    student, _ = structure_model(tiny_model(), "test-chain", hyper={"rank": 4})
    names = set_trainable(student, predicate=lambda n, p: n.endswith(".core"))
    assert names == [f"blocks.{b}.{m}.core" for b in (0, 1) for m in ("attn.qkv", "mlp.fc1", "mlp.fc2")]
    assert set_trainable(student, "trainable") == names  # keeps the flags as they are
    assert len(set_trainable(student, "all")) == len(list(student.parameters()))
    assert not any(n.startswith("head") for n in set_trainable(student, "layers"))
    with pytest.raises(OptionError, match="unknown structured training scope"):
        set_trainable(student, "factors")
    with pytest.raises(OptionError, match="no structured or low-rank layer"):
        set_trainable(tiny_model(), "layers")
    with pytest.raises(OptionError, match="selects no trainable parameter"):
        set_trainable(student, predicate=lambda n, p: False)


def test_pela_scope_in_config_is_refused_not_changed():
    teacher = tiny_model()
    student, _ = structure_model(teacher, "test-adapter", base="lowrank", ratio=2)
    with pytest.raises(OptionError, match="scope is 'factors'"):
        train_structured(student, teacher, _data(), TrainConfig(progress=False))


def test_plain_lowrank_student_trains_with_scope_layers_like_pela_factors():
    teacher = tiny_model()
    student = factorize_model(teacher, ratio=2).model
    head = student.head.weight.clone()
    train_structured(student, teacher, _data(), CFG)
    assert torch.equal(student.head.weight, head)


def test_loop_scope_trainable_needs_something_to_train():
    teacher = tiny_model()
    student = factorize_model(teacher, ratio=2).model
    student.requires_grad_(False)
    with pytest.raises(OptionError, match="scope 'trainable' would train nothing"):
        train_pela(student, teacher, _data(), TrainConfig(epochs=1, scope="trainable", progress=False))


def test_weight_perturbation_uses_the_effective_weight_of_the_outer_layer():
    teacher = tiny_model()
    student, _ = structure_model(teacher, "test-adapter", base="lowrank", ratio=2)
    loss = PelaLoss(student, teacher)
    assert [n for n, _, _ in loss.pairs] == [f"blocks.{b}.{m}" for b in (0, 1)
                                             for m in ("attn.qkv", "mlp.fc1", "mlp.fc2")]  # not their bases
    exact, _ = structure_model(teacher, "test-adapter")
    with PelaLoss(exact, teacher) as ell, torch.no_grad():
        assert float(ell(torch.randn(2, 5, 8), None)[1].wp) == 0.0  # ΔW = 0 on a dense base: W unchanged


def test_mpo_with_shared_central_cores_loads_trains_a_step_and_exports(tmp_path):
    import onnx
    from framework_fakes import real_kind

    from pela_export.structured.accounting import export_deployed
    from pela_export.structured.lowering import find_dft, plan_lowering
    from pela_export.structured.saved import load_structured, save_structured

    kwargs = real_kind("mpo")
    sharing = pytest.importorskip("pela_export.structured.sharing", reason="pela_export/structured/sharing.py missing")
    teacher = tiny_model()
    student, _ = structure_model(teacher, "mpo", **kwargs)
    sharing.share_central_cores(student, "auto")
    save_structured(student, tmp_path / "m.pt", tmp_path / "m.json")
    loaded, _ = load_structured(tiny_model(), tmp_path / "m.pt", tmp_path / "m.json")
    sharing.set_mpo_trainable(loaded, "aux")
    core = loaded.blocks[0].mlp.fc1.cores[1]
    aux = loaded.blocks[1].mlp.fc1.cores[0].detach().clone()
    central = core.detach().clone()
    train_structured(loaded, teacher, _data(8), CFG)  # one step (8 samples, batch 8)
    assert loaded.blocks[1].mlp.fc1.cores[1] is core and torch.equal(core.detach(), central)  # frozen, shared
    assert not torch.equal(loaded.blocks[1].mlp.fc1.cores[0].detach(), aux)  # auxiliary cores trained
    sharing.set_mpo_trainable(loaded, "all")
    train_structured(loaded, teacher, _data(8), CFG)
    assert loaded.blocks[1].mlp.fc1.cores[1] is core and not torch.equal(core.detach(), central)
    plan = plan_lowering(loaded, form="structured", runs=2, warmup=0)
    x = torch.randn(2, 5, 8)
    lowered, result, deployed = export_deployed(loaded, plan, x, tmp_path / "m.onnx", exporter="legacy")
    torch.testing.assert_close(lowered(x), loaded(x), atol=1e-5, rtol=1e-4)
    assert find_dft(onnx.load(str(result.path))) == []
    assert deployed == sum(p.numel() for p in loaded.parameters() if p.numel() > 1)  # shared cores once
