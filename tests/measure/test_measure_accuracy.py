"""Accuracy, agreement and cosine on hand-made logits."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pela_export.measure import collect_logits_torch, evaluate_logits
from pela_export.errors import DatasetError, OptionError, VerificationError

LOGITS = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 5.0], [2.0, 3.0, 0.0]])


def test_identical_logits() -> None:
    r = evaluate_logits(LOGITS, LOGITS.copy(), labels=np.array([0, 1, 2, 0]))
    assert r["top1_agreement"] == 1.0
    assert r["cosine_mean"] == pytest.approx(1.0)
    assert r["cosine_min"] == pytest.approx(1.0)
    assert r["max_abs_diff"] == 0.0
    assert r["top1_reference"] == r["top1_candidate"] == pytest.approx(0.75)
    assert r["top1_delta"] == 0.0
    assert r["n_samples"] == 4 and r["num_classes"] == 3


def test_partial_agreement_and_cosine() -> None:
    cand = LOGITS.copy()
    cand[0] = [0.0, 0.0, 1.0]  # prediction 0 → 2
    cand[3] = -LOGITS[3]       # opposite direction: cosine -1, prediction 1 → 2
    r = evaluate_logits(LOGITS, cand, labels=np.array([0, 1, 2, 1]))
    assert r["top1_agreement"] == pytest.approx(0.5)
    cos0 = 0.0 / (np.linalg.norm(LOGITS[0]) * 1.0)
    assert r["cosine_mean"] == pytest.approx((cos0 + 1 + 1 - 1) / 4)
    assert r["cosine_min"] == pytest.approx(-1.0)
    assert r["top1_reference"] == pytest.approx(1.0)
    assert r["top1_candidate"] == pytest.approx(0.5)
    assert r["top1_delta"] == pytest.approx(-0.5)


def test_scaled_logits_keep_cosine_one() -> None:
    r = evaluate_logits(LOGITS, 3.0 * LOGITS, labels=None)
    assert r["cosine_mean"] == pytest.approx(1.0)
    assert r["top1_agreement"] == 1.0
    assert r["top1_reference"] is None and r["top1_skipped"] == "no labels"


def test_zero_rows() -> None:
    z = np.zeros((2, 3))
    assert evaluate_logits(z, z)["cosine_mean"] == pytest.approx(1.0)
    assert evaluate_logits(z, np.ones((2, 3)))["cosine_mean"] == pytest.approx(0.0)


def test_class_count_mismatch_gives_no_top1() -> None:
    r = evaluate_logits(LOGITS, LOGITS, labels=np.array([0, 1, 2, 0]), num_classes=1000)
    assert r["top1_reference"] is None and r["top1_candidate"] is None
    assert "1000" in r["top1_skipped"]
    r = evaluate_logits(LOGITS, LOGITS, labels=np.array([0, 1, 7, 0]))  # label outside 3 classes
    assert r["top1_reference"] is None and r["top1_skipped"]
    assert r["top1_agreement"] == 1.0  # agreement does not need labels


def test_shape_and_label_errors() -> None:
    with pytest.raises(VerificationError):
        evaluate_logits(LOGITS, LOGITS[:, :2])
    with pytest.raises(VerificationError):
        evaluate_logits(np.zeros(3), np.zeros(3))
    with pytest.raises(DatasetError):
        evaluate_logits(LOGITS, LOGITS, labels=np.array([0, 1]))
    with pytest.raises(DatasetError):
        evaluate_logits(LOGITS, LOGITS, labels=np.array([0.0, 1.0, 2.0, 0.0]))


def test_collect_logits_torch_batches_match_single_pass() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3))
    x = np.random.default_rng(0).standard_normal((10, 6)).astype(np.float32)
    got = collect_logits_torch(model, x, batch_size=4)  # 4 + 4 + 2
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert got.shape == (10, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_collect_logits_torch_unwraps_tuple_outputs() -> None:
    class TupleOut(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x * 2, x

    got = collect_logits_torch(TupleOut(), np.ones((3, 2), dtype=np.float32), batch_size=2)
    np.testing.assert_array_equal(got, np.full((3, 2), 2.0, dtype=np.float32))


def test_bad_batch_size() -> None:
    with pytest.raises(OptionError):
        collect_logits_torch(nn.Identity(), np.ones((2, 2), dtype=np.float32), batch_size=0)
