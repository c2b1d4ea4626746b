import json

import pytest
import torch

from pela_export.errors import ModelSourceError, OptionError
from pela_export.models.hf_text import pool
from pela_export.models.sources import resolve_model

transformers = pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")
import tiny_hf_text as tiny  # noqa: E402  (tests/fixtures)


def test_bert_classifier_takes_three_inputs_and_gives_logits(tmp_path):
    m = resolve_model(f"hf:{tiny.bert_classifier(tmp_path / 'bert')}")
    assert m.spec.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert m.spec.output_names == ["logits"] and m.num_classes == 3 and m.family == "hf-text"
    assert not any(mod.training for mod in m.model.modules()), "wrapper and model in eval mode"
    ids = m.spec.input("input_ids")
    assert ids.shape == ("batch", "sequence") and ids.high == len(tiny.WORDS) + 5
    seq = m.spec.axes["sequence"]
    assert (seq.opt, seq.max) == (64, 64), "opt capped at 128, max at the model's 64 positions"
    ref = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "bert").eval()
    feeds = m.dummy_inputs(3, sizes={"sequence": 10})
    with torch.no_grad():
        expected = ref(input_ids=feeds[0], attention_mask=feeds[1], token_type_ids=feeds[2]).logits
        torch.testing.assert_close(m.model(*feeds), expected)


def test_distilbert_takes_two_inputs(tmp_path):
    m = resolve_model(f"hf:{tiny.distilbert_classifier(tmp_path / 'd')}")
    assert m.spec.input_names == ["input_ids", "attention_mask"] and m.num_classes == 4


def test_sentence_encoder_pools_as_its_config_says(tmp_path):
    d = tiny.sentence_encoder(tmp_path / "enc", pooling="mean_tokens", normalize=True)
    m = resolve_model(f"hf:{d}")
    assert m.spec.output_names == ["sentence_embedding"] and m.num_classes is None
    assert m.extra["pooling"]["mode"] == "mean" and m.extra["pooling"]["normalize"]
    ids, mask, types = m.dummy_inputs(4, sizes={"sequence": 12})
    ref = transformers.BertModel.from_pretrained(d).eval()
    with torch.no_grad():
        states = ref(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        got = m.model(ids, mask, types)
    w = mask.unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((states * w).sum(1) / w.sum(1), dim=-1)
    torch.testing.assert_close(got, expected)
    assert torch.allclose(got.norm(dim=-1), torch.ones(4))


def test_cls_pooling_without_normalise_and_hidden_state_output(tmp_path):
    d = tiny.sentence_encoder(tmp_path / "enc", pooling="cls_token", normalize=False)
    m = resolve_model(f"hf:{d}", hidden_state=True)
    assert m.spec.output_names == ["sentence_embedding", "last_hidden_state"]
    with torch.no_grad():
        emb, states = m.model(*m.dummy_inputs(2, sizes={"sequence": 7}))
    torch.testing.assert_close(emb, states[:, 0])


def test_bare_encoder_without_pooling_files_defaults_to_mean_and_says_so(tmp_path):
    m = resolve_model(f"hf:{tiny.sentence_encoder(tmp_path / 'enc', st_files=False)}")
    assert m.extra["pooling"]["mode"] == "mean" and "default" in m.extra["pooling"]["origin"]


def test_bare_encoder_gets_no_random_classification_head(tmp_path):
    m = resolve_model(f"hf:{tiny.sentence_encoder(tmp_path / 'enc')}")
    assert not any("classifier" in n for n, _ in m.model.named_modules())


def test_masked_positions_do_not_change_the_output(tmp_path):
    m = resolve_model(f"hf:{tiny.bert_classifier(tmp_path / 'bert')}")
    ids, mask, types = m.dummy_inputs(4, seed=1, sizes={"sequence": 16})
    assert not mask.all()
    changed = torch.where(mask.bool(), ids, torch.full_like(ids, 7))
    with torch.no_grad():
        torch.testing.assert_close(m.model(ids, mask, types), m.model(changed, mask, types))


def test_max_length_and_sequence_errors(tmp_path):
    d = tiny.bert_classifier(tmp_path / "bert")
    assert resolve_model(f"hf:{d}", max_length=32).spec.axes["sequence"].max == 32
    with pytest.raises(OptionError, match="--max-length 100 is outside the model's positions"):
        resolve_model(f"hf:{d}", max_length=100)
    with pytest.raises(OptionError, match="text models"):
        resolve_model("default", max_length=16)
    with pytest.raises(OptionError, match="--input-shape"):
        resolve_model(f"hf:{d}", input_shape=(3, 8))
    m = resolve_model(f"hf:{d}", input_shape=(24,))
    assert m.spec.axes["sequence"].opt == 24 and m.input_shape_origin.startswith("user")


def test_sentence_transformers_max_seq_length_caps_the_axis(tmp_path):
    d = tiny.sentence_encoder(tmp_path / "enc")
    (d / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 40}), encoding="utf-8")
    m = resolve_model(f"hf:{d}")
    assert m.spec.axes["sequence"].max == 40 and "max_seq_length" in m.input_shape_origin


def test_two_poolings_at_once_are_refused(tmp_path):
    d = tiny.sentence_encoder(tmp_path / "enc")
    (d / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True}), encoding="utf-8")
    with pytest.raises(ModelSourceError, match="combines poolings"):
        resolve_model(f"hf:{d}")


def test_pool_modes():
    states = torch.arange(24.0).reshape(1, 4, 6)
    mask = torch.tensor([[1, 1, 0, 0]])
    torch.testing.assert_close(pool(states, mask, "mean"), states[:, :2].mean(1))
    torch.testing.assert_close(pool(states, mask, "max"), states[:, 1])
    torch.testing.assert_close(pool(states, mask, "mean_sqrt_len"), states[:, :2].sum(1) / 2 ** 0.5)


def test_roberta_sequence_axis_leaves_the_padding_offset(tmp_path):
    cfg = transformers.RobertaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                     vocab_size=100, max_position_embeddings=40, num_labels=2)
    torch.manual_seed(0)
    transformers.RobertaForSequenceClassification(cfg).save_pretrained(tmp_path / "r")
    m = resolve_model(f"hf:{tmp_path / 'r'}")
    seq = m.spec.axes["sequence"]
    assert seq.max == 40 - 2 and "padding offset 2" in m.extra.get("sequence_origin", "") + str(m.input_shape_origin)
    with torch.no_grad():  # the longest sequence the profile allows runs (40 tokens would index past the table)
        m.model(*m.dummy_inputs(2, sizes={"sequence": seq.max}))
