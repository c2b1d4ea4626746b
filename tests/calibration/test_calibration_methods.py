"""Scale methods on synthetic statistics: max, percentile and the TensorRT-style entropy search."""
from __future__ import annotations

import numpy as np
import pytest

from pela_export.calibration import SCALE_METHODS, ScaleParams, TensorStats, amax_to_scale, entropy_threshold, threshold
from pela_export.calibration.methods import kl_divergences
from pela_export.errors import OptionError


def _stats(x: np.ndarray, parts: int = 4, bins: int = 2048) -> TensorStats:
    s = TensorStats.empty("t", bins)
    for chunk in np.array_split(x, parts):
        s.update(chunk)
    return s


def _laplace_with_outliers() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.concatenate([rng.laplace(0.0, 1.0, 100_000), [25.0, -30.0, 40.0]]).astype(np.float32)


def test_registry_lists_the_three_methods() -> None:
    assert SCALE_METHODS.names() == ["entropy", "max", "percentile"]
    with pytest.raises(OptionError, match="--calib-method"):
        SCALE_METHODS.get("mse")


def test_max_is_absmax_and_scale_is_absmax_over_127() -> None:
    x = _laplace_with_outliers()
    s = _stats(x)
    assert threshold(s, "max") == pytest.approx(float(np.abs(x).max()))
    assert amax_to_scale(threshold(s, "max")) == pytest.approx(40.0 / 127, rel=1e-6)
    assert amax_to_scale(0.0) == pytest.approx(1 / 127)  # an all-zero tensor still gets a valid scale


def test_percentile_is_below_max_and_near_the_true_quantile() -> None:
    x = _laplace_with_outliers()
    s = _stats(x)
    p = threshold(s, "percentile", ScaleParams(percentile=99.9))
    assert p <= threshold(s, "max")
    assert p == pytest.approx(np.percentile(np.abs(x), 99.9), abs=2 * s.bin_width)
    assert threshold(s, "percentile", ScaleParams(percentile=100.0)) == pytest.approx(s.absmax)
    with pytest.raises(OptionError):
        ScaleParams(percentile=0.0)


def test_entropy_clips_a_heavy_tail() -> None:
    s = _stats(_laplace_with_outliers())
    t = threshold(s, "entropy")
    assert 3.0 < t < 0.5 * s.absmax


def test_entropy_keeps_the_range_of_a_uniform_distribution() -> None:
    x = np.random.default_rng(1).uniform(-3.0, 3.0, 100_000).astype(np.float32)
    s = _stats(x)
    assert threshold(s, "entropy") == pytest.approx(s.absmax, rel=0.02)


def test_entropy_keeps_every_level_of_discrete_data() -> None:
    """17-level pixels: KL is 0 both keeping all levels and clipping all into one bin; keep them all."""
    x = np.random.default_rng(4).integers(0, 17, 50_000).astype(np.float32) / 16
    s = _stats(x)
    assert threshold(s, "entropy") == pytest.approx(1.0)


def _kl_direct(h: np.ndarray, i: int, levels: int) -> float:
    """KL(P||Q) by definition, bin by bin (the reference the closed form must match)."""
    p = h[:i].astype(np.float64).copy()
    p[i - 1] += h[i:].sum()
    q = np.zeros(i)
    groups = (np.arange(i) * levels) // i
    for gi in range(levels):
        members = groups == gi
        nz = members & (p > 0)
        if nz.any():
            q[nz] = h[:i][members].sum() / nz.sum()
    p, q = p / p.sum(), q / q.sum()
    if np.any((p > 0) & (q == 0)):
        return np.inf
    m = p > 0
    return float((p[m] * np.log(p[m] / q[m])).sum())


def test_closed_form_kl_matches_the_definition() -> None:
    rng = np.random.default_rng(2)
    h = rng.integers(0, 50, 300).astype(np.float64)
    h[rng.random(300) < 0.3] = 0  # zero bins, including some just below candidate thresholds
    cands = np.arange(16, 301, 7)
    fast = kl_divergences(h, cands, levels=16)
    slow = np.array([_kl_direct(h, int(i), 16) for i in cands])
    assert np.array_equal(np.isinf(fast), np.isinf(slow))
    finite = np.isfinite(slow)
    np.testing.assert_allclose(fast[finite], slow[finite], rtol=1e-9, atol=1e-12)


def test_entropy_of_empty_histogram_is_absmax() -> None:
    assert entropy_threshold(np.zeros(2048), 0.0, absmax=0.0) == 0.0


def test_histogram_range_doubles_and_keeps_every_count() -> None:
    s = TensorStats.empty("t", 64)
    s.update(np.array([0.0, 0.5, 1.0], np.float32))
    assert s.hist_max == 1.0
    s.update(np.array([-3.5], np.float32))  # 1 -> 2 -> 4
    assert s.hist_max == 4.0 and s.absmax == 3.5 and s.min == -3.5 and s.max == 1.0
    assert s.hist.sum() + s.zeros == 4 == s.count and s.zeros == 1
    assert s.hist[int(3.5 / s.bin_width)] == 1
    with pytest.raises(OptionError):
        TensorStats.empty("t", 7)


def test_exact_zeros_are_counted_apart() -> None:
    s = TensorStats.empty("t", 8)
    s.update(np.zeros(5, np.float32))
    s.update(np.array([0.0, 2.0], np.float32))
    assert s.zeros == 6 and s.hist.sum() == 1 and s.count == 7 and s.hist_max == 2.0


def test_relu_zero_spike_does_not_drive_entropy_to_clip() -> None:
    x = np.random.default_rng(3).normal(0.0, 1.0, 100_000).astype(np.float32)
    relu = np.maximum(x, 0.0)  # half exact zeros
    s, s_pos = _stats(relu), _stats(x[x > 0])
    assert threshold(s, "entropy") == pytest.approx(threshold(s_pos, "entropy"), rel=0.05)
    assert threshold(s, "entropy") > 0.5 * s.absmax
    # percentile counts the zeros: the 60th percentile of relu(x) is the 20th of its positive half
    p60 = threshold(s, "percentile", ScaleParams(percentile=60.0))
    assert p60 == pytest.approx(np.percentile(relu, 60.0), abs=2 * s.bin_width)
