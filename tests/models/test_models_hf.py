import pytest
import torch

from pela_export.errors import ModelSourceError
from pela_export.lowrank import factorize_model
from pela_export.models.sources import resolve_model

transformers = pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")


def _tiny_vit(tmp_path):
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=128, num_labels=5)
    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(cfg).eval()
    model.save_pretrained(tmp_path / "vit")
    return model


def test_hf_vision_dir_loads_offline_and_factorizes(tmp_path):
    ref = _tiny_vit(tmp_path)
    m = resolve_model(f"hf:{tmp_path / 'vit'}")
    assert m.input_shape == (3, 32, 32) and m.input_shape_origin == "config" and m.num_classes == 5
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(m.model(x), ref(pixel_values=x).logits, atol=1e-5)
    res = factorize_model(m.model, ratio=2)
    names = {r.name for r in res.factorized}
    linears = {n for n, mod in m.model.named_modules() if type(mod) is torch.nn.Linear}
    # module names differ across transformers versions; every block linear qualifies, the classifier does not
    assert len(names) == 2 * 6 and not any("classifier" in n or "embeddings" in n for n in names)
    assert {n for n in linears if "classifier" in n}


def test_hf_text_dir_sequence_axis_from_config(tmp_path):
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=512, num_labels=3)
    transformers.BertForSequenceClassification(cfg).save_pretrained(tmp_path / "bert")
    m = resolve_model(f"hf:{tmp_path / 'bert'}")
    seq = m.spec.axes["sequence"]
    assert (seq.min, seq.opt, seq.max) == (1, 128, 512) and "max_position_embeddings 512" in m.input_shape_origin
    assert m.spec.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert m.model(*m.dummy_inputs(2)).shape == (2, 3)


def test_hf_dir_without_config(tmp_path):
    with pytest.raises(ModelSourceError, match="no config.json"):
        resolve_model(f"hf:{tmp_path}")
