"""How much a layer's *outputs* suffer from truncation, measured on calibration data.

``rel_error`` = ‖W − UV‖_F/‖W‖_F is what plain SVD minimises, and it is exact
only if the layer's inputs were isotropic. On real inputs the output error of
the layer (bias cancels) is

    output_error = ‖X(W − UV)ᵀ‖_F / ‖XWᵀ‖_F = √tr(D G Dᵀ) / √tr(W G Wᵀ),  D = W − UV, G = XᵀX/n.

The **risk score** of a layer is plain SVD's output error divided by its weight
error at the same rank, i.e. how far the table's ``rel_error`` misstates the
damage plain SVD does to the layer's outputs. ≈ 1: ``rel_error`` is an honest
estimate. ≫ 1: the inputs concentrate energy (outlier channels, correlated
features) in exactly the directions SVD drops, so plain SVD hurts this layer far
more than its ``rel_error`` says; give it more rank or use ``--method whiten``/``asvd``.
< 1: the dropped directions are rarely excited; safer than it looks.
``weighted_error`` (the "out. error" column) is the damage itself for the factors
actually used, so comparing it across ``--method`` shows what weighting buys
(whitening can help even at risk ≈ 1, by keeping different directions).
"""
from __future__ import annotations

import torch

from .decompose import truncated_svd


def output_error(weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor, gram: torch.Tensor) -> float:
    """Relative output error of U·V against W on inputs with second moment ``gram`` (float64)."""
    w = weight.detach().to(torch.float64)
    g = gram.detach().to(torch.float64).to(w.device)
    diff = w - u.detach().to(torch.float64) @ v.detach().to(torch.float64)
    num = float(((diff @ g) * diff).sum().clamp_min(0.0))
    den = float(((w @ g) * w).sum().clamp_min(0.0))
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return (num / den) ** 0.5


def svd_risk(weight: torch.Tensor, rank: int, gram: torch.Tensor) -> float:
    """Plain SVD's output error / weight error at ``rank`` (1.0 when it loses nothing either way)."""
    w = weight.detach().to(torch.float64)
    f = truncated_svd(w, rank)
    diff_norm = float(torch.linalg.norm(w - f.u @ f.v))
    w_norm = float(torch.linalg.norm(w))
    if w_norm == 0.0 or diff_norm <= 1e-12 * w_norm:
        return 1.0
    return output_error(w, f.u, f.v, gram) / (diff_norm / w_norm)
