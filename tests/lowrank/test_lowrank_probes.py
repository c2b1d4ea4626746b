"""Sensitivity loss probes: zero on the reference model, positive once the model
changes, parametrised over the registry; the task probe needs labels."""
import pytest
import torch
from torch import nn

from pela_export.lowrank.probes import PROBES
from pela_export.lowrank.stats import CalibrationError


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.Linear(16, 4))


def _batches(labelled: bool = True):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(8, 6, generator=g), torch.randint(0, 4, (8,), generator=g) if labelled else None)
            for _ in range(3)]


@pytest.mark.parametrize("name", [n for n in PROBES.names() if n != "task"])
def test_reference_probes_are_zero_on_the_original_and_grow_with_distance(name):
    ref, batches = _model(0), _batches()
    probe = PROBES.get(name)(ref, batches)
    assert probe(ref) == pytest.approx(0.0, abs=1e-7)
    near, far = _model(0), _model(0)
    with torch.no_grad():
        near[2].weight.add_(0.01 * torch.randn_like(near[2].weight))
        far[2].weight.add_(1.0 * torch.randn_like(far[2].weight))
    assert 0.0 < probe(near) < probe(far)


def test_task_probe_is_mean_cross_entropy():
    model, batches = _model(0), _batches()
    with torch.no_grad():
        expected = torch.cat([nn.functional.cross_entropy(model(x), y, reduction="none") for x, y in batches]).mean()
    assert PROBES.get("task")(model, batches)(model) == pytest.approx(float(expected), rel=1e-6)


def test_task_probe_without_labels_is_a_clear_error():
    with pytest.raises(CalibrationError, match="needs labelled calibration data") as e:
        PROBES.get("task")(_model(0), _batches(labelled=False))
    assert "--sensitivity-loss kl" in e.value.fix


def test_kl_probe_works_on_unlabelled_data():
    assert PROBES.get("kl")(_model(0), _batches(labelled=False))(_model(1)) > 0


def test_empty_calibration_is_a_clear_error():
    with pytest.raises(CalibrationError, match="no calibration batches"):
        PROBES.get("kl")(_model(0), [])
