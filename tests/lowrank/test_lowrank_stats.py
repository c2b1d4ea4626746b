import pytest
import torch
from torch import nn
from torch.nn import functional as F

from pela_export.errors import OptionError
from pela_export.lowrank import CalibrationError, LayerStats, collect_activation_stats, collect_fisher, with_fisher


class Net(nn.Module):
    def __init__(self, d=6, classes=3):
        super().__init__()
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(d, 8)
        self.mlp.fc2 = nn.Linear(8, classes)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        h = self.drop(torch.relu(self.mlp.fc1(x)))
        return self.mlp.fc2(h).mean(dim=1) if x.dim() == 3 else self.mlp.fc2(h)


def test_activation_stats_match_manual_and_flatten_leading_dims():
    torch.manual_seed(0)
    net = Net().double()
    batches = [torch.randn(2, 5, 6, dtype=torch.float64) for _ in range(3)]
    stats = collect_activation_stats(net, ["mlp.fc1", "mlp.fc2"], batches)
    x = torch.cat([b.reshape(-1, 6) for b in batches])
    s = stats["mlp.fc1"]
    assert s.n_samples == 30
    assert torch.allclose(s.abs_mean, x.abs().mean(0), rtol=1e-12)
    assert torch.allclose(s.gram, x.T @ x / 30, rtol=1e-12)
    assert s.gram.dtype == torch.float64 and s.fisher_rows is None
    h = torch.relu(net.mlp.fc1(x))  # eval mode: dropout off during collection
    assert torch.allclose(stats["mlp.fc2"].gram, h.T @ h / 30, rtol=1e-10)


def test_activation_stats_accept_labelled_pairs_and_subset():
    net = Net()
    stats = collect_activation_stats(net, ["mlp.fc1"], [(torch.randn(4, 6), None)], need={"abs_mean"})
    assert stats["mlp.fc1"].gram is None and stats["mlp.fc1"].abs_mean.shape == (6,)
    with pytest.raises(OptionError, match="unknown activation statistics"):
        collect_activation_stats(net, ["mlp.fc1"], [torch.randn(4, 6)], need={"nope"})


def test_hooks_and_modes_restored_on_error():
    net = Net()
    net.train()
    net.drop.eval()  # a mixed-mode model keeps each module's own flag

    def bad():
        yield torch.randn(4, 6)
        yield torch.randn(4, 99)  # wrong width: forward raises

    with pytest.raises(RuntimeError):
        collect_activation_stats(net, ["mlp.fc1", "mlp.fc2"], bad())
    assert not net.mlp.fc1._forward_pre_hooks and not net.mlp.fc2._forward_pre_hooks
    assert net.training and net.mlp.fc1.training and not net.drop.training


def test_bad_layers_and_empty_data():
    net = Net()
    with pytest.raises(CalibrationError, match="does not exist"):
        collect_activation_stats(net, ["mlp.nope"], [torch.randn(2, 6)])
    with pytest.raises(CalibrationError, match="not nn.Linear"):
        collect_activation_stats(net, ["drop"], [torch.randn(2, 6)])
    with pytest.raises(CalibrationError, match="--calib-data"):
        collect_activation_stats(net, ["mlp.fc1"], [])


def test_fisher_rows_match_manual_gradients():
    torch.manual_seed(1)
    net = Net().double()
    batches = [(torch.randn(5, 6, dtype=torch.float64), torch.randint(0, 3, (5,))) for _ in range(2)]
    fisher = collect_fisher(net, ["mlp.fc1"], batches)
    expected = torch.zeros(8, dtype=torch.float64)
    net.eval()
    for x, y in batches:
        g, = torch.autograd.grad(F.cross_entropy(net(x), y), [net.mlp.fc1.weight])
        expected += g.pow(2).sum(1)
    assert torch.allclose(fisher["mlp.fc1"], expected / 2, rtol=1e-10)
    assert net.mlp.fc1.weight.grad is None, "parameter .grad untouched"


def test_fisher_needs_labels_and_restores_flags():
    net = Net()
    net.mlp.fc2.weight.requires_grad_(False)
    with pytest.raises(CalibrationError, match="labelled") as err:
        collect_fisher(net, ["mlp.fc1"], [(torch.randn(4, 6), None)])
    assert "--method asvd" in str(err.value) and "--calib-data" in str(err.value)
    with pytest.raises(CalibrationError, match="labelled"):
        collect_fisher(net, ["mlp.fc1"], [torch.randn(4, 6)])
    assert net.mlp.fc1.weight.requires_grad and not net.mlp.fc2.weight.requires_grad


def test_with_fisher_merges():
    merged = with_fisher({"a": LayerStats(abs_mean=torch.ones(3), n_samples=4)}, {"a": torch.ones(2), "b": torch.ones(5)})
    assert merged["a"].abs_mean is not None and merged["a"].fisher_rows.shape == (2,)
    assert merged["b"].fisher_rows.shape == (5,) and merged["b"].gram is None
