import pytest
import torch
from torch import nn

from pela_export.lowrank import (CalibrationError, collect_activation_stats, factorize_model,
                                 format_rank_table, output_error, svd_risk, truncated_svd)


def _weight(seed=0, out_f=20, in_f=12):
    return torch.randn(out_f, in_f, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_isotropic_inputs_give_risk_one():
    w = _weight()
    eye = torch.eye(12, dtype=torch.float64)
    f = truncated_svd(w, 4)
    rel = float(torch.linalg.norm(w - f.u @ f.v) / torch.linalg.norm(w))
    assert output_error(w, f.u, f.v, eye) == pytest.approx(rel, rel=1e-12)
    assert svd_risk(w, 4, eye) == pytest.approx(1.0, rel=1e-12)
    assert svd_risk(w, 12, eye) == 1.0  # nothing dropped


def test_risk_flags_inputs_in_the_dropped_directions():
    w = _weight(1)
    _, _, vt = torch.linalg.svd(w, full_matrices=False)
    tail = vt[4:].T @ vt[4:]  # inputs living in the right singular directions SVD drops at rank 4
    head = vt[:4].T @ vt[:4]
    eps = 1e-3 * torch.eye(12, dtype=torch.float64)
    assert svd_risk(w, 4, 10 * tail + head + eps) > 1.5
    assert svd_risk(w, 4, tail + 10 * head + eps) < 0.7


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(16, 48)
        self.mlp.fc2 = nn.Linear(48, 16)
        self.small = nn.Module()
        self.small.mlp = nn.Module()
        self.small.mlp.fc = nn.Linear(2, 2)

    def forward(self, x):
        return self.mlp.fc2(torch.relu(self.mlp.fc1(x))) + self.small.mlp.fc(x[..., :2]).sum(-1, keepdim=True)


def _calibrated():
    torch.manual_seed(0)
    model = Model()
    scale = torch.logspace(-1, 1, 16)  # outlier channels
    batches = [torch.randn(4, 8, 16) * scale for _ in range(4)]
    names = ["mlp.fc1", "mlp.fc2", "small.mlp.fc"]
    return model, collect_activation_stats(model, names, batches), batches


@pytest.mark.parametrize("method", ["svd", "asvd", "whiten"])
def test_factorize_with_stats_records_risk_and_output_error(method):
    model, stats, _ = _calibrated()
    res = factorize_model(model, ratio=2, method=method, stats=stats)
    fac = {r.name: r for r in res.factorized}
    assert set(fac) == {"mlp.fc1", "mlp.fc2"}
    for r in fac.values():
        assert r.risk is not None and r.risk > 0 and r.weighted_error is not None
    table = format_rank_table(res)
    assert "risk" in table and "out. error" in table
    assert res.to_dict()["layers"][0]["risk"] == fac["mlp.fc1"].risk
    assert res.to_dict()["policy_inputs"]["calibration"]["min_samples"] == 128


def test_whiten_beats_svd_on_calibration_output_error():
    model, stats, _ = _calibrated()
    plain = {r.name: r for r in factorize_model(model, ratio=2, stats=stats).factorized}
    white = {r.name: r for r in factorize_model(model, ratio=2, method="whiten", stats=stats).factorized}
    for name, rec in plain.items():
        assert white[name].weighted_error <= rec.weighted_error + 1e-6
    assert plain["mlp.fc1"].risk > 1  # outlier channels make plain SVD's weight error optimistic


def test_table_unchanged_without_stats():
    res = factorize_model(Model(), ratio=2)
    assert "risk" not in format_rank_table(res)
    assert all(r.risk is None and r.weighted_error is None for r in res.layers)


@pytest.mark.parametrize("method", ["fwsvd", "asvd", "whiten"])
def test_factorize_without_stats_names_layer_and_flag(method):
    with pytest.raises(CalibrationError, match="mlp.fc1") as err:
        factorize_model(Model(), method=method)
    assert "--calib-data" in str(err.value) and f"--method {method}" in str(err.value)


def test_asvd_alpha_option():
    model, stats, _ = _calibrated()
    res = factorize_model(model, method="asvd", alpha=1.0, stats=stats)
    assert res.to_dict()["policy_inputs"]["alpha"] == 1.0
    assert factorize_model(model, method="asvd", stats=stats).policy_inputs["alpha"] == 0.5
    with pytest.raises(Exception, match="--asvd-alpha"):
        factorize_model(model, method="asvd", alpha=-1, stats=stats)


def test_fwsvd_through_factorize():
    model, stats, batches = _calibrated()
    from pela_export.lowrank import collect_fisher, with_fisher

    def mse(out, y):
        return (out - y).pow(2).mean()

    fisher = collect_fisher(model, ["mlp.fc1", "mlp.fc2"], [(b, torch.zeros(4, 8, 16)) for b in batches], loss_fn=mse)
    res = factorize_model(model, method="fwsvd", stats=with_fisher(stats, fisher))
    assert len(res.factorized) == 2
