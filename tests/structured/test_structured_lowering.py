"""plan_lowering / apply_lowering / assert_no_dft (fake layer types; tiny shapes, few runs)."""
import pytest
import torch
from framework_fakes import tie_cores, tiny_model
from onnx import TensorProto, helper
from torch import nn

from pela_export.errors import ArtifactError, ExportError, OptionError
from pela_export.lowrank import LowRankLinear
from pela_export.structured.apply import structure_model
from pela_export.structured.base import LoweringUnavailable, StructuredLinear
from pela_export.structured.lowering import (LoweringPlan, apply_lowering, assert_no_dft, find_dft, infer_tokens,
                                             plan_lowering)

X = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(2))
FAST = {"runs": 3, "warmup": 1}


@pytest.fixture(scope="module")
def chain():
    model, _ = structure_model(tiny_model(), "test-chain", hyper={"rank": 4})
    tie_cores(model, ["blocks.0.attn.qkv", "blocks.1.attn.qkv"])
    return model


def test_fastest_measured_form_is_chosen_and_outputs_match(chain):
    plan = plan_lowering(chain, **FAST)
    assert plan.settings["tokens"] == 5 and plan.settings["tokens_origin"].startswith("model config")
    for lp in plan.layers:
        assert [c.form for c in lp.candidates] == ["structured", "lowrank", "dense"] and lp.unavailable == {}
        assert lp.chosen == min(lp.candidates, key=lambda c: c.p50_ms).form and lp.why == "fastest measured"
        assert all(c.max_abs_err < 1e-5 and c.p50_ms > 0 for c in lp.candidates)
    fc1 = plan.layers[1]
    assert {c.form: c.deployed_params for c in fc1.candidates} == \
        {"structured": 16 * 4 + 16 + 4 * 8 + 16, "lowrank": 16 * 4 + 4 * 8 + 16, "dense": 16 * 8 + 16}
    assert plan.layers[4].candidates[0].measured_on == "blocks.0.mlp.fc1"  # identical layers timed once
    lowered = apply_lowering(chain, plan)
    assert not any(isinstance(m, StructuredLinear) for m in lowered.modules())
    torch.testing.assert_close(lowered(X), chain(X), atol=1e-5, rtol=1e-5)
    assert isinstance(chain.blocks[0].attn.qkv, StructuredLinear)  # not in place by default


@pytest.mark.parametrize("form, cls", [("dense", nn.Linear), ("lowrank", LowRankLinear), ("structured", nn.Sequential)])
def test_every_form_gives_the_same_outputs(chain, form, cls):
    plan = plan_lowering(chain, form=form, **FAST)
    assert {lp.why for lp in plan.layers} == {f"user override (all layers -> {form})"}
    lowered = apply_lowering(chain, plan)
    assert isinstance(lowered.blocks[0].mlp.fc1, cls)
    torch.testing.assert_close(lowered(X), chain(X), atol=1e-5, rtol=1e-5)


def test_per_layer_override_wins_over_global_and_truncated_rank(chain):
    plan = plan_lowering(chain, form="dense", overrides={"*fc1": "lowrank:2", "*fc*": "structured"}, **FAST)
    by = {lp.name: lp for lp in plan.layers}
    assert by["blocks.0.mlp.fc1"].chosen == "lowrank" and by["blocks.0.mlp.fc1"].rank == 2
    assert by["blocks.0.mlp.fc1"].why == "user override (*fc1 -> lowrank:2)"
    assert by["blocks.0.mlp.fc2"].chosen == "structured" and by["blocks.0.attn.qkv"].chosen == "dense"
    trunc = by["blocks.0.mlp.fc1"].candidates[-1]
    assert (trunc.form, trunc.rank, trunc.deployed_params) == ("lowrank", 2, 16 * 2 + 2 * 8 + 16)
    assert apply_lowering(chain, plan).blocks[0].mlp.fc1.rank == 2
    assert "lowrank:2" in plan.format() and "user override" in plan.format()


def test_unavailable_override_is_an_error_naming_layer_and_reason():
    model, _ = structure_model(tiny_model(), "test-adapter", include=["*qkv"])
    with pytest.raises(LoweringUnavailable) as info:
        plan_lowering(model, overrides={"blocks.1.*": "lowrank"}, **FAST)
    assert info.value.where == "blocks.1.attn.qkv" and "rank-one delta is not exactly" in info.value.problem
    with pytest.raises(OptionError, match="unknown lowering 'fast'"):
        plan_lowering(model, form="fast", **FAST)
    with pytest.raises(OptionError, match="unknown lowering 'lowrank:x'"):
        plan_lowering(model, overrides={"*": "lowrank:x"}, **FAST)


def test_only_form_available_without_dft_and_dft_when_allowed():
    model, _ = structure_model(tiny_model(), "test-fft", include=["blocks.0.attn.qkv"])
    plan = plan_lowering(model, **FAST)
    lp = plan.layers[0]
    assert (lp.chosen, lp.why, [c.form for c in lp.candidates]) == ("dense", "only form available", ["dense"])
    assert "allow_dft" in lp.unavailable["structured"]
    allowed = plan_lowering(model, allow_dft=True, form="structured", **FAST)
    cand = allowed.layers[0].candidate("structured")
    assert cand is not None and cand.exporter.startswith("dynamo (legacy failed")  # recorded, not silent
    torch.testing.assert_close(apply_lowering(model, allowed)(X), model(X), atol=1e-5, rtol=1e-5)


def test_a_structured_form_with_a_hidden_dft_is_refused():
    model, _ = structure_model(tiny_model(), "test-fft", include=["blocks.0.attn.qkv"], hyper={"cheat": True})
    with pytest.raises(ExportError, match="DFT node") as info:
        plan_lowering(model, **FAST)
    assert info.value.where == "blocks.0.attn.qkv [structured]"


def _graph_with(op):
    node = helper.make_node(op, ["x"], ["y"], name="the_fft")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 2])])
    return helper.make_model(g)


def test_assert_no_dft_names_the_nodes():
    model = _graph_with("DFT")
    assert find_dft(model) == ["the_fft (DFT)"]
    with pytest.raises(ExportError, match=r"the_fft \(DFT\)") as info:
        assert_no_dft(model, where="m.onnx")
    assert info.value.where == "m.onnx" and "allow_dft" in info.value.fix
    assert_no_dft(model, allow_dft=True)
    assert_no_dft(_graph_with("Relu"))


def test_tokens_from_timm_config_or_user():
    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(img_size=16, patch_size=4, in_chans=1, num_classes=3, embed_dim=16, depth=1, num_heads=2)
    assert infer_tokens(vit)[0] == 17
    bare = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(OptionError, match="tokens"):
        infer_tokens(bare)
    with pytest.raises(OptionError, match="no structured layer"):
        plan_lowering(bare, tokens=3)
    with pytest.raises(OptionError, match="tokens must be"):
        plan_lowering(bare, tokens=0)


def test_plan_round_trips_through_json_and_checks_the_model(chain):
    plan = plan_lowering(chain, form="dense", **FAST)
    again = LoweringPlan.from_dict(plan.to_dict())
    assert again == plan
    with pytest.raises(ArtifactError, match="the plan lowers a test-chain layer"):
        apply_lowering(tiny_model(), plan)


@pytest.mark.parametrize("kind", ["mpo", "circulant", "toeplitz", "kronecker", "ldr", "snell"])
def test_real_types_every_form_matches_and_no_dft_by_default(tmp_path, kind):
    import onnx
    from framework_fakes import perturb_trainable, real_kind

    from pela_export.structured.accounting import export_deployed

    model, _ = structure_model(tiny_model(), kind, **real_kind(kind))
    perturb_trainable(model)
    layer = model.blocks[0].mlp.fc1
    forms = [f for f, why in layer.available_lowerings().items() if why is None]
    assert "dense" in forms
    for form in forms:  # the planner checks each form against the PyTorch layer and refuses DFT nodes
        plan = plan_lowering(model, form=form, **FAST)
        torch.testing.assert_close(apply_lowering(model, plan)(X), model(X), atol=1e-5, rtol=1e-4)
    plan = plan_lowering(model, **FAST)
    _, result, _ = export_deployed(model, plan, X, tmp_path / f"{kind}.onnx", exporter="legacy")
    assert find_dft(onnx.load(str(result.path))) == []
