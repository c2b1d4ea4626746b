import sys
import textwrap

import pytest
import torch
from torch import nn

from pela_export.errors import CheckpointError, InputShapeError, ModelSourceError
from pela_export.lowrank import LowRankLinear, factorize_model
from pela_export.models.sources import parse_input_shape, resolve_model, scheme_of

TINY_VIT = "timm:vit_tiny_patch16_224"


@pytest.mark.parametrize("spec,scheme", [
    (None, "default"), ("default:fashion-mnist", "default"), ("timm:resnet18", "timm"), ("hf:/x", "hf"),
    ("a/b/model.pt2", "pt2"), ("pkg.mod:make", "factory"),
])
def test_scheme_of(spec, scheme):
    assert scheme_of(spec) == scheme


def test_unknown_kind_and_unknown_timm_name():
    with pytest.raises(ModelSourceError, match="cannot tell"):
        scheme_of("no_such_thing")
    with pytest.raises(ModelSourceError, match="unknown timm model 'vit_nonexistent_x'"):
        resolve_model("timm:vit_nonexistent_x")


def test_timm_shape_from_config_and_user_override():
    m = resolve_model(TINY_VIT, check=False)
    assert m.input_shape == (3, 224, 224) and m.input_shape_origin == "config"
    assert m.preprocessing.mean == pytest.approx((0.5, 0.5, 0.5))
    with pytest.raises(InputShapeError, match="fails on input shape"):
        resolve_model(TINY_VIT, input_shape=(3, 100, 100))


def test_parse_input_shape():
    assert parse_input_shape("3,224,224") == (3, 224, 224)
    assert parse_input_shape("1x8x8") == (1, 8, 8)
    for bad in ("", "3,a,4", "3,-1,4"):
        with pytest.raises(InputShapeError, match="--input-shape"):
            parse_input_shape(bad)


def test_timm_checkpoint_round_trip_and_mismatch(tmp_path):
    import timm

    src = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    torch.save({"state_dict": src.state_dict()}, tmp_path / "ok.pth")
    m = resolve_model(TINY_VIT, checkpoint=str(tmp_path / "ok.pth"), check=False)
    assert torch.equal(m.model.head.weight, src.head.weight)
    assert any("state_dict" in n for n in m.extra["checkpoint_notes"])

    sd = src.state_dict()
    sd.pop("head.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["head.weight"] = torch.zeros(5, 192)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as ei:
        resolve_model(TINY_VIT, checkpoint=str(tmp_path / "bad.pth"), check=False)
    msg = str(ei.value)
    assert "head.bias" in msg and "extra.weight" in msg and "head.weight: checkpoint (5, 192)" in msg


def test_missing_and_corrupt_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        resolve_model(TINY_VIT, checkpoint=str(tmp_path / "nope.pth"))
    (tmp_path / "corrupt.pth").write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="cannot be read"):
        resolve_model(TINY_VIT, checkpoint=str(tmp_path / "corrupt.pth"))


def test_factory_with_checkpoint(tmp_path, monkeypatch):
    (tmp_path / "userpkg_models.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        class Net(nn.Module):
            default_input_shape = (16,)
            def __init__(self):
                super().__init__()
                self.mlp = nn.Sequential()
                self.mlp.fc1 = nn.Linear(16, 64)
                self.mlp.fc2 = nn.Linear(64, 4)
            def forward(self, x):
                return self.mlp.fc2(self.mlp.fc1(x).relu())
        def make():
            return Net()
        def not_a_model():
            return 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("userpkg_models", None)
    m = resolve_model("userpkg_models:make")
    assert m.input_shape == (16,) and m.input_shape_origin == "config"
    torch.save(m.model.state_dict(), tmp_path / "w.pt")
    m2 = resolve_model("userpkg_models:make", checkpoint=str(tmp_path / "w.pt"))
    assert torch.equal(m2.model.mlp.fc1.weight, m.model.mlp.fc1.weight)
    with pytest.raises(ModelSourceError, match="not an nn.Module"):
        resolve_model("userpkg_models:not_a_model")
    with pytest.raises(ModelSourceError, match="no callable 'missing'"):
        resolve_model("userpkg_models:missing")
    with pytest.raises(ModelSourceError, match="cannot import"):
        resolve_model("no_such_pkg_xyz.mod:make")


class _Pt2Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(nn.Module())
        self.blocks[0].mlp = nn.Module()
        self.blocks[0].mlp.fc1 = nn.Linear(32, 96)
        self.head = nn.Linear(96, 10)

    def forward(self, x):
        return self.head(torch.relu(self.blocks[0].mlp.fc1(x)))


def test_pt2_program_is_factorizable(tmp_path):
    torch.manual_seed(0)
    net = _Pt2Net().eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(net, (torch.randn(2, 32),), dynamic_shapes=({0: batch},))
    torch.export.save(ep, str(tmp_path / "net.pt2"))
    m = resolve_model(str(tmp_path / "net.pt2"))
    assert m.input_shape == (32,) and m.input_shape_origin == "example_inputs"
    x = torch.randn(5, 32)
    assert torch.allclose(m.model(x), net(x), atol=1e-6)
    res = factorize_model(m.model, ratio=2)
    assert isinstance(res.model.get_submodule("blocks.0.mlp.fc1"), LowRankLinear)
    assert res.model(x).shape == (5, 10)


def test_pt2_errors(tmp_path):
    with pytest.raises(ModelSourceError, match="not found"):
        resolve_model(str(tmp_path / "missing.pt2"))
    (tmp_path / "junk.pt2").write_bytes(b"junk")
    with pytest.raises(ModelSourceError, match="not a loadable"):
        resolve_model(str(tmp_path / "junk.pt2"))


def test_pt2_static_batch_is_rejected_with_fix(tmp_path):
    ep = torch.export.export(_Pt2Net().eval(), (torch.randn(2, 32),))
    torch.export.save(ep, str(tmp_path / "static.pt2"))
    with pytest.raises(ModelSourceError, match="static batch size of 2"):
        resolve_model(str(tmp_path / "static.pt2"))
