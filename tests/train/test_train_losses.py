"""Each PELA loss term: zero when the student is the teacher, positive otherwise."""
import copy

import pytest
import torch
from train_helpers import full_rank, make_vit, random_data, vit_pair

from pela_export.errors import ArtifactError, OptionError
from pela_export.lowrank import LowRankLinear
from pela_export.train import PelaLoss, logit_kl, weight_perturbation


def _terms(student, teacher, labelled=True, **kw):
    data = random_data(8, labelled=labelled)
    with PelaLoss(student, teacher, **kw) as loss, torch.no_grad():
        _, terms = loss(data.x, data.y)
    return terms.floats()


def test_full_rank_student_has_zero_distillation_terms():
    teacher = make_vit()
    student = full_rank(teacher)
    assert any(isinstance(m, LowRankLinear) for m in student.modules())
    t = _terms(student, teacher, alpha=1.0, beta=1.0, lam=1.0)
    assert t["feat"] == pytest.approx(0.0, abs=1e-9)
    assert t["logit"] == pytest.approx(0.0, abs=1e-5)
    assert t["wp"] == pytest.approx(0.0, abs=1e-9)
    assert t["task"] > 0
    assert t["total"] == pytest.approx(t["task"], abs=1e-5)


def test_identical_copy_is_exactly_zero():
    teacher = make_vit()
    t = _terms(copy.deepcopy(teacher), teacher, alpha=1.0, beta=1.0, lam=1.0)
    assert t["feat"] == 0.0 and t["wp"] == 0.0 and abs(t["logit"]) < 1e-6


def test_low_rank_student_has_positive_terms_and_weighted_total():
    teacher, student = vit_pair(ratio=2)
    kw = dict(alpha=2.0, beta=0.5, lam=3.0, eps=0.0)
    t = _terms(student, teacher, **kw)
    assert t["feat"] > 0 and t["logit"] > 0 and t["wp"] > 0 and t["task"] > 0
    expected = t["task"] + 2.0 * t["feat"] + 0.5 * t["logit"] + 3.0 * t["wp"]
    assert t["total"] == pytest.approx(expected, rel=1e-5)


def test_unlabelled_batches_have_no_task_loss():
    teacher, student = vit_pair()
    t = _terms(student, teacher, labelled=False)
    assert t["task"] == 0.0 and t["feat"] > 0


def test_weight_perturbation_is_clamped_at_eps():
    teacher, student = vit_pair()
    with PelaLoss(student, teacher) as loss:
        pairs = loss.pairs
    with torch.no_grad():
        worst = max(float((m.weight_product - w).abs().max()) for _, m, w in pairs)
        assert float(weight_perturbation(pairs, eps=worst + 1e-3)) == 0.0
        per_layer = [max(float((m.weight_product - w).abs().max()) - 0.01, 0.0) ** 2 for _, m, w in pairs]
        mean = sum(per_layer) / len(per_layer)
        assert float(weight_perturbation(pairs, eps=0.01)) == pytest.approx(mean, rel=1e-5)
        assert float(weight_perturbation([], eps=0.0)) == 0.0


def test_logit_kl_scales_with_temperature_squared():
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    assert float(logit_kl(t, t, 2.0)) == pytest.approx(0.0, abs=1e-6)
    kl1 = torch.nn.functional.kl_div(s.log_softmax(-1), t.log_softmax(-1), log_target=True, reduction="batchmean")
    assert float(logit_kl(s, t, 1.0)) == pytest.approx(float(kl1), rel=1e-5)


def test_feature_gradients_reach_only_the_student():
    teacher, student = vit_pair()
    data = random_data(4)
    with PelaLoss(student, teacher) as loss:
        _, terms = loss(data.x, data.y)
    terms.total.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None for p in student.parameters())


def test_bad_options_and_mismatched_teacher():
    teacher, student = vit_pair()
    with pytest.raises(OptionError, match="alpha"):
        PelaLoss(student, teacher, alpha=-1.0)
    with pytest.raises(OptionError, match="temperature"):
        PelaLoss(student, teacher, temperature=0.0)
    other = torch.nn.Sequential(torch.nn.Linear(3, 3))
    with pytest.raises(ArtifactError, match="teacher"):
        PelaLoss(student, other, alpha=0.0)
