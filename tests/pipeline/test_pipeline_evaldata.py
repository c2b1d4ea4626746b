"""Evaluation/calibration data for text models through the pipeline's one resolver, and accuracy of a
classifier (top-1, agreement) and of a sentence encoder (linear probe fitted on the original's
training-split embeddings + embedding cosine), end to end through ONNX Runtime."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from pela_export.errors import DatasetError
from pela_export.pipeline.config import RunConfig
from pela_export.pipeline.context import prepare
from pela_export.pipeline.evaldata import accuracy_record, dataset_split, evaluation_data, image_split

transformers = pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")
import tiny_hf_text as tiny  # noqa: E402  (tests/fixtures)

from pela_export.export.onnx_export import export_example, export_onnx  # noqa: E402
from pela_export.lowrank import factorize_model  # noqa: E402

WORDS = tiny.WORDS
TOPICS = {"grain": "wheat grain sugar coffee ship", "crude": "oil crude price dollar ship",
          "earn": "net earnings profit quarter year company"}


def _docs(n, seed):
    """Seeded labelled documents: topic words mixed with common words (a probe can tell them apart)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        topic = sorted(TOPICS)[i % len(TOPICS)]
        own = TOPICS[topic].split()
        words = [own[j] for j in rng.integers(0, len(own), 5)] + [WORDS[j] for j in rng.integers(0, len(WORDS), 3)]
        rng.shuffle(words)
        rows.append((" ".join(words), topic))
    return rows


def _tsv(path, rows):
    path.write_text("text\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def text_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("text")
    return _tsv(d / "topics-train.tsv", _docs(60, 0)), _tsv(d / "topics-test.tsv", _docs(30, 1))


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("enc")
    tiny.sentence_encoder(d)
    tiny.with_tokenizer(d)
    return d


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cls")
    tiny.bert_classifier(d, num_labels=3)
    tiny.with_tokenizer(d)
    return d


def _ctx(tmp_path, model_dir, **kw):
    return prepare(RunConfig.of(model=f"hf:{model_dir}", out=str(tmp_path / "out"), progress=False, **kw))


def test_evaluation_and_calibration_data_of_a_text_model(tmp_path, classifier_dir, text_files):
    train, test = text_files
    ctx = _ctx(tmp_path, classifier_dir, data=str(test), eval_samples=10, max_length=16)
    data = evaluation_data(ctx)
    assert list(data.x) == ctx.loaded.spec.input_names and all(v.dtype == np.int64 for v in data.x.values())
    assert len(data.labels) == 10 and data.class_names == ["crude", "earn", "grain"] and data.num_classes == 3
    assert data.details["pairing"] == "test file + sibling train file" and data.details["max_length"] == 16
    assert "topics-train.tsv,topics-test.tsv test split (10 samples, max_length 16)" == data.source
    # the calibration stage's call: a seeded selection of the train split, same spelling
    x, y, n_classes, raw = image_split(ctx, f"text:{train}", "--calib-data", "train",
                                       lambda count: np.random.default_rng(0).permutation(count)[:8])
    assert set(x) == set(ctx.loaded.spec.input_names) and len(y) == 8 and n_classes == 3 and raw == ()
    assert x["input_ids"].shape[1] <= 16


def test_columns_from_the_run_config(tmp_path, classifier_dir):
    p = tmp_path / "r.csv"
    p.write_text("title,body,stars\na,the market rose,good\nb,oil fell,bad\n", encoding="utf-8")
    ctx = _ctx(tmp_path, classifier_dir, data=str(p), text_column="body", label_column="stars")
    data = evaluation_data(ctx)
    assert data.labels.tolist() == [1, 0] and data.class_names == ["bad", "good"]
    ctx = _ctx(tmp_path, classifier_dir, data=str(p))
    with pytest.raises(DatasetError) as e:
        evaluation_data(ctx)
    assert "columns: title, body, stars" in str(e.value) and "--text-column" in str(e.value)


def test_image_dataset_for_a_text_model_is_refused(tmp_path, classifier_dir):
    ctx = _ctx(tmp_path, classifier_dir)
    with pytest.raises(DatasetError) as e:
        dataset_split(ctx, "digits", "--calib-data", "train")
    msg = str(e.value)
    assert "--calib-data digits gives images, but" in msg and "is a text model" in msg
    assert "text:FILE or FILE.tab|.tsv|.csv|.jsonl" in msg
    with pytest.raises(DatasetError, match="reviews.txt is not a text data file"):
        dataset_split(ctx, "reviews.txt", "--data", "test")


def test_random_evaluation_inputs_of_a_text_model_feed_every_input(tmp_path, classifier_dir):
    data = evaluation_data(_ctx(tmp_path, classifier_dir))
    assert data.source == "random" and set(data.x) == {"input_ids", "attention_mask", "token_type_ids"}


def _onnx(loaded, model, path):
    return export_onnx(model, export_example(loaded), path, io=loaded.spec, exporter="legacy").path


@pytest.fixture(scope="module")
def encoder_onnx(tmp_path_factory, encoder_dir):
    from pela_export.models.sources import resolve_model

    d = tmp_path_factory.mktemp("onnx")
    loaded = resolve_model(f"hf:{encoder_dir}")
    student = copy.deepcopy(loaded.model)
    factorize_model(student, ratio=4)
    torch.manual_seed(0)
    with torch.no_grad():  # random tiny layers barely move the residual stream: make the change visible
        for name, p in student.named_parameters():
            if ".encoder." in name:
                p.add_(0.1 * torch.randn_like(p))
    return _onnx(loaded, loaded.model, d / "original.onnx"), _onnx(loaded, student, d / "compressed.onnx")


def test_embedding_model_is_scored_by_a_linear_probe_fitted_on_the_original(tmp_path, encoder_dir, text_files,
                                                                            encoder_onnx):
    from pela_export.measure.accuracy import collect_logits_onnx, fit_probe

    train, test = text_files
    original, compressed = encoder_onnx
    ctx = _ctx(tmp_path, encoder_dir, data=str(test))
    same = accuracy_record(ctx, {"original": original, "compressed": original}, 16)
    assert same["scoring"] == "embedding_probe" and same["output"] == "sentence_embedding"
    assert same["top1_reference"] == same["top1_candidate"] and same["top1_agreement"] == 1.0
    assert same["cosine_mean"] == pytest.approx(1.0, abs=1e-6) and same["top1_delta"] == 0.0
    assert same["probe"]["train_samples"] == 60 and same["probe"]["classes"] == 3
    assert same["label_names"] == ["crude", "earn", "grain"] and same["n_samples"] == 30
    assert same["top1_reference"] > 1 / 3  # the probe learned something from the topic words

    rec = accuracy_record(ctx, {"original": original, "compressed": compressed}, 16)
    assert rec["top1_reference"] == same["top1_reference"]  # the same probe on the same original embeddings
    assert rec["cosine_mean"] < 1.0 and rec["probe"] == same["probe"]
    # recompute by hand: probe fitted on the ORIGINAL's train embeddings, applied unchanged to the compressed
    tr, te = (dataset_split(ctx, str(test), "--data", s) for s in ("train", "test"))
    emb = {p: collect_logits_onnx(p, None, te.x, 7, output_name="sentence_embedding") for p in (original, compressed)}
    probe = fit_probe(collect_logits_onnx(original, None, tr.x, 7), tr.labels)
    assert rec["top1_candidate"] == pytest.approx(float((probe.predict(emb[compressed]) == te.labels).mean()))
    assert rec["top1_reference"] == pytest.approx(float((probe.predict(emb[original]) == te.labels).mean()))


def test_unlabelled_text_gives_cosine_only(tmp_path, encoder_dir, encoder_onnx):
    p = tmp_path / "u.jsonl"
    p.write_text("".join(f'{{"text": "{t}"}}\n' for t, _ in _docs(6, 3)), encoding="utf-8")
    original, compressed = encoder_onnx
    rec = accuracy_record(_ctx(tmp_path, encoder_dir, data=str(p)), {"original": original, "compressed": compressed},
                          4)
    assert rec["scoring"] == "embedding_probe" and rec["top1_reference"] is None
    assert rec["top1_skipped"] == "no labels" and 0 < rec["cosine_mean"] < 1.0


def test_classifier_is_scored_by_top1_and_agreement(tmp_path, classifier_dir, text_files):
    _, test = text_files
    ctx = _ctx(tmp_path, classifier_dir, data=str(test))
    path = _onnx(ctx.loaded, ctx.loaded.model, tmp_path / "c.onnx")
    rec = accuracy_record(ctx, {"original": path, "compressed": path}, 8)
    assert rec["scoring"] == "classifier" and rec["top1_agreement"] == 1.0 and rec["num_classes"] == 3
    assert rec["top1_reference"] is not None and rec["dataset"]["label_mapping"] == "sorted label names"
