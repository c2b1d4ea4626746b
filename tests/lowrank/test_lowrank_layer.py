import torch
from torch import nn

from pela_export.lowrank import LowRankLinear, relative_error, truncated_svd


def _dense(i=24, o=40, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return nn.Linear(i, o).to(dtype)


def test_full_rank_equals_dense_float64():
    lin = _dense()
    f = truncated_svd(lin.weight, rank=min(lin.weight.shape))
    low = LowRankLinear.from_factors(f.u, f.v, lin.bias.detach())
    x = torch.randn(7, 24, dtype=torch.float64)
    ref, got = lin(x), low(x)
    rel = (got - ref).norm() / ref.norm()
    assert rel < 1e-10
    assert relative_error(lin.weight, f.u, f.v) < 1e-12


def test_truncation_error_equals_tail_singular_values():
    lin = _dense(32, 48, seed=1)
    w = lin.weight.detach()
    s = torch.linalg.svdvals(w)
    for r in (1, 5, 17, 31):
        f = truncated_svd(w, r)
        diff = w - f.u @ f.v
        # Eckart-Young: Frobenius error = sqrt(sum of tail s^2), spectral error = s_{r+1}
        assert torch.allclose(torch.linalg.norm(diff), s[r:].pow(2).sum().sqrt(), rtol=1e-10)
        assert torch.allclose(torch.linalg.matrix_norm(diff, ord=2), s[r], rtol=1e-8)
        assert abs(relative_error(w, f.u, f.v) - float(s[r:].pow(2).sum().sqrt() / s.pow(2).sum().sqrt())) < 1e-12


def test_sqrt_sigma_split_balances_factors():
    lin = _dense(16, 16, seed=2)
    f = truncated_svd(lin.weight, 6)
    # columns of U and rows of V carry equal norms (sqrt of each singular value)
    assert torch.allclose(f.u.norm(dim=0), f.v.norm(dim=1), rtol=1e-10)


def test_two_gemms_and_bias_on_second():
    low = LowRankLinear(10, 6, 3)
    assert low.first.bias is None and low.second.bias is not None
    assert low.first.weight.shape == (3, 10) and low.second.weight.shape == (6, 3)
    assert low.weight_product.shape == (6, 10)
