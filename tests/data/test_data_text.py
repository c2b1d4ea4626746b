"""Text data files (.tab Orange, .tsv, .csv, .jsonl): columns, labels, splits, and tokenization for a
text model with its own tokenizer; one clear error for each bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pela_export.data.text import (
    is_text_spec,
    label_ids,
    load_text_dataset,
    read_text_file,
    text_files,
)
from pela_export.data.tokens import text_model_split, trim_padding
from pela_export.errors import DatasetError, ModelSourceError

ROWS = [("the market rose", "trade"), ("wheat price fell", "grain"), ("oil, crude oil", "crude"),
        ("bank interest rate", "interest")]


def write_tab(path, rows=ROWS, flags=("class", "")):
    lines = ["Category\tText", "d\tstring", "\t".join(flags), ""] + [f"{lab}\t{txt}" for txt, lab in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_csv(path, rows=ROWS, header=("text", "label")):
    import csv

    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_tsv(path, rows=ROWS, header=("sentence", "topic")):
    path.write_text("\n".join(["\t".join(header)] + [f"{t}\t{lab}" for t, lab in rows]) + "\n", encoding="utf-8")
    return path


def write_jsonl(path, rows=ROWS, keys=("document", "category")):
    path.write_text("".join(json.dumps({keys[0]: t, keys[1]: lab, "id": i}) + "\n" for i, (t, lab) in enumerate(rows)),
                    encoding="utf-8")
    return path


@pytest.mark.parametrize("writer,name,text_col,label_col,how", [
    (write_tab, "d.tab", "Text", "Category", "Orange class flag"),
    (write_csv, "d.csv", "text", "label", "column name"),
    (write_tsv, "d.tsv", "sentence", "topic", "column name"),
    (write_jsonl, "d.jsonl", "document", "category", "column name"),
])
def test_each_format_reads_text_and_labels_with_detected_columns(tmp_path, writer, name, text_col, label_col, how):
    t = read_text_file(writer(tmp_path / name))
    assert t.texts == [r[0] for r in ROWS] and t.labels == [r[1] for r in ROWS]
    assert (t.text_column, t.label_column) == (text_col, label_col)
    assert t.detected[label_col] == how and t.format == name.rsplit(".", 1)[1]


def test_csv_quotes_and_orange_missing_label_marks(tmp_path):
    p = tmp_path / "q.csv"
    p.write_text('text,label\n"a, quoted ""text""",x\n', encoding="utf-8")
    assert read_text_file(p).texts == ['a, quoted "text"']
    t = write_tab(tmp_path / "m.tab", rows=[("the market", "?"), ("oil", "crude")])
    with pytest.raises(DatasetError, match="(?s)1 row.*no value in label column 'Category'") as e:
        read_text_file(t)
    assert "--label-column" in str(e.value)


def test_named_columns_override_detection_and_unknown_column_lists_the_columns(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("title,body,stars\nhello,the market rose,5\nbye,oil fell,1\n", encoding="utf-8")
    t = read_text_file(p, text_column="body", label_column="stars")
    assert t.texts == ["the market rose", "oil fell"] and t.labels == ["5", "1"]
    assert t.detected == {"body": "--text-column", "stars": "--label-column"}
    with pytest.raises(DatasetError) as e:
        read_text_file(p, text_column="review")
    msg = str(e.value)
    assert "no text column 'review'" in msg and "columns: title, body, stars" in msg and "--text-column" in msg
    with pytest.raises(DatasetError, match="(?s)no label column 'y'.*--label-column"):
        read_text_file(p, text_column="body", label_column="y")


def test_ambiguous_or_missing_text_column_names_columns_and_flag(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("text,sentence,label\na,b,x\n", encoding="utf-8")
    with pytest.raises(DatasetError) as e:
        read_text_file(p)
    assert "text column is ambiguous" in str(e.value) and "text, sentence" in str(e.value)
    assert "--text-column NAME" in str(e.value)
    p.write_text("label,category,text\nx,y,a\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="(?s)label column is ambiguous.*--label-column NAME"):
        read_text_file(p)
    p.write_text("title,body,label\nx,y,a\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"no text column found \(columns: title, body, label"):
        read_text_file(p)


def test_unlabelled_single_column_file(tmp_path):
    p = tmp_path / "u.tsv"
    p.write_text("review\nthe market rose\noil fell\n", encoding="utf-8")
    t = read_text_file(p)
    assert t.text_column == "review" and t.labels is None and t.detected["review"] == "only other column"


def test_empty_header_only_and_missing_files(tmp_path):
    empty = tmp_path / "e.csv"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="is empty"):
        read_text_file(empty)
    header = tmp_path / "h.jsonl"
    header.write_text('\n', encoding="utf-8")
    with pytest.raises(DatasetError, match="is empty"):
        read_text_file(header)
    only = tmp_path / "o.tsv"
    only.write_text("text\tlabel\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="no rows"):
        read_text_file(only)
    with pytest.raises(DatasetError, match="(?s)does not exist.*--calib-data"):
        read_text_file(tmp_path / "absent.csv", flag="--calib-data")
    bad = tmp_path / "b.jsonl"
    bad.write_text('["a", "b"]\n', encoding="utf-8")
    with pytest.raises(DatasetError, match="line 1 is a JSON list"):
        read_text_file(bad)


def test_label_mapping_sorted_integer_and_model_label2id():
    ids, names, how = label_ids(["trade", "grain", "trade"])
    assert ids == {"grain": 0, "trade": 1} and names == ["grain", "trade"] and how == "sorted label names"
    ids, names, how = label_ids(["2", "0"])
    assert ids == {"0": 0, "2": 2} and names == ["0", "1", "2"] and how.startswith("integer")
    ids, names, how = label_ids(["Positive", "negative"], {"negative": 0, "positive": 1})
    assert ids == {"negative": 0, "Positive": 1} and names == ["negative", "positive"] and "label2id" in how
    assert label_ids(["b", "a"], {"LABEL_0": 0, "LABEL_1": 1})[2] == "sorted label names"  # default names: ignored


def test_specs_and_train_test_pairing(tmp_path):
    assert is_text_spec("text:anything") and is_text_spec("a.TSV") and is_text_spec("a.csv,b.csv")
    assert not is_text_spec("digits") and not is_text_spec("x.npz") and not is_text_spec("idx:/d")
    train = write_tab(tmp_path / "reuters-r8-train.tab")
    test = write_tab(tmp_path / "reuters-r8-test.tab", rows=ROWS[:2])
    assert text_files(str(train)) == (train, test, "train file + sibling test file")
    assert text_files(f"text:{test}") == (train, test, "test file + sibling train file")
    one = write_csv(tmp_path / "one.csv")
    assert text_files(str(one)) == (one, one, "one file (train = test)")
    assert text_files(f"{one},{test}")[2] == "train,test files"
    ds = load_text_dataset(str(test))
    assert len(ds.train) == 4 and len(ds.test) == 2
    assert ds.class_names == ["crude", "grain", "interest", "trade"]
    assert ds.y_test.tolist() == [3, 1] and ds.y_train.dtype == np.int64
    d = ds.describe()
    assert d["label_names"] == ds.class_names and d["pairing"] == "test file + sibling train file"
    with pytest.raises(DatasetError, match="one file or TRAIN,TEST"):
        text_files("text:a.csv,b.csv,c.csv")


def test_test_split_without_the_label_column_is_an_error(tmp_path):
    train = write_csv(tmp_path / "tr.csv")
    test = tmp_path / "te.csv"
    test.write_text("text\nthe market\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="has label column 'label' but .* has none"):
        load_text_dataset(f"{train},{test}")


def test_trim_padding_cuts_columns_padded_in_every_row():
    batch = {"input_ids": np.array([[2, 5, 3, 0, 0], [2, 3, 0, 0, 0]]),
             "attention_mask": np.array([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])}
    cut = trim_padding(batch)
    assert cut["input_ids"].shape == (2, 3) and cut["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    x = np.zeros((2, 3))
    assert trim_padding(x) is x


# -- tokenization with the model's own tokenizer -------------------------------------------------
transformers = pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")
import tiny_hf_text as tiny  # noqa: E402  (tests/fixtures)

from pela_export.models.sources import resolve_model  # noqa: E402


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bert")
    tiny.bert_classifier(d, num_labels=4)
    tiny.with_tokenizer(d)
    return d


def test_tokenized_inputs_are_the_models_inputs_padded_to_the_longest(tmp_path, bert_dir):
    loaded = resolve_model(f"hf:{bert_dir}")
    data = write_tsv(tmp_path / "d.tsv")
    tok = text_model_split(loaded, str(data), "test")
    assert list(tok.x) == loaded.spec.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(v.dtype == np.int64 for v in tok.x.values())
    ref = transformers.AutoTokenizer.from_pretrained(str(bert_dir))([r[0] for r in ROWS], padding="longest")
    np.testing.assert_array_equal(tok.x["input_ids"], np.array(ref["input_ids"]))
    np.testing.assert_array_equal(tok.x["attention_mask"], np.array(ref["attention_mask"]))
    assert tok.x["attention_mask"].sum(axis=1).max() == tok.x["input_ids"].shape[1]  # longest row, no more
    assert tok.labels.tolist() == [3, 1, 0, 2] and tok.num_classes == 4
    picked = text_model_split(loaded, str(data), "test", lambda n: np.array([2, 0]))
    assert picked.labels.tolist() == [0, 3] and len(picked.x["input_ids"]) == 2


def test_max_length_truncates(tmp_path, bert_dir):
    loaded = resolve_model(f"hf:{bert_dir}", max_length=4)
    tok = text_model_split(loaded, str(write_csv(tmp_path / "d.csv")), "train")
    assert tok.x["input_ids"].shape == (4, 4) and tok.max_length == 4
    assert (tok.x["input_ids"][:, -1] == 3).all()  # every row cut and closed with [SEP]
    assert tok.at_max_length == 4


def test_model_without_tokenizer_files(tmp_path):
    d = tiny.bert_classifier(tmp_path / "bare")
    loaded = resolve_model(f"hf:{d}")
    with pytest.raises(ModelSourceError) as e:
        text_model_split(loaded, str(write_csv(tmp_path / "d.csv")), "test")
    assert "has no tokenizer files" in str(e.value) and "tokenizer.save_pretrained" in str(e.value)


def test_tokenizer_from_another_model_is_caught(tmp_path, bert_dir):
    d = tmp_path / "small"
    transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
        max_position_embeddings=32)).save_pretrained(d)
    tiny.with_tokenizer(d)  # vocabulary of 30 tokens for a model with 8
    with pytest.raises(ModelSourceError, match="produced token id .* vocabulary has 8 entries"):
        text_model_split(resolve_model(f"hf:{d}"), str(write_csv(tmp_path / "d.csv")), "test")


def test_text_data_for_an_image_model_is_refused(tmp_path):
    import torch

    from pela_export.models.base import LoadedModel

    img = LoadedModel(torch.nn.Conv2d(1, 2, 3), "conv", "python:x", (1, 8, 8), "user")
    with pytest.raises(DatasetError) as e:
        text_model_split(img, str(write_csv(tmp_path / "d.csv")), "test", flag="--calib-data")
    assert "--calib-data" in str(e.value) and "is text, but 'conv' takes input (batch, 1, 8, 8) float32" in str(e.value)
