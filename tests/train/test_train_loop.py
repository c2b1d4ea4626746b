"""The training loop: it learns, respects the scope, and works without labels."""
import pytest
import torch
from train_helpers import make_vit, random_data, vit_pair

from pela_export.errors import OptionError
from pela_export.lowrank import LowRankLinear
from pela_export.train import TrainConfig, accuracy_fn, train_pela


def _cfg(**kw):
    base = dict(epochs=3, batch_size=16, lr=3e-3, warmup_steps=0, progress=False)
    return TrainConfig(**(base | kw))


def _loss_on(student, teacher, data, **kw):
    from pela_export.train import PelaLoss

    with PelaLoss(student, teacher, **kw) as loss, torch.no_grad():
        student.eval()
        return loss(data.x, data.y)[1].floats()


def test_training_reduces_total_loss_and_records_history():
    teacher, student = vit_pair(ratio=4)
    data = random_data(48)
    before = _loss_on(student, teacher, data)
    result = train_pela(student, teacher, data, _cfg(), eval_fn=accuracy_fn(data))
    after = _loss_on(result.student, teacher, data)
    assert after["total"] < before["total"]  # (random labels: the task term dominates here)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert all(0.0 <= h["accuracy"] <= 1.0 for h in result.history)
    assert {"total", "task", "feat", "logit", "wp", "lr", "seconds"} <= set(result.history[0])
    assert not result.student.training


def test_scope_factors_trains_only_low_rank_layers():
    teacher, student = vit_pair(ratio=4)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    flags = {n: p.requires_grad for n, p in student.named_parameters()}
    train_pela(student, teacher, random_data(32), _cfg(epochs=1, weight_decay=0.1))
    factor_keys = {f"{n}.{k}" for n, m in student.named_modules() if isinstance(m, LowRankLinear)
                   for k in m.state_dict()}
    after = student.state_dict()
    assert factor_keys
    for k, v in after.items():
        if k in factor_keys:
            continue
        assert torch.equal(v, before[k]), k
    assert any(not torch.equal(after[k], before[k]) for k in factor_keys)
    assert {n: p.requires_grad for n, p in student.named_parameters()} == flags  # restored


def test_scope_all_also_trains_the_rest():
    teacher, student = vit_pair(ratio=4)
    head = student.head.weight.clone()
    train_pela(student, teacher, random_data(32), _cfg(epochs=1, scope="all"))
    assert not torch.equal(student.head.weight, head)


def test_teacher_is_untouched():
    teacher, student = vit_pair(ratio=4)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    train_pela(student, teacher, random_data(32), _cfg(epochs=1, beta=1.0))
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())


def test_unlabelled_data_trains_with_distillation_only():
    teacher, student = vit_pair(ratio=4)
    data = random_data(32, labelled=False)
    before = _loss_on(student, teacher, data)
    result = train_pela(student, teacher, data, _cfg())
    assert all(h["task"] == 0.0 for h in result.history)
    assert _loss_on(result.student, teacher, data)["feat"] < before["feat"]


def test_same_seed_same_weights():
    runs = []
    for _ in range(2):
        teacher, student = vit_pair(ratio=4, drop=0.1)
        runs.append(train_pela(student, teacher, random_data(32), _cfg(epochs=1)).student.state_dict())
    assert all(torch.equal(v, runs[1][k]) for k, v in runs[0].items())


def test_global_rng_is_left_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    teacher, student = vit_pair(ratio=4)
    torch.manual_seed(123)
    train_pela(student, teacher, random_data(16), _cfg(epochs=1))
    assert torch.equal(torch.rand(3), expected)


def test_bad_config_and_undecomposed_student():
    teacher, student = vit_pair()
    with pytest.raises(OptionError, match="--train-scope"):
        train_pela(student, teacher, random_data(16), _cfg(scope="heads"))
    with pytest.raises(OptionError, match="epochs"):
        train_pela(student, teacher, random_data(16), _cfg(epochs=0))
    with pytest.raises(OptionError, match="checkpoint"):
        train_pela(student, teacher, random_data(16), _cfg(resume=True))
    with pytest.raises(OptionError, match=r"no factorized \(low-rank\) layers"):
        train_pela(make_vit(), teacher, random_data(16), _cfg())
