"""Data-weighted decompositions: the same U (out×r), V (r×in) as plain SVD, but
minimising the error that matters for the model instead of ‖W − UV‖_F.

* ``fwsvd`` (Fisher-weighted, Hsu et al. 2022): min ‖diag(√I)(W − UV)‖_F with
  I the per-output-row Fisher importance; rows the loss is sensitive to are kept better.
* ``asvd`` (activation-aware, Yuan et al. 2023): min ‖(W − UV)S‖_F with
  S = diag(mean|x|^α); input channels with large activations (outliers) are kept better.
* ``whiten`` (SVD-LLM, Wang et al. 2024): min ‖(W − UV)L‖_F with LLᵀ = XᵀX/n,
  i.e. exactly the layer's output error on the calibration inputs; the truncation
  loss equals the dropped singular values of W·L.
* ``ewsvd`` (element-wise Fisher, :mod:`.elementwise`): min ‖√F ⊙ (W − UV)‖_F with
  F the per-weight Fisher information; no closed form, solved by alternating
  weighted least squares from the FWSVD solution.

Each scales W, takes the plain SVD (√Σ split into both factors), and folds the
inverse scaling into the factor on the scaled side, so exports are unchanged.
"""
from __future__ import annotations

import torch

from .decompose import DECOMPOSITIONS, Factors, as_factors, register_decomposition, split_svd
from .stats import CalibrationError, LayerStats

ACTIVATION_FIX = "give --calib-data so activation statistics can be collected, or use --method svd"
FLOOR = 1e-6  # relative floor on importances/scales, so the inverse scaling stays finite
DEFAULT_ALPHA = 0.5


def require_stats(method: str, stats: LayerStats | None, where: str | None = None) -> torch.Tensor:
    """The statistic weighted ``method`` needs (its spec's ``requires``); a clear error naming the flag when missing."""
    spec = DECOMPOSITIONS.get(method)
    field, fix = spec.requires or "", spec.missing_fix
    value = getattr(stats, field, None) if stats is not None else None
    if value is None:
        raise CalibrationError(f"--method {method} needs calibration statistics ({field}), none were given",
                               fix=fix, where=where)
    return value


def _floored(values: torch.Tensor) -> torch.Tensor:
    """Clamp to FLOOR·max so a channel/row never seen gets a tiny weight, not a zero one."""
    top = float(values.max()) if values.numel() else 0.0
    if top <= 0.0:
        return torch.ones_like(values)  # nothing measured: unweighted
    return values.clamp_min(top * FLOOR)


def _vector(stat: torch.Tensor, size: int, what: str, method: str) -> torch.Tensor:
    vec = stat.detach().to(torch.float64).reshape(-1)
    if vec.numel() != size:
        raise CalibrationError(f"--method {method}: {what} has {vec.numel()} entries, the layer needs {size}",
                               fix="collect the calibration statistics on the same model being compressed")
    return vec


@register_decomposition(
    "fwsvd", summary="Fisher-weighted SVD, rows weighted by loss gradients", requires="fisher_rows",
    collect={"abs_mean", "gram"}, fisher="rows",
    missing_fix="give labelled --calib-data (FWSVD weighs rows by loss gradients), or use --method asvd/whiten/svd")
def fisher_weighted_svd(weight: torch.Tensor, rank: int, stats: LayerStats | None = None) -> Factors:
    """SVD of diag(√I)·W; U ← diag(1/√I)·U so U·V approximates W itself."""
    w = weight.detach().to(torch.float64)
    rows = require_stats("fwsvd", stats)
    root = _floored(_vector(rows, w.shape[0], "fisher_rows", "fwsvd").to(w.device)).sqrt()
    u, v, s = split_svd(root[:, None] * w, rank)
    return as_factors(u / root[:, None], v, s, weight.dtype)


@register_decomposition("asvd", summary="activation-aware SVD, input channels scaled by mean |x|^alpha",
                        requires="abs_mean", collect={"abs_mean"}, options={"asvd_alpha": "alpha"},
                        missing_fix=ACTIVATION_FIX)
def activation_aware_svd(weight: torch.Tensor, rank: int, stats: LayerStats | None = None, *,
                         alpha: float = DEFAULT_ALPHA) -> Factors:
    """SVD of W·S with S = diag(mean|x|^α); V ← V·S⁻¹. α = 0 is plain SVD, 0.5 is ASVD's default."""
    w = weight.detach().to(torch.float64)
    means = require_stats("asvd", stats)
    scale = _floored(_vector(means, w.shape[1], "abs_mean", "asvd").to(w.device)).pow(float(alpha))
    u, v, s = split_svd(w * scale[None, :], rank)
    return as_factors(u, v / scale[None, :], s, weight.dtype)


def cholesky_with_jitter(gram: torch.Tensor, max_tries: int = 12) -> torch.Tensor:
    """Lower-triangular L with LLᵀ = gram + jitter·I, jitter raised ×10 from 0 until it factors.

    Too few calibration rows (n < in) or dead channels make XᵀX singular; the
    smallest jitter that works keeps L as close to the true whitening as possible.
    """
    g = gram.to(torch.float64)
    eye = torch.eye(g.shape[0], dtype=g.dtype, device=g.device)
    base = max(float(g.diagonal().mean()), 1e-300)
    jitter = 0.0
    for attempt in range(max_tries):
        chol, info = torch.linalg.cholesky_ex(g + jitter * eye)
        if int(info) == 0 and bool(torch.isfinite(chol).all()):
            return chol
        jitter = base * 1e-10 * 10.0 ** attempt
    raise CalibrationError(f"--method whiten: XᵀX is not positive definite even with jitter {jitter:.3g}",
                           fix="give more or more varied --calib-data, or use --method asvd")


@register_decomposition("whiten", summary="SVD-LLM whitening by the Cholesky factor of XᵀX", requires="gram",
                        collect={"gram"}, missing_fix=ACTIVATION_FIX)
def whitened_svd(weight: torch.Tensor, rank: int, stats: LayerStats | None = None) -> Factors:
    """SVD of W·L (LLᵀ = XᵀX/n); V ← V·L⁻¹ by a triangular solve (never an explicit inverse)."""
    w = weight.detach().to(torch.float64)
    gram = require_stats("whiten", stats)
    if tuple(gram.shape) != (w.shape[1], w.shape[1]):
        raise CalibrationError(f"--method whiten: gram is {tuple(gram.shape)}, the layer needs {(w.shape[1], w.shape[1])}",
                               fix="collect the calibration statistics on the same model being compressed")
    chol = cholesky_with_jitter(gram.detach().to(w.device))
    u, v, s = split_svd(w @ chol, rank)
    v = torch.linalg.solve_triangular(chol, v, upper=False, left=False)  # solves V'·L = V
    return as_factors(u, v, s, weight.dtype)


# Registers the element-wise weighted method (``ewsvd``, ALS from FWSVD); imported here, after the
# names it uses exist, so every importer of the weighted methods sees it in DECOMPOSITIONS.
from . import elementwise as _elementwise  # noqa: E402,F401
