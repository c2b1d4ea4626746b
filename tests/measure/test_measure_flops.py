"""FLOP counts against hand counts, and the low-rank saving."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from pela_export.measure import FlopCount, count_flops
from pela_export.errors import OptionError
from pela_export.lowrank.layer import LowRankLinear


def test_linear_flops_are_2_b_in_out() -> None:
    b, fin, fout = 4, 16, 8
    fc = count_flops(nn.Linear(fin, fout), torch.randn(b, fin))
    assert fc.flops == 2 * b * fin * fout
    assert fc.macs == b * fin * fout
    assert fc.batch == b
    assert fc.flops_per_sample == 2 * fin * fout


def test_mlp_flops_match_hand_count() -> None:
    b = 3
    mlp = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 5))
    expected = 2 * b * (10 * 32 + 32 * 32 + 32 * 5)  # activations/bias adds are not counted
    assert count_flops(mlp, torch.randn(b, 10)).flops == expected


def test_lowrank_saves_expected_flops() -> None:
    b, fin, fout, r = 2, 64, 48, 8
    dense = count_flops(nn.Linear(fin, fout), torch.randn(b, fin)).flops
    low = count_flops(LowRankLinear(fin, fout, r), torch.randn(b, fin)).flops
    assert low == 2 * b * r * (fin + fout)
    assert dense - low == 2 * b * (fin * fout - r * (fin + fout))
    assert low < dense


def test_count_flops_restores_training_mode() -> None:
    m = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    m.train()
    count_flops(m, torch.randn(1, 4))
    assert m.training


def test_to_dict() -> None:
    d = FlopCount(flops=100, macs=50, batch=2).to_dict()
    assert d == {"flops": 100, "macs": 50, "batch": 2, "flops_per_sample": 50.0, "macs_per_sample": 25.0}


def test_scalar_example_rejected() -> None:
    with pytest.raises(OptionError):
        count_flops(nn.Identity(), torch.tensor(1.0))
