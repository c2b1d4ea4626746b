"""Structural default selection: the Linears and Conv2ds inside the repeated blocks, found from the module tree."""
import sys
from pathlib import Path

import pytest
import timm
from torch import nn

from pela_export.lowrank import REPEATED_BLOCKS, classify_layers, factorize_model, select_linears
from pela_export.lowrank.select import explain_empty

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from tiny_timm import deit_tiny_64, swin_tiny_64  # noqa: E402


def _split(model: nn.Module) -> tuple[list[str], dict[str, str]]:
    choices = classify_layers(model)
    return [c.name for c in choices if c.chosen], {c.name: c.reason for c in choices if not c.chosen}


def test_vit_blocks_as_before() -> None:
    chosen, left = _split(deit_tiny_64())
    assert chosen == [f"blocks.{i}.{p}" for i in range(4) for p in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")]
    assert left == {"patch_embed.proj": "embedding or stem (before the repeated blocks)",
                    "head": "classifier head (the last Linear, after the repeated blocks)"}
    reasons = {c.name: c.reason for c in classify_layers(deit_tiny_64()) if c.chosen}
    assert reasons["blocks.3.mlp.fc2"] == "in repeated block blocks.3"


def test_swin_blocks_not_patch_merging() -> None:
    chosen, left = _split(swin_tiny_64())  # depths (1, 1, 2, 1): single-block stages still count
    assert len(chosen) == 5 * 4 and "layers.0.blocks.0.attn.qkv" in chosen and "layers.2.blocks.1.mlp.fc2" in chosen
    assert left["layers.1.downsample.reduction"].startswith("outside the repeated blocks of layers.1")
    assert left["head.fc"].startswith("classifier head")


@pytest.mark.parametrize("conv_mlp", [False, True])
def test_convnext_mlp_linear_or_1x1_conv(conv_mlp: bool) -> None:
    model = timm.create_model("convnext_atto", pretrained=False, conv_mlp=conv_mlp)
    chosen, left = _split(model)
    assert len(chosen) == 2 * 12 and chosen[:2] == ["stages.0.blocks.0.mlp.fc1", "stages.0.blocks.0.mlp.fc2"]
    assert type(model.get_submodule(chosen[0])) is (nn.Conv2d if conv_mlp else nn.Linear)
    dw = [n for n in left if n.endswith("conv_dw")]  # depthwise 7x7: grouped, left dense with the reason
    assert len(dw) == 12 and "grouped convolution (groups=40)" in left["stages.0.blocks.0.conv_dw"]
    assert left["stem.0"] == "embedding or stem (before the repeated blocks)"
    assert left["stages.1.downsample.1"].startswith("outside the repeated blocks of stages.1")
    assert left["head.fc"].startswith("classifier head")


def test_resnet_block_convs_not_stem_or_head() -> None:
    model = timm.create_model("resnet18", pretrained=False)
    chosen, left = _split(model)
    assert len(chosen) == 16 + 3 and "layer1.0.conv1" in chosen and "layer2.0.downsample.0" in chosen
    assert left == {"conv1": "embedding or stem (before the repeated blocks)",
                    "fc": "classifier head (the last Linear, after the repeated blocks)"}
    assert [n for n, _ in select_linears(model, ["fc"])] == ["fc"]  # --include replaces the default
    assert "conv1: matches no --include glob" in explain_empty(model, classify_layers(model, ["nothing*"]))


def test_bert_encoder_layers() -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                  vocab_size=100, max_position_embeddings=64)
    chosen, left = _split(transformers.BertModel(cfg))
    parts = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
             "intermediate.dense", "output.dense")
    assert chosen == [f"encoder.layer.{i}.{p}" for i in range(2) for p in parts]
    assert list(left) == ["pooler.dense"] and "after the repeated blocks" in left["pooler.dense"]


def test_globs_override_and_record() -> None:
    model = deit_tiny_64()
    res = factorize_model(model)
    assert res.include == [REPEATED_BLOCKS] and len(res.factorized) == 16
    only = factorize_model(model, include=["blocks.0.*"])
    assert [r.name for r in only.layers] == [f"blocks.0.{p}" for p in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")]
    fewer = classify_layers(model, exclude=["*.mlp.*"])
    assert sum(c.chosen for c in fewer) == 8
    assert any("matches --exclude glob" in c.reason for c in fewer)
    both = select_linears(model, [REPEATED_BLOCKS, "head"], [])
    assert len(both) == 17


def test_compress_of_empty_selection_names_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pela_export.cli.main import main

    code = main(["compress", "timm:convnext_atto", "--input-shape", "3,64,64", "--out", str(tmp_path / "o"),
                 "--include", "nothing.*"])
    err = capsys.readouterr().err
    assert code == 2 and "matches no --include glob" in err and "--include" in err
    assert not (tmp_path / "o" / "compressed.pt").exists()


def test_mlp_types_named_norm_are_not_norm_layers() -> None:
    chosen, left = _split(timm.create_model("convnextv2_atto", pretrained=False))  # GlobalResponseNormMlp
    assert len(chosen) == 2 * 12 and "stages.0.blocks.0.mlp.fc1" in chosen
    assert not any("norm layer" in why for why in left.values())


def test_odd_block_after_a_run_in_the_same_container() -> None:
    model = timm.create_model("efficientformer_l1", pretrained=False)  # ConvMlpWithNorm; last stage ends Flat, MetaBlock1d
    chosen, left = _split(model)
    assert "stages.3.blocks.4.token_mixer.qkv" in chosen and "stages.0.blocks.0.mlp.fc1" in chosen
    assert left["stages.3.downsample.conv"].startswith("outside the repeated blocks of stages.3")


def test_indexed_blocks_win_over_named_runs() -> None:
    # CoaT: patch_embed1..4 / cpe1..4 are runs of named attributes; the body is serial_blocksN.M (in containers)
    chosen, left = _split(timm.create_model("coat_lite_tiny", pretrained=False))
    assert "serial_blocks1.0.factoratt_crpe.qkv" in chosen and "serial_blocks4.1.mlp.fc2" in chosen
    assert left["patch_embed1.proj"].startswith("embedding (inside PatchEmbed)")


def test_linear_norm_is_a_linear() -> None:
    chosen, _ = _split(timm.create_model("levit_128s", pretrained=False))  # LeViT's LinearNorm = Linear + BN
    assert "stages.0.blocks.0.attn.qkv.linear" in chosen and len(chosen) == 37
