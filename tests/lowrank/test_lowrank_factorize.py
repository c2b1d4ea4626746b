import pytest
import torch
from torch import nn

from pela_export.errors import ArtifactError, OptionError
from pela_export.lowrank import (LowRankLinear, factorize_model, format_rank_table, load_compressed,
                                 save_compressed, select_linears)


class Block(nn.Module):
    def __init__(self, d=32):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(d, 3 * d)
        self.attn.proj = nn.Linear(d, d)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(d, 4 * d)
        self.mlp.fc2 = nn.Linear(4 * d, d)

    def forward(self, x):
        x = x + self.attn.proj(self.attn.qkv(self.norm(x))[..., : x.shape[-1]])
        return x + self.mlp.fc2(torch.relu(self.mlp.fc1(x)))


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Linear(16, 32)
        self.blocks = nn.Sequential(Block(), Block())
        self.head = nn.Linear(32, 10)
        self.small = nn.Module()
        self.small.mlp = nn.Module()
        self.small.mlp.fc = nn.Linear(2, 2)  # factorizing never saves params

    def forward(self, x):
        return self.head(self.blocks(self.patch_embed.proj(x)).mean(1))


def test_default_selection_keeps_embed_norm_head():
    names = [n for n, _ in select_linears(Tiny())]
    assert "blocks.0.attn.qkv" in names and "blocks.1.mlp.fc2" in names
    assert "head" not in names and "patch_embed.proj" not in names


def test_factorize_replaces_and_reports_every_layer():
    torch.manual_seed(0)
    model = Tiny()
    # small.mlp.fc sits outside the repeated blocks (the structural default leaves it out): name it to see the skip
    res = factorize_model(model, ratio=2, include=["blocks.*", "small.*"])
    assert isinstance(res.model.blocks[0].attn.qkv, LowRankLinear)
    assert isinstance(model.blocks[0].attn.qkv, nn.Linear), "original left untouched"
    skipped = [r for r in res.layers if r.status == "skipped"]
    assert [r.name for r in skipped] == ["small.mlp.fc"]
    t = res.totals()
    assert t["layers_factorized"] == 8
    assert t["reduction_in_factorized_layers"] >= 0.40
    table = format_rank_table(res)
    assert "blocks.0.attn.qkv" in table and "skipped" in table


def test_alignment_applied_and_recorded():
    res = factorize_model(Tiny(), ratio=2, align=8)
    fac = res.factorized
    assert all(r.rank % 8 == 0 for r in fac)
    assert any("aligned" in r.reason for r in fac)


def test_bad_options():
    with pytest.raises(OptionError, match="--ratio"):
        factorize_model(Tiny(), ratio=1)
    with pytest.raises(OptionError, match="--method"):
        factorize_model(Tiny(), method="nope")


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    res = factorize_model(Tiny(), ratio=3)
    save_compressed(res, tmp_path / "c.pt", tmp_path / "c.json", source={"spec": "test"})
    rebuilt, spec = load_compressed(Tiny(), tmp_path / "c.pt", tmp_path / "c.json")
    x = torch.randn(2, 5, 16)
    assert torch.equal(rebuilt(x), res.model.eval()(x))
    assert spec["source"] == {"spec": "test"}


def test_load_errors(tmp_path):
    res = factorize_model(Tiny(), ratio=3)
    save_compressed(res, tmp_path / "c.pt", tmp_path / "c.json")
    with pytest.raises(ArtifactError, match="not found"):
        load_compressed(Tiny(), tmp_path / "missing.pt", tmp_path / "c.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_compressed(Tiny(), tmp_path / "c.pt", tmp_path / "bad.json")
    (tmp_path / "c.pt").write_bytes(b"garbage")
    with pytest.raises(Exception, match="cannot be read"):
        load_compressed(Tiny(), tmp_path / "c.pt", tmp_path / "c.json")
