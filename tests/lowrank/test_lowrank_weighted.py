import pytest
import torch

from pela_export.lowrank import DECOMPOSITIONS, CalibrationError, LayerStats, truncated_svd
from pela_export.lowrank.weighted import cholesky_with_jitter

OUT, IN = 24, 16


def _problem(seed=0, n=200):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(OUT, IN, generator=g, dtype=torch.float64)
    # anisotropic inputs with outlier channels, so weighting matters
    x = torch.randn(n, IN, generator=g, dtype=torch.float64) * torch.logspace(-1, 1, IN, dtype=torch.float64)
    x = x @ torch.randn(IN, IN, generator=g, dtype=torch.float64) * 0.3 + x
    stats = LayerStats(abs_mean=x.abs().mean(0), gram=x.T @ x / n,
                       fisher_rows=torch.rand(OUT, generator=g, dtype=torch.float64) ** 3 + 1e-3, n_samples=n)
    return w, stats


@pytest.mark.parametrize("method", ["svd", "fwsvd", "asvd", "whiten"])
def test_full_rank_recovers_weight(method):
    w, stats = _problem()
    f = DECOMPOSITIONS.get(method)(w, IN, stats)
    assert f.u.shape == (OUT, IN) and f.v.shape == (IN, IN)
    assert float(torch.linalg.norm(w - f.u @ f.v) / torch.linalg.norm(w)) < 1e-8


@pytest.mark.parametrize("method", ["fwsvd", "asvd", "whiten"])
def test_dtype_kept_and_sqrt_sigma_split(method):
    w, stats = _problem()
    f = DECOMPOSITIONS.get(method)(w.float(), 5, stats)
    assert f.u.dtype == torch.float32 and f.v.dtype == torch.float32


@pytest.mark.parametrize("rank", [1, 4, 9, 15])
def test_fwsvd_minimises_fisher_weighted_error(rank):
    w, stats = _problem(1)
    root = stats.fisher_rows.sqrt()[:, None]
    f, p = DECOMPOSITIONS.get("fwsvd")(w, rank, stats), truncated_svd(w, rank)
    weighted, plain = torch.linalg.norm(root * (w - f.u @ f.v)), torch.linalg.norm(root * (w - p.u @ p.v))
    assert weighted <= plain * (1 + 1e-12)
    assert weighted < plain * 0.99  # a real improvement on this non-uniform importance


@pytest.mark.parametrize("rank", [1, 4, 9, 15])
def test_asvd_minimises_activation_scaled_error(rank):
    w, stats = _problem(2)
    for alpha in (0.5, 1.0):
        s = stats.abs_mean.pow(alpha)[None, :]
        f = DECOMPOSITIONS.get("asvd")(w, rank, stats, alpha=alpha)
        p = truncated_svd(w, rank)
        assert torch.linalg.norm((w - f.u @ f.v) * s) <= torch.linalg.norm((w - p.u @ p.v) * s) * (1 + 1e-12)


def test_asvd_alpha_zero_is_plain_svd():
    w, stats = _problem(3)
    f, p = DECOMPOSITIONS.get("asvd")(w, 6, stats, alpha=0.0), truncated_svd(w, 6)
    assert torch.allclose(f.u @ f.v, p.u @ p.v, atol=1e-10)


@pytest.mark.parametrize("rank", [1, 4, 9, 15])
def test_whiten_loss_equals_dropped_singular_values(rank):
    w, stats = _problem(4)
    chol = torch.linalg.cholesky(stats.gram)
    f, p = DECOMPOSITIONS.get("whiten")(w, rank, stats), truncated_svd(w, rank)
    loss = torch.linalg.norm((w - f.u @ f.v) @ chol)
    dropped = torch.linalg.svdvals(w @ chol)[rank:].pow(2).sum().sqrt()
    assert torch.allclose(loss, dropped, rtol=1e-8)
    assert loss <= torch.linalg.norm((w - p.u @ p.v) @ chol) * (1 + 1e-12)
    # which is the layer's output error on the calibration inputs
    assert torch.allclose(f.singular_values.pow(2)[rank:].sum().sqrt(), dropped, rtol=1e-8)


def test_cholesky_jitter_handles_singular_gram():
    x = torch.randn(3, 8, dtype=torch.float64)  # fewer samples than channels: XᵀX has rank 3
    chol = cholesky_with_jitter(x.T @ x / 3)
    assert torch.isfinite(chol).all() and torch.allclose(chol @ chol.T, x.T @ x / 3, atol=1e-6)
    w = torch.randn(5, 8, dtype=torch.float64)
    f = DECOMPOSITIONS.get("whiten")(w, 2, LayerStats(gram=x.T @ x / 3))
    assert torch.isfinite(f.u).all() and torch.isfinite(f.v).all()


@pytest.mark.parametrize("method,field", [("fwsvd", "fisher_rows"), ("asvd", "abs_mean"), ("whiten", "gram")])
def test_missing_stats_is_a_clear_error(method, field):
    w, _ = _problem()
    for stats in (None, LayerStats()):
        with pytest.raises(CalibrationError, match=field) as err:
            DECOMPOSITIONS.get(method)(w, 3, stats)
        assert "--calib-data" in str(err.value)


def test_mismatched_stats_shape():
    w, stats = _problem()
    with pytest.raises(CalibrationError, match="entries"):
        DECOMPOSITIONS.get("asvd")(w.T, 3, stats)
    with pytest.raises(CalibrationError, match="gram"):
        DECOMPOSITIONS.get("whiten")(w.T, 3, stats)
