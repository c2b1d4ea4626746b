"""``ewsvd``: element-wise (Fisher) weighted low-rank approximation.

FWSVD (:mod:`.weighted`) weighs whole output rows, which has a closed form
(an SVD of diag(√I)·W). The Fisher information is really per element,
F_ij = E[(∂L/∂W_ij)²], and the loss-aware objective is

    min_{U, V}  Σ_ij F_ij (W − UV)_ij²  =  ‖√F ⊙ (W − UV)‖²_F,

which has no closed form for a general F (Srebro & Jaakkola 2003). It is solved
here by alternating weighted least squares (ALS), started from FWSVD's
row-weighted solution with the row importance I_i = Σ_j F_ij:

* V step: each column j of V solves (Uᵀ diag(F_:j) U) v_j = Uᵀ diag(F_:j) W_:j,
* U step: each row i of U solves (V diag(F_i:) Vᵀ) u_i = V diag(F_i:) W_i:ᵀ,

each a small r×r system, solved for all rows/columns at once (batched Cholesky
with a tiny ridge). Each exact half-step cannot increase the objective; the
best iterate is kept, so the result is never worse than its FWSVD start. The
budget is ``max_iters`` full (V + U) iterations, stopped early when an iteration
improves the objective by less than ``rel_tol`` of its value. The factors are
balanced at the end (√Σ of U·V split into both, like the other methods).

Cost per iteration ≈ 2·out·in·r² flops (the r×r normal matrices), so it is
meant for encoder-sized layers; :func:`elementwise_lowrank` returns the
objective per iteration next to FWSVD's for reports.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch

from .decompose import Factors, as_factors, register_decomposition, split_svd
from .stats import CalibrationError, LayerStats
from .weighted import FLOOR, _floored, require_stats

METHOD = "ewsvd"
DEFAULT_MAX_ITERS = 10
DEFAULT_REL_TOL = 1e-3
DEFAULT_RIDGE = 1e-10  # relative to each normal matrix's mean diagonal
_CHUNK_ELEMENTS = 1 << 24  # bound on (batch rows × r·r) held at once (128 MiB in float64)
_BUDGET: ContextVar[tuple[int, float] | None] = ContextVar("ewsvd_budget", default=None)


@dataclass
class ElementwiseFactors(Factors):
    """Factors plus the weighted objective of the result and of its FWSVD start.

    ``objective`` and ``fwsvd_objective`` are Σ F ⊙ (W − UV)² in the units of the
    given F, on the weights ALS minimises (entries below FLOOR·max raised to it;
    :func:`weighted_objective` gives the unfloored value); ``history`` holds the
    objective after each full iteration.
    ``singular_values`` is FWSVD's full weighted spectrum (what rank policies read).
    """

    objective: float = math.nan
    fwsvd_objective: float = math.nan
    iterations: int = 0
    converged: bool = False
    history: list[float] = field(default_factory=list)

    @property
    def improvement(self) -> float:
        """1 − objective / FWSVD's objective (0 when FWSVD was already exact)."""
        if not self.fwsvd_objective > 0:
            return 0.0
        return 1.0 - self.objective / self.fwsvd_objective


def weighted_objective(weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor, fisher: torch.Tensor) -> float:
    """Σ_ij F_ij (W − UV)_ij² in float64."""
    w = weight.detach().to(torch.float64)
    diff = w - u.detach().to(torch.float64) @ v.detach().to(torch.float64)
    return float((fisher.detach().to(torch.float64).to(w.device) * diff.square()).sum())


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Batched small factorizations run single-threaded.

    With several intra-op threads, batched r×r Cholesky/LU go through a threaded
    LAPACK path that is ~40x slower on a shared 2-core machine (and batched LU
    returned corrupt pivots in one MKL build); one thread is fast and safe.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _spd_solve(lower: torch.Tensor, b: torch.Tensor, ridge: float) -> torch.Tensor:
    """Solve A_k x_k = b_k for a batch of symmetric PSD r×r matrices given by their lower triangles.

    ``lower`` is modified in place (ridge added to its diagonal): Cholesky reads only
    the lower triangle, so the upper one is never filled. The ridge is relative to
    each matrix's mean diagonal and is raised ×100 for any matrix that does not factor.
    """
    diag = lower.diagonal(dim1=-2, dim2=-1)
    scale = diag.mean(-1).clamp_min(torch.finfo(lower.dtype).tiny)
    diag.add_(ridge * scale[:, None])
    added = ridge
    with _one_thread():
        for _ in range(8):
            chol, info = torch.linalg.cholesky_ex(lower)
            if not bool(info.any()):
                y = torch.linalg.solve_triangular(chol, b.unsqueeze(-1), upper=False)
                return torch.linalg.solve_triangular(chol.mT, y, upper=True).squeeze(-1)
            bump = max(added, 1e-12) * 99.0
            diag.add_(bump * scale[:, None])
            added += bump
    raise CalibrationError(f"--method {METHOD}: a weighted least-squares system stayed singular with ridge {added:.3g}",
                           fix="use --method fwsvd, or give more --calib-data so the Fisher weights are positive")


def _solve_side(weighted_target: torch.Tensor, fisher: torch.Tensor, basis: torch.Tensor, ridge: float) -> torch.Tensor:
    """Rows x_b of (Σ_k F[b,k] β_k β_kᵀ) x_b = Σ_k (F⊙W)[b,k] β_k: each row's weighted least squares.

    ``fisher``: (n, m) weights, ``weighted_target``: (n, m) = F ⊙ W, ``basis``: (m, r) rows β_k.
    The normal matrices are built as one GEMM against the packed lower triangle of
    β_k β_kᵀ, in chunks of rows so memory stays bounded.
    """
    n, _ = fisher.shape
    r = basis.shape[1]
    il = torch.tril_indices(r, r, device=basis.device)
    flat = il[0] * r + il[1]
    packed = basis[:, il[0]] * basis[:, il[1]]  # (m, r(r+1)/2)
    rhs = weighted_target @ basis  # (n, r)
    out = torch.empty(n, r, dtype=basis.dtype, device=basis.device)
    step = max(1, _CHUNK_ELEMENTS // packed.shape[1])
    for start in range(0, n, step):
        stop = min(n, start + step)
        lower = torch.zeros(stop - start, r * r, dtype=basis.dtype, device=basis.device)
        lower.index_copy_(1, flat, fisher[start:stop] @ packed)
        out[start:stop] = _spd_solve(lower.view(stop - start, r, r), rhs[start:stop], ridge)
    return out


def _balanced(u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Same product U·V, with √Σ of the product split into both factors (QR of each side, SVD of the core)."""
    qu, ru = torch.linalg.qr(u)
    qv, rv = torch.linalg.qr(v.T)
    left, s, right_t = torch.linalg.svd(ru @ rv.T)
    root = s.sqrt()
    return (qu @ left) * root, root[:, None] * (right_t @ qv.T)


def _fisher_matrix(stats: LayerStats | None, shape: tuple[int, int], where: str | None = None) -> torch.Tensor:
    value = require_stats(METHOD, stats, where)
    fisher = value.detach().to(torch.float64)
    if tuple(fisher.shape) != shape:
        raise CalibrationError(f"--method {METHOD}: fisher_elements is {tuple(fisher.shape)}, the layer needs {shape}",
                               fix="collect the calibration statistics on the same model being compressed")
    if not bool(torch.isfinite(fisher).all()) or bool((fisher < 0).any()):
        raise CalibrationError(f"--method {METHOD}: fisher_elements has negative or non-finite entries",
                               fix="collect it with collect_fisher(..., per_element=True) (squared gradients)")
    return fisher


def elementwise_lowrank(weight: torch.Tensor, rank: int, fisher: torch.Tensor, *,
                        max_iters: int = DEFAULT_MAX_ITERS, rel_tol: float = DEFAULT_REL_TOL,
                        ridge: float = DEFAULT_RIDGE) -> ElementwiseFactors:
    """Rank-``rank`` U, V minimising ‖√F ⊙ (W − UV)‖²_F by ALS from FWSVD; see the module docstring.

    ``fisher`` is the (out, in) per-element weight (any positive scale). Entries
    are floored at FLOOR·max like FWSVD's rows so no element is ignored outright.
    """
    if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 0:
        raise CalibrationError(f"--method {METHOD}: max_iters must be an integer >= 0, got {max_iters!r}",
                               fix="pass max_iters=15 (or 0 for FWSVD's solution)")
    if not rel_tol >= 0:
        raise CalibrationError(f"--method {METHOD}: rel_tol must be >= 0, got {rel_tol!r}", fix="pass rel_tol=1e-4")
    w = weight.detach().to(torch.float64)
    f_in = fisher.detach().to(torch.float64).to(w.device)
    top = float(f_in.max()) if f_in.numel() else 0.0
    # normalised weights: the argmin does not depend on F's scale, the conditioning does
    f_unit = f_in / top if top > 0 else torch.ones_like(w)
    # FWSVD's start: row importance I_i = Σ_j F_ij, floored exactly as --method fwsvd floors fisher_rows
    root = _floored(f_unit.sum(dim=1)).sqrt()
    u, v, spectrum = split_svd(root[:, None] * w, rank)
    u = u / root[:, None]
    f = f_unit.clamp_min(FLOOR)
    fw = f * w

    def objective(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((f * (w - a @ b).square()).sum())

    start = objective(u, v)
    best = (start, u, v)
    history: list[float] = []
    converged = start <= 1e-24 * float((f * w.square()).sum())  # already exact (full rank)
    iterations = 0
    previous = start
    while not converged and iterations < max_iters:
        v = _solve_side(fw.T, f.T, u, ridge).T  # columns of V given U
        u = _solve_side(fw, f, v.T, ridge)  # rows of U given V
        iterations += 1
        value = objective(u, v)
        history.append(value)
        if value < best[0]:
            best = (value, u, v)
        converged = previous - value <= rel_tol * max(previous, 0.0)
        previous = value
    value, u, v = best
    if u.shape[1]:
        u, v = _balanced(u, v)
    unit = top if top > 0 else 1.0  # objectives back in the units of the given F
    out = as_factors(u, v, spectrum, weight.dtype)
    return ElementwiseFactors(u=out.u, v=out.v, singular_values=out.singular_values,
                              objective=value * unit, fwsvd_objective=start * unit,
                              iterations=iterations, converged=converged, history=[h * unit for h in history])


@contextlib.contextmanager
def ewsvd_budget(max_iters: int = DEFAULT_MAX_ITERS, rel_tol: float = DEFAULT_REL_TOL) -> Iterator[None]:
    """The iteration budget of ``--method ewsvd`` inside the block, for callers that go through
    :func:`~pela_export.lowrank.factorize_model` (which passes no method options)::

        with ewsvd_budget(max_iters=4):
            factorize_model(model, method="ewsvd", stats=stats)
    """
    token = _BUDGET.set((max_iters, rel_tol))
    try:
        yield
    finally:
        _BUDGET.reset(token)


@register_decomposition(
    METHOD, summary="element-wise Fisher-weighted factors (ALS from FWSVD)", requires="fisher_elements",
    collect={"abs_mean", "gram"}, fisher="elements",
    missing_fix=("give labelled --calib-data (the element-wise method weighs every weight by its loss gradients), "
                 "or use --method asvd/whiten/svd"))
def elementwise_weighted_svd(weight: torch.Tensor, rank: int, stats: LayerStats | None = None, *,
                             max_iters: int | None = None, rel_tol: float | None = None) -> Factors:
    """Element-wise Fisher-weighted factors from ``stats.fisher_elements`` (ALS from FWSVD).

    The budget is ``max_iters``/``rel_tol`` when given, else :func:`ewsvd_budget`'s, else the defaults.
    """
    fisher = _fisher_matrix(stats, (weight.shape[0], weight.shape[1]))
    budget_iters, budget_tol = _BUDGET.get() or (DEFAULT_MAX_ITERS, DEFAULT_REL_TOL)
    return elementwise_lowrank(weight, rank, fisher, max_iters=budget_iters if max_iters is None else max_iters,
                               rel_tol=budget_tol if rel_tol is None else rel_tol)
