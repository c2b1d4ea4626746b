"""PELA training data from a text file for a text model: every model input as an int64 tensor,
batches cut to their longest row, labels only for a classifier; the loop trains on them."""
from __future__ import annotations

import copy

import pytest
import torch

from pela_export.errors import DatasetError
from pela_export.train import TrainConfig, load_train_data, train_pela
from pela_export.train.data import batch_to, call_model

transformers = pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")
import tiny_hf_text as tiny  # noqa: E402  (tests/fixtures)

from pela_export.lowrank import factorize_model  # noqa: E402
from pela_export.models.sources import resolve_model  # noqa: E402

ROWS = [("the market rose", "trade"), ("wheat price fell sharply in the year", "grain"), ("oil", "crude"),
        ("bank interest rate money dollar", "interest")] * 3


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("d") / "train.tab"
    p.write_text("Topic\tText\nd\tstring\nclass\t\n" + "".join(f"{lab}\t{t}\n" for t, lab in ROWS), encoding="utf-8")
    return p


def _model(tmp_path, kind):
    d = tmp_path / kind
    (tiny.bert_classifier(d, num_labels=4) if kind == "cls" else tiny.sentence_encoder(d))
    tiny.with_tokenizer(d)
    return resolve_model(f"hf:{d}", max_length=8)


def test_text_file_gives_every_input_and_labels_for_a_classifier(tmp_path, data_file):
    loaded = _model(tmp_path, "cls")
    data = load_train_data(str(data_file), loaded)
    assert set(data.x) == {"input_ids", "attention_mask", "token_type_ids"} and len(data) == len(ROWS)
    assert data.labelled and data.y.tolist()[:4] == [3, 1, 0, 2] and data.x["input_ids"].shape[1] == 8
    x, y = next(data.batches(3))  # in order: rows 0..2 are at most 7 tokens ([CLS] ... [SEP])
    assert x["input_ids"].shape == (3, 8) and y.tolist() == [3, 1, 0]
    x, _ = next(iter(data.batches(1)))  # "the market rose" → 5 tokens, the padding columns cut
    assert x["attention_mask"].shape == (1, 5) and x["attention_mask"].all()
    out = call_model(loaded.model, batch_to(x, "cpu"))
    assert out.shape == (1, 4)


def test_embedding_model_trains_by_distillation_only(tmp_path, data_file):
    loaded = _model(tmp_path, "enc")
    data = load_train_data(f"text:{data_file}", loaded)
    assert not data.labelled and data.y is None


def test_pela_training_runs_on_text(tmp_path, data_file):
    loaded = _model(tmp_path, "cls")
    teacher = loaded.model
    student = factorize_model(copy.deepcopy(teacher), ratio=2).model
    before = {n: p.detach().clone() for n, p in student.named_parameters() if p.requires_grad}
    cfg = TrainConfig(epochs=1, batch_size=4, progress=False, amp=False, lr=1e-2)
    result = train_pela(student, teacher, load_train_data(str(data_file), loaded), cfg)
    assert len(result.history) == 1 and torch.isfinite(torch.tensor(result.history[0]["total"]))
    changed = [n for n, p in student.named_parameters() if n in before and not torch.equal(p, before[n])]
    assert changed


def test_wrong_kind_of_data_is_refused(tmp_path, data_file):
    loaded = _model(tmp_path, "cls")
    with pytest.raises(DatasetError, match="--train-data digits is not text"):
        load_train_data("digits", loaded)
    from pela_export.models.base import LoadedModel

    img = LoadedModel(torch.nn.Conv2d(1, 2, 3), "conv", "python:x", (1, 8, 8), "user")
    with pytest.raises(DatasetError, match="--train-data .* is text, but 'conv' takes input"):
        load_train_data(str(data_file), img)
