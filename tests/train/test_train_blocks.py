"""Finding transformer blocks generically and capturing their outputs."""
import pytest
import torch
from torch import nn
from train_helpers import make_vit

from pela_export.errors import OptionError
from pela_export.train import capture_outputs, find_blocks, first_tensor


class HFLayer(nn.Module):
    """Returns a tuple like Hugging Face layers do."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.dense = nn.Linear(d, d)

    def forward(self, x):
        return (self.dense(x), None)


class HFLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embeddings = nn.Linear(8, 8)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList([HFLayer(), HFLayer(), HFLayer()])

    def forward(self, x):
        x = self.embeddings(x)
        for layer in self.encoder.layer:
            x = layer(x)[0]
        return x


class DecoderLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Module()
        self.model.layers = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])


def test_timm_vit_blocks():
    assert find_blocks(make_vit()) == ["blocks.0", "blocks.1"]


def test_timm_swin_innermost_blocks():
    from tiny_timm import swin_tiny_64

    names = find_blocks(swin_tiny_64())
    assert names == ["layers.0.blocks.0", "layers.1.blocks.0", "layers.2.blocks.0", "layers.2.blocks.1",
                     "layers.3.blocks.0"]


def test_hf_style_names():
    assert find_blocks(HFLike()) == ["encoder.layer.0", "encoder.layer.1", "encoder.layer.2"]
    assert find_blocks(DecoderLike()) == ["model.layers.0", "model.layers.1"]


def test_explicit_globs_override():
    assert find_blocks(make_vit(), "blocks.1") == ["blocks.1"]
    assert find_blocks(HFLike(), ["encoder.layer.0", "encoder.layer.2"]) == ["encoder.layer.0", "encoder.layer.2"]
    assert find_blocks(make_vit(), "blocks.*.mlp, norm") == ["blocks.0.mlp", "blocks.1.mlp", "norm"]


def test_no_blocks_names_the_option():
    with pytest.raises(OptionError) as err:
        find_blocks(nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
    assert "--distill-blocks" in str(err.value) and "fix:" in str(err.value)


def test_glob_matching_nothing_is_an_error():
    with pytest.raises(OptionError, match="matches no module"):
        find_blocks(make_vit(), "encoder.layer.*")


def test_capture_takes_first_tensor_of_tuples_and_removes_hooks():
    model = HFLike()
    names = find_blocks(model)
    with capture_outputs(model, names) as feats:
        model(torch.randn(2, 8))
        assert set(feats) == set(names) and all(isinstance(v, torch.Tensor) for v in feats.values())
    assert all(not model.get_submodule(n)._forward_hooks for n in names)


def test_first_tensor_variants():
    t = torch.ones(1)
    assert first_tensor(t) is t
    assert first_tensor((None, [t])) is t
    assert first_tensor({"a": None, "b": t}) is t
    assert first_tensor(None) is None


def test_resnet_blocks_come_from_the_module_tree():
    timm = pytest.importorskip("timm")
    from pela_export.lowrank import factorize_model
    from pela_export.train.blocks import find_blocks

    model = timm.create_model("resnet18", pretrained=False)
    want = [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    assert find_blocks(model) == want  # no container named blocks/layer/layers: the repeated BasicBlocks
    assert find_blocks(factorize_model(model, ratio=2).model) == want  # the same on the factorized student
