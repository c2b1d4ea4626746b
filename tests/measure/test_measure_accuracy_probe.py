"""Accuracy without a classification head (a linear probe on embeddings), and dict batches for
multi-input models in ``collect_logits_torch``/``collect_logits_onnx``."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pela_export.measure.accuracy import (
    collect_logits_onnx,
    collect_logits_torch,
    evaluate_embedding_probe,
    evaluate_logits,
    fit_probe,
)
from pela_export.errors import DatasetError


def _clusters(n_per=20, dim=8, seed=0):
    centres = np.random.default_rng(123).normal(0, 3, (3, dim))  # the same classes in every split
    rng = np.random.default_rng(seed)
    x = np.concatenate([c + rng.normal(0, 1, (n_per, dim)) for c in centres]).astype(np.float32)
    return x, np.repeat(np.arange(3), n_per).astype(np.int64)


def test_probe_fitted_once_scores_original_and_candidate_unchanged():
    train_x, train_y = _clusters(seed=0)
    test_x, test_y = _clusters(seed=1)
    probe = fit_probe(train_x, train_y)
    same = evaluate_embedding_probe(test_x, test_x.copy(), test_y, probe)
    assert same["scoring"] == "embedding_probe" and same["top1_reference"] == same["top1_candidate"] > 0.9
    assert same["top1_agreement"] == 1.0 and same["cosine_mean"] == pytest.approx(1.0) and same["top1_delta"] == 0
    noisy = test_x + np.random.default_rng(2).normal(0, 4, test_x.shape).astype(np.float32)
    worse = evaluate_embedding_probe(test_x, noisy, test_y, probe)
    assert worse["top1_reference"] == same["top1_reference"]  # the probe is not refitted
    assert worse["top1_candidate"] == pytest.approx(float((probe.predict(noisy) == test_y).mean()))
    assert worse["top1_candidate"] < worse["top1_reference"] and worse["cosine_mean"] < 1.0
    assert worse["probe"]["train_samples"] == 60 and worse["probe"]["classes"] == 3


def test_probe_without_labels_or_probe_reports_cosine_only():
    x, _ = _clusters()
    out = evaluate_embedding_probe(x, x * 2.0)
    assert out["top1_reference"] is None and out["top1_skipped"] == "no labels"
    assert out["cosine_mean"] == pytest.approx(1.0)
    assert evaluate_embedding_probe(x, x, np.zeros(len(x), np.int64))["top1_skipped"].startswith("no probe")


def test_probe_errors():
    x, y = _clusters()
    with pytest.raises(DatasetError, match="at least two classes"):
        fit_probe(x, np.zeros(len(x), np.int64))
    with pytest.raises(DatasetError, match="labels for"):
        fit_probe(x, y[:5])
    with pytest.raises(DatasetError, match="integer class ids"):
        fit_probe(x, y.astype(np.float32))


def test_classifier_scoring_is_recorded():
    logits = np.eye(3, dtype=np.float32)
    assert evaluate_logits(logits, logits, np.arange(3))["scoring"] == "classifier"


class TwoInputs(nn.Module):
    """Masked mean of embedded ids: padding positions change nothing."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(20, 4)

    def forward(self, input_ids, attention_mask):
        m = attention_mask.unsqueeze(-1).float()
        return (self.emb(input_ids) * m).sum(1) / m.sum(1)


def _batch():
    ids = np.array([[1, 2, 3, 0, 0, 0], [4, 5, 0, 0, 0, 0], [6, 7, 8, 9, 0, 0]], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64)}


def test_dict_batches_torch_and_onnx_match_and_padding_is_cut(tmp_path):
    model = TwoInputs().eval()
    x = _batch()
    seen = []
    hook = model.emb.register_forward_hook(lambda _m, args, _out: seen.append(tuple(args[0].shape)))
    got = collect_logits_torch(model, x, batch_size=2)
    hook.remove()
    assert seen == [(2, 3), (1, 4)]  # each batch cut to its longest row
    with torch.no_grad():
        ref = model(*(torch.from_numpy(x[k]) for k in ("input_ids", "attention_mask"))).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, tuple(torch.from_numpy(x[k]) for k in ("input_ids", "attention_mask")), str(path),
                      input_names=["input_ids", "attention_mask"], output_names=["out"], dynamo=False,
                      dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"}})
    np.testing.assert_allclose(collect_logits_onnx(path, None, x, 2), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(collect_logits_onnx(path, ["input_ids", "attention_mask"], x, 3, output_name="out"),
                               ref, rtol=1e-5, atol=1e-6)
