"""save_structured / load_structured: round trips, re-tied sharing, frozen flags, clear errors."""
import json

import pytest
import torch
from framework_fakes import tie_cores, tiny_model

from pela_export.errors import ArtifactError, CheckpointError, OptionError
from pela_export.lowrank import factorize_model, save_compressed
from pela_export.structured.apply import structure_model
from pela_export.structured.base import model_param_counts
from pela_export.structured.saved import (load_structured, read_structured_spec, save_structured, sharing_groups)

X = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1))
QKV = ["blocks.0.attn.qkv", "blocks.1.attn.qkv"]


def _perturb(model):
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))


def _saved_chain(tmp_path):
    model, _ = structure_model(tiny_model(), "test-chain", hyper={"rank": 4})
    tie_cores(model, QKV)
    _perturb(model)
    spec = save_structured(model, tmp_path / "s.pt", tmp_path / "s.json", source={"model": "x"},
                           extra={"note": 1})
    return model, spec


def test_round_trip_retie_shared_core(tmp_path):
    model, spec = _saved_chain(tmp_path)
    assert spec["sharing"] == [["blocks.0.attn.qkv.core", "blocks.1.attn.qkv.core"]]
    assert spec["layers"][0] == {"name": "blocks.0.attn.qkv", "kind": "test-chain",
                                 "config": {"in_features": 8, "out_features": 8, "rank": 4, "bias": True}}
    assert spec["note"] == 1 and spec["source"] == {"model": "x"}
    loaded, read = load_structured(tiny_model(), tmp_path / "s.pt", tmp_path / "s.json")
    assert loaded.blocks[0].attn.qkv.core is loaded.blocks[1].attn.qkv.core
    torch.testing.assert_close(loaded(X), model.eval()(X))
    assert model_param_counts(loaded) == model_param_counts(model)
    assert sharing_groups(loaded) == spec["sharing"] and not loaded.training and read["kind"] == "structured"


def test_frozen_flags_and_lowrank_bases_survive(tmp_path):
    model, _ = structure_model(tiny_model(), "test-adapter", base="lowrank", ratio=2)
    _perturb(model)
    model.head.requires_grad_(False)
    spec = save_structured(model, tmp_path / "a.pt", tmp_path / "a.json")
    assert [x["kind"] for x in spec["layers"]] == ["test-adapter"] * 6  # bases are inside the adapters
    assert "head.weight" in spec["frozen"] and "blocks.0.attn.qkv.base.first.weight" in spec["frozen"]
    loaded, _ = load_structured(tiny_model(), tmp_path / "a.pt", tmp_path / "a.json")
    torch.testing.assert_close(loaded(X), model.eval()(X))
    assert {n: p.requires_grad for n, p in loaded.named_parameters()} == \
        {n: p.requires_grad for n, p in model.named_parameters()}


def test_plain_lowrank_model_uses_the_same_format(tmp_path):
    model = factorize_model(tiny_model(), ratio=2).model
    spec = save_structured(model, tmp_path / "l.pt", tmp_path / "l.json")
    assert spec["layers"][0]["kind"] == "lowrank" and spec["layers"][0]["config"]["rank"] == 2
    loaded, _ = load_structured(tiny_model(), tmp_path / "l.pt", tmp_path / "l.json")
    torch.testing.assert_close(loaded(X), model(X))


def test_nothing_to_save_is_an_option_error(tmp_path):
    with pytest.raises(OptionError, match="no structured or low-rank layer"):
        save_structured(tiny_model(), tmp_path / "x.pt", tmp_path / "x.json")
    assert not (tmp_path / "x.pt").exists()


def _edit(path, fn):
    spec = json.loads(path.read_text())
    fn(spec)
    path.write_text(json.dumps(spec))


@pytest.mark.parametrize("edit, match", [
    (lambda s: s["layers"][0].update(kind="no-such-kind"), "unknown layer type 'no-such-kind'"),
    (lambda s: s["layers"][0].update(name="blocks.9.attn.qkv"), "does not exist"),
    (lambda s: s["layers"][0]["config"].update(in_features=16), "the spec expects a test-chain layer 16->8"),
    (lambda s: s["layers"][0]["config"].update(bogus=1), "cannot be rebuilt from its config"),
    (lambda s: s.update(spec_version=99), "spec_version 99"),
    (lambda s: s.update(kind="lowrank"), "not a structured spec"),
    (lambda s: s.update(sharing=[["blocks.0.attn.qkv.core", "blocks.0.nope.core"]]), "does not exist in the rebuilt"),
    (lambda s: s.update(sharing=[["blocks.0.attn.qkv.core", "blocks.0.mlp.fc1.u"]]), "has shape"),
    (lambda s: s.update(layers=[{"name": "x"}]), "malformed"),
])
def test_spec_errors_name_file_and_layer(tmp_path, edit, match):
    _saved_chain(tmp_path)
    _edit(tmp_path / "s.json", edit)
    with pytest.raises(ArtifactError, match=match) as info:
        load_structured(tiny_model(), tmp_path / "s.pt", tmp_path / "s.json")
    assert info.value.where == str(tmp_path / "s.json")


def test_checkpoint_errors(tmp_path):
    _saved_chain(tmp_path)
    _edit(tmp_path / "s.json", lambda s: s["layers"][1]["config"].update(rank=2))
    with pytest.raises(CheckpointError, match="does not match the spec"):
        load_structured(tiny_model(), tmp_path / "s.pt", tmp_path / "s.json")
    _saved_chain(tmp_path)
    (tmp_path / "s.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read") as info:
        load_structured(tiny_model(), tmp_path / "s.pt", tmp_path / "s.json")
    assert info.value.where == str(tmp_path / "s.pt")
    with pytest.raises(ArtifactError, match="checkpoint not found"):
        load_structured(tiny_model(), tmp_path / "none.pt", tmp_path / "s.json")


def test_spec_file_errors(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        read_structured_spec(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_structured_spec(tmp_path / "bad.json")
    res = factorize_model(tiny_model(), ratio=2)
    save_compressed(res, tmp_path / "c.pt", tmp_path / "c.json")
    with pytest.raises(ArtifactError, match="not a structured spec"):
        read_structured_spec(tmp_path / "c.json")


@pytest.mark.parametrize("kind", ["mpo", "circulant", "toeplitz", "kronecker", "ldr", "snell"])
def test_real_types_round_trip(tmp_path, kind):
    from framework_fakes import perturb_trainable, real_kind

    model, _ = structure_model(tiny_model(), kind, **real_kind(kind))
    perturb_trainable(model)
    save_structured(model, tmp_path / "m.pt", tmp_path / "m.json")
    loaded, _ = load_structured(tiny_model(), tmp_path / "m.pt", tmp_path / "m.json")
    torch.testing.assert_close(loaded(X), model.eval()(X))
    assert model_param_counts(loaded) == model_param_counts(model)


def test_mpo_with_shared_central_cores_round_trips_as_one_tensor(tmp_path):
    from framework_fakes import perturb_trainable, real_kind

    kwargs = real_kind("mpo")
    sharing = pytest.importorskip("pela_export.structured.sharing", reason="pela_export/structured/sharing.py missing")
    model, _ = structure_model(tiny_model(), "mpo", **kwargs)
    sharing.share_central_cores(model, "auto")
    perturb_trainable(model)
    spec = save_structured(model, tmp_path / "m.pt", tmp_path / "m.json")
    assert ["blocks.0.attn.qkv.cores.1", "blocks.1.attn.qkv.cores.1"] in spec["sharing"]
    loaded, _ = load_structured(tiny_model(), tmp_path / "m.pt", tmp_path / "m.json")
    assert loaded.blocks[0].mlp.fc1.cores[1] is loaded.blocks[1].mlp.fc1.cores[1]
    assert loaded.blocks[0].mlp.fc1.cores[0] is not loaded.blocks[1].mlp.fc1.cores[0]
    torch.testing.assert_close(loaded(X), model.eval()(X))
    assert model_param_counts(loaded) == model_param_counts(model)
