"""structure_model: selection, bases, record, errors (with fake layer types)."""
import pytest
import torch
from framework_fakes import ChainLinear, RankOneAdapter, tiny_model
from torch import nn

from pela_export.errors import OptionError
from pela_export.lowrank import LowRankLinear, factorize_model
from pela_export.structured.apply import StructureRecord, is_adapter_kind, select_layers, structure_model

X = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(0))
NAMES = [f"blocks.{b}.{n}" for b in (0, 1) for n in ("attn.qkv", "mlp.fc1", "mlp.fc2")]


def test_full_rank_chain_is_exact_and_original_untouched():
    model = tiny_model()
    ref = model(X)
    out, rec = structure_model(model, "test-chain", hyper={"rank": 8})
    torch.testing.assert_close(out(X), ref, atol=1e-5, rtol=1e-5)
    assert all(type(model.get_submodule(n)) is nn.Linear for n in NAMES)  # copied, not modified
    assert [e.name for e in rec.layers] == NAMES
    e = rec.layers[1]
    assert (e.kind, e.config, e.base) == ("test-chain", {"in_features": 8, "out_features": 16, "rank": 8, "bias": True},
                                         "none")
    assert e.stored == e.trainable == 16 * 8 + 8 * 8 + 8 * 8 + 16 and e.params_before == 16 * 8 + 16
    assert rec.totals == {"trainable": sum(p.numel() for p in out.parameters()),
                          "stored": sum(p.numel() for p in out.parameters())}
    assert "blocks.0.mlp.fc1 | test-chain | 16x8" in rec.format()


def test_include_exclude_globs_select_layers():
    _, rec = structure_model(tiny_model(), "test-chain", hyper={"rank": 2}, include=["*mlp.*"], exclude=["*fc2"])
    assert [e.name for e in rec.layers] == ["blocks.0.mlp.fc1", "blocks.1.mlp.fc1"]
    assert rec.include == ["*mlp.*"] and rec.exclude == ["*fc2"]


def test_adapter_on_dense_base_starts_equal_and_freezes_base():
    model = tiny_model()
    out, rec = structure_model(model, "test-adapter")
    torch.testing.assert_close(out(X), model(X))
    layer = out.get_submodule("blocks.0.mlp.fc1")
    assert isinstance(layer, RankOneAdapter) and isinstance(layer.base, nn.Linear)
    assert not any(p.requires_grad for p in layer.base.parameters())
    e = rec.layers[1]
    assert e.base == "dense" and e.trainable == 16 + 8 and e.stored == 16 * 8 + 16 + 16 + 8
    assert rec.base == "dense" and is_adapter_kind("test-adapter") and not is_adapter_kind("test-chain")


def test_adapter_on_lowrank_base_equals_plain_svd_at_the_same_ratio():
    model = tiny_model()
    out, rec = structure_model(model, "test-adapter", base="lowrank", ratio=2)
    torch.testing.assert_close(out(X), factorize_model(model, ratio=2).model(X))
    assert all(isinstance(out.get_submodule(n).base, LowRankLinear) for n in NAMES)
    assert [e.base for e in rec.layers] == ["lowrank (rank 2)"] * 6 and rec.ratio == 2
    assert [e.name for e in rec.layers] == NAMES  # the factors of the base are not layers of their own


def test_lowrank_base_that_would_not_save_keeps_dense_and_says_so():
    _, rec = structure_model(tiny_model(), "test-adapter", base="lowrank", ratio=8, include=["*qkv"])
    assert {e.base for e in rec.layers} == {"dense"}
    assert all(e.note.startswith("dense base: rank 0 would store") for e in rec.layers)


def test_existing_lowrank_layers_are_selected():
    model = factorize_model(tiny_model(), ratio=2).model
    out, rec = structure_model(model, "test-adapter")
    assert rec.layers[0].base == "lowrank (rank 2)"
    torch.testing.assert_close(out(X), model(X))
    out, rec = structure_model(model, "test-chain", hyper={"rank": 2})
    assert rec.layers[0].note == "built from U·V of the existing low-rank layer"
    torch.testing.assert_close(out(X), model(X), atol=1e-5, rtol=1e-4)  # U·V is rank 2: exact
    assert [n for n, _ in select_layers(model)] == NAMES


def test_inplace_and_record_from_model_after_sharing():
    model = tiny_model()
    out, _ = structure_model(model, "test-chain", hyper={"rank": 4}, inplace=True)
    assert out is model and isinstance(model.blocks[0].attn.qkv, ChainLinear)
    before = StructureRecord.from_model(model).totals["stored"]
    model.blocks[1].attn.qkv.core = model.blocks[0].attn.qkv.core
    assert StructureRecord.from_model(model).totals["stored"] == before - 16


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "nope"}, "unknown layer type 'nope'"),
    ({"kind": "test-chain", "hyper": {"rank": 2}, "base": "lowrank", "ratio": 2}, "takes no low-rank base"),
    ({"kind": "test-adapter", "base": "lowrank"}, "needs the ratio"),
    ({"kind": "test-adapter", "ratio": 2}, "only used with base='lowrank'"),
    ({"kind": "test-adapter", "base": "sparse"}, "unknown base"),
    ({"kind": "test-chain", "hyper": {"rank": 2}, "include": ["*nothing*"]},
     "no layer of TinyNet was chosen to structure: .*matches no --include glob"),
])
def test_option_errors(kwargs, match):
    kind = kwargs.pop("kind")
    with pytest.raises(OptionError, match=match):
        structure_model(tiny_model(), kind, **kwargs)


def test_constructor_failure_names_the_layer():
    with pytest.raises(OptionError) as info:
        structure_model(tiny_model(), "test-chain", hyper={"rank": 12})
    assert info.value.where == "blocks.0.attn.qkv" and "rank 12 exceeds" in str(info.value)


@pytest.mark.parametrize("kind", ["mpo", "circulant", "toeplitz", "kronecker", "ldr", "snell"])
def test_real_types_start_exact_on_their_base(kind):
    from framework_fakes import real_kind

    kwargs = real_kind(kind)
    model = tiny_model()
    out, rec = structure_model(model, kind, **kwargs)
    ref = model if kind == "mpo" else factorize_model(model, ratio=2).model  # full-bond MPO / ΔW = 0 on U·V
    torch.testing.assert_close(out(X), ref(X), atol=1e-5, rtol=1e-4)
    assert [e.name for e in rec.layers] == NAMES and {e.kind for e in rec.layers} == {kind}
    assert all(e.trainable < e.stored for e in rec.layers) == (kind != "mpo")  # adapters: frozen base
