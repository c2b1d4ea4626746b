"""MPO numerics, free of nn.Module: factorising dimensions, TT-SVD, core layouts,
the contraction used in forward, and least-squares refits of single cores.

Why a separate module: :mod:`.mpo` (the layer) and :mod:`.sharing` (central-tensor
sharing) both need these, and keeping them pure functions makes them testable alone.

Index conventions. ``W`` is ``out × in`` with ``out = i_1⋯i_n`` and ``in = j_1⋯j_n``
(row-major). Core ``k`` is the 4-D tensor ``(d_{k-1}, i_k, j_k, d_k)`` with ``d_0 = d_n = 1``.
The layer *stores* each core as the matrix ``(i_k·d_k) × (d_{k-1}·j_k)`` (see
:func:`core_to_matrix`): that is the left operand of the MatMul in :func:`contract`, so
the exported graph uses the parameter as-is and a shared core stays one initializer.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

from ..errors import OptionError

#: Core counts accepted (the literature uses 3..5; 2 is the central-bond merge).
MIN_CORES, MAX_CORES = 2, 8


def prime_factors(dim: int) -> list[int]:
    """Prime factors with multiplicity (ascending)."""
    out, p, rest = [], 2, dim
    while p * p <= rest:
        while rest % p == 0:
            out.append(p)
            rest //= p
        p += 1
    if rest > 1:
        out.append(rest)
    return out


def _tuples(dim: int, n: int, smallest: int) -> Iterator[tuple[int, ...]]:
    """Non-decreasing tuples of ``n`` factors ``>= smallest`` whose product is ``dim``."""
    if n == 1:
        if dim >= smallest:
            yield (dim,)
        return
    f = smallest
    while f ** n <= dim:
        if dim % f == 0:
            for rest in _tuples(dim // f, n - 1, f):
                yield (f, *rest)
        f += 1


def check_cores(n: object, *, where: str | None = None) -> int:
    """Validate a core count (``--structure-opt cores=N``) without asserting on user input."""
    if isinstance(n, bool) or not isinstance(n, int) or not MIN_CORES <= n <= MAX_CORES:
        raise OptionError(f"MPO core count {n!r} is out of range (expected an int in {MIN_CORES}..{MAX_CORES})",
                          fix="pass --structure-opt cores=3 (or 4, 5) (the usual choices)", where=where)
    return n


def balanced_factors(dim: int, n: int, *, where: str | None = None, what: str = "dimension") -> tuple[int, ...]:
    """``dim`` as ``n`` factors > 1, as equal as possible (least variance of their logs), ascending.

    Balanced factors keep every core small; e.g. ``192, 3 → (4, 6, 8)``.
    """
    check_cores(n, where=where)
    primes = prime_factors(dim) if dim >= 2 else []
    if len(primes) < n:
        shown = " · ".join(map(str, primes)) or str(dim)
        fix = (f"choose --structure-opt cores=N with N <= {len(primes)} for this layer, or leave it out of the MPO layers"
               if len(primes) >= MIN_CORES
               else "leave this layer out of the MPO layers (keep it dense or plain low-rank)")
        raise OptionError(f"{what} {dim} cannot be split into {n} factors > 1 ({dim} = {shown}: "
                          f"{len(primes)} prime factor(s))", fix=fix, where=where)
    return min(_tuples(dim, n, 2), key=lambda fs: sum(math.log(f) ** 2 for f in fs))


def check_factors(factors: Sequence[int], dim: int, n: int, *, where: str | None, what: str) -> tuple[int, ...]:
    """Validate explicitly given factors of ``dim`` (``n`` ints > 1 whose product is ``dim``)."""
    fs = tuple(factors) if isinstance(factors, (list, tuple)) else (factors,)
    ok = all(isinstance(f, int) and not isinstance(f, bool) and f > 1 for f in fs)
    if not ok or len(fs) != n or math.prod(fs) != dim:
        if len(prime_factors(dim)) >= n:
            fix = f"pass {n} factors of {dim} (e.g. {list(balanced_factors(dim, n))}), or omit them"
        else:
            fix = f"use fewer cores; {dim} has too few prime factors"
        raise OptionError(f"{what} factors {list(fs)} do not fit: expected {n} ints > 1 with product {dim}",
                          fix=fix, where=where)
    return fs


def full_bond_dims(out_factors: Sequence[int], in_factors: Sequence[int]) -> list[int]:
    """Bond dimensions ``d_1..d_{n-1}`` at which TT-SVD is exact (rank bound of each unfolding)."""
    sizes = [i * j for i, j in zip(out_factors, in_factors)]
    return [min(math.prod(sizes[:k]), math.prod(sizes[k:])) for k in range(1, len(sizes))]


def interleave(weight: torch.Tensor, out_factors: Sequence[int], in_factors: Sequence[int]) -> torch.Tensor:
    """``W`` as the tensor ``(i_1 j_1, i_2 j_2, …)``: the index order the cores follow."""
    n = len(out_factors)
    t = weight.reshape(*out_factors, *in_factors)
    t = t.permute([x for k in range(n) for x in (k, n + k)])
    return t.reshape([i * j for i, j in zip(out_factors, in_factors)])


def tt_svd(weight: torch.Tensor, out_factors: Sequence[int], in_factors: Sequence[int], *,
           bond_dim: int | None = None, tol: float | None = None, center: int = 0) -> list[torch.Tensor]:
    """Sequential SVD of ``W`` into 4-D cores (float64), then a QR sweep that puts the norm in ``center``.

    Truncation: each bond keeps ``min(bond_dim, exact rank)`` singular values and, with ``tol``,
    the fewest whose discarded tail is ``<= tol·‖W‖/√(n-1)`` (so ``‖W - Ŵ‖ <= tol·‖W‖``).
    Mixed-canonical form (cores left of ``center`` left-orthogonal, right of it right-orthogonal)
    makes the central core carry the layer's information, which is what sharing it relies on.
    """
    n = len(out_factors)
    t = interleave(weight.detach().to(torch.float64), out_factors, in_factors)
    sizes = list(t.shape)
    delta = (tol or 0.0) * float(torch.linalg.norm(t)) / math.sqrt(max(n - 1, 1))
    cores: list[torch.Tensor] = []
    rank, rest = 1, t.reshape(sizes[0], -1)
    for k in range(n - 1):
        u, s, vh = torch.linalg.svd(rest.reshape(rank * sizes[k], -1), full_matrices=False)
        keep = len(s) if bond_dim is None else min(len(s), bond_dim)
        if delta > 0:
            tail = torch.sqrt(torch.flip(torch.cumsum(torch.flip(s.square(), [0]), 0), [0]))  # tail[r] = ‖s[r:]‖
            fits = [r for r in range(1, len(s)) if float(tail[r]) <= delta]
            keep = min(keep, fits[0] if fits else len(s))
        cores.append(u[:, :keep].reshape(rank, out_factors[k], in_factors[k], keep))
        rest, rank = s[:keep, None] * vh[:keep], keep
    cores.append(rest.reshape(rank, out_factors[-1], in_factors[-1], 1))
    for k in range(n - 1, center, -1):  # right-orthogonalise cores after the centre
        a, i, j, b = cores[k].shape
        q, r = torch.linalg.qr(cores[k].reshape(a, i * j * b).T)
        cores[k] = q.T.reshape(q.shape[1], i, j, b)
        cores[k - 1] = torch.einsum("xija,pa->xijp", cores[k - 1], r)
    return cores


def merge_cores(cores: Sequence[torch.Tensor]) -> torch.Tensor:
    """Contract neighbouring 4-D cores into one ``(d_first, Πi, Πj, d_last)`` core."""
    out = cores[0]
    for core in cores[1:]:
        a, i1, j1, _ = out.shape
        _, i2, j2, d = core.shape
        out = torch.einsum("aijb,bklc->aikjlc", out, core).reshape(a, i1 * i2, j1 * j2, d)
    return out


def core_to_matrix(core: torch.Tensor) -> torch.Tensor:
    """4-D core ``(a, i, j, b)`` → stored matrix ``(i·b) × (a·j)``."""
    a, i, j, b = core.shape
    return core.permute(1, 3, 0, 2).reshape(i * b, a * j)


def matrix_to_core(matrix: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`core_to_matrix` for a core of 4-D ``shape``."""
    a, i, j, b = shape
    return matrix.reshape(i, b, a, j).permute(2, 0, 3, 1)


def contract(x: torch.Tensor, mats: Sequence[torch.Tensor], out_factors: Sequence[int],
             in_factors: Sequence[int], bonds: Sequence[int]) -> torch.Tensor:
    """``x @ Wᵀ`` through the cores, never forming ``W``: one reshape + one MatMul per core.

    The state is ``(M, d_{k-1}·j_k, R_k)`` (M = batch × output indices so far, R_k = the
    input indices not yet contracted); ``G_k @ state`` gives ``(M, i_k·d_k, R_k)``, which is
    already the next state after a reshape — no transposes. ``bonds`` = ``d_1..d_{n-1}``.
    """
    lead = x.shape[:-1]
    rest = math.prod(in_factors)
    t = x.reshape(-1, in_factors[0], rest // in_factors[0])
    for k, g in enumerate(mats):
        rest //= in_factors[k]
        t = torch.matmul(g, t)
        if k + 1 < len(mats):
            t = t.reshape(-1, bonds[k] * in_factors[k + 1], rest // in_factors[k + 1])
    return t.reshape(*lead, math.prod(out_factors))


def relative_error(approx: torch.Tensor, target: torch.Tensor) -> float:
    """‖approx − target‖ / ‖target‖ in float64 (0 for a zero target matched exactly)."""
    a, t = approx.detach().to(torch.float64), target.detach().to(torch.float64)
    denom = float(torch.linalg.norm(t))
    diff = float(torch.linalg.norm(a - t))
    return diff / denom if denom > 0 else (0.0 if diff == 0 else math.inf)


def refit_cores(cores: list[torch.Tensor], target: torch.Tensor, out_factors: Sequence[int],
                in_factors: Sequence[int], fixed: set[int], sweeps: int = 2) -> list[torch.Tensor]:
    """Alternating least squares on the free cores (float64), the cores in ``fixed`` untouched.

    With all other cores fixed, ``W`` is linear in core k: ``T[p<, x, p>] = Σ A[p<,a] G[a,x,b] B[b,p>]``,
    so the best ``G`` is ``A⁺ T B⁺`` (pseudo-inverses of the left/right environments). Each update
    can only lower the error; a sweep visits the free cores left→right then right→left.
    """
    cores = [c.detach().to(torch.float64).clone() for c in cores]
    t = interleave(target.detach().to(torch.float64), out_factors, in_factors)
    n, sizes = len(cores), list(t.shape)
    free = [k for k in range(n) if k not in fixed]
    order = free + free[::-1]
    for _ in range(sweeps):
        for k in order:
            left = torch.ones(1, 1, dtype=torch.float64)
            for m in range(k):
                left = (left @ cores[m].reshape(cores[m].shape[0], -1)).reshape(-1, cores[m].shape[-1])
            right = torch.ones(1, 1, dtype=torch.float64)
            for m in range(n - 1, k, -1):
                right = (cores[m].reshape(-1, cores[m].shape[-1]) @ right).reshape(cores[m].shape[0], -1)
            a, i, j, b = cores[k].shape
            y = torch.linalg.pinv(left) @ t.reshape(left.shape[0], -1)
            y = y.reshape(a * sizes[k], right.shape[1]) @ torch.linalg.pinv(right)
            cores[k] = y.reshape(a, i, j, b)
    return cores
