"""PELA training of a factorized CNN: the conv factors learn, the weight-perturbation term pairs conv kernels."""
import torch
from torch import nn

from pela_export.lowrank import LowRankConv2d, factorize_model
from pela_export.train import TrainConfig, train_pela
from pela_export.train.data import from_arrays
from pela_export.train.losses import factor_pairs


def _cnn() -> nn.Module:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(16, 16, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.relu(self.conv(x))

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), Block(), Block(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 4))


def test_conv_factors_train_and_pair_with_the_teacher_kernels() -> None:
    teacher = _cnn().eval()
    for decomposition in ("channel", "spatial"):
        student = factorize_model(teacher, ratio=4, conv_decomposition=decomposition).model
        pairs = factor_pairs(student, teacher)
        assert [n for n, _, _ in pairs] == ["1.conv", "2.conv"]
        assert all(w.shape == (16, 16, 3, 3) for _, _, w in pairs)
        before = {k: v.clone() for k, v in student.state_dict().items()}
        torch.manual_seed(1)
        data = from_arrays(torch.randn(32, 1, 8, 8), torch.randint(0, 4, (32,)), name="random")
        train_pela(student, teacher, data, TrainConfig(epochs=1, batch_size=16, lr=3e-3, warmup_steps=0,
                                                       progress=False))
        layer = student.get_submodule("1.conv")
        assert isinstance(layer, LowRankConv2d)
        assert not torch.equal(layer.first.weight, before["1.conv.first.weight"])
        assert torch.equal(student[0].weight, before["0.weight"])  # scope factors: the dense stem is frozen
