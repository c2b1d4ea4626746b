"""The one output comparator: explicit tolerances, every failing output listed.

Used for PyTorch vs ONNX Runtime, ONNX vs simplified ONNX and, later, ONNX vs
TensorRT, so that all stages judge agreement by the same rule:
``|cand - ref| <= atol + rtol * |ref|`` elementwise (numpy.isclose semantics).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import VerificationError
from ..tolerance import Tolerance

#: Keeps relative error finite where the reference is exactly zero.
REL_EPS = 1e-12

DEFAULT_FIX = ("raise --atol/--rtol if the gap is expected (e.g. fp16), "
               "or try --legacy-exporter / --simplifier none")


@dataclass
class OutputStats:
    """Agreement of one named output; ``problem`` is set when it fails."""

    name: str
    ok: bool
    ref_shape: list[int] | None = None
    cand_shape: list[int] | None = None
    ref_dtype: str | None = None
    cand_dtype: str | None = None
    numel: int = 0
    max_abs_err: float | None = None
    mean_abs_err: float | None = None
    max_rel_err: float | None = None
    num_out_of_tol: int = 0
    nonfinite_mismatch: int = 0
    worst_index: list[int] | None = None
    worst_ref: float | None = None
    worst_cand: float | None = None
    worst_allowed: float | None = None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Comparison:
    """All outputs of one comparison; :meth:`raise_if_failed` turns it into an error."""

    ref_name: str
    cand_name: str
    tol: Tolerance
    outputs: list[OutputStats] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs)

    @property
    def failed(self) -> list[OutputStats]:
        return [o for o in self.outputs if not o.ok]

    def failures(self) -> list[str]:
        """One line per failing output: what was observed vs what was allowed."""
        return [f"{o.name}: {o.problem}" for o in self.failed]

    def raise_if_failed(self, stage: str, *, fix: str = DEFAULT_FIX) -> None:
        if self.ok:
            return
        raise VerificationError(
            f"{self.cand_name} disagrees with {self.ref_name} on {len(self.failed)} of "
            f"{len(self.outputs)} output(s) (atol={self.tol.atol:g}, rtol={self.tol.rtol:g})",
            failures=self.failures(), fix=fix, where=stage)

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref_name, "cand": self.cand_name, "ok": self.ok,
                "tolerance": asdict(self.tol), "outputs": [o.to_dict() for o in self.outputs]}


def _describe_gap(s: OutputStats, tol: Tolerance) -> str:
    return (f"{s.num_out_of_tol}/{s.numel} elements out of tolerance; worst at {s.worst_index}: "
            f"|{s.worst_cand:.6g} - {s.worst_ref:.6g}| = {abs(s.worst_cand - s.worst_ref):.3g} > allowed "
            f"{s.worst_allowed:.3g} (atol {tol.atol:g} + rtol {tol.rtol:g}*|ref|); "
            f"max abs err {s.max_abs_err:.3g}, mean abs err {s.mean_abs_err:.3g}, max rel err {s.max_rel_err:.3g}")


def compare_arrays(name: str, ref: np.ndarray, cand: np.ndarray, tol: Tolerance) -> OutputStats:
    """Compare one output pair; never raises, the verdict is in the result."""
    ref, cand = np.asarray(ref), np.asarray(cand)
    s = OutputStats(name=name, ok=False, ref_shape=list(ref.shape), cand_shape=list(cand.shape),
                    ref_dtype=str(ref.dtype), cand_dtype=str(cand.dtype), numel=int(ref.size))
    if ref.shape != cand.shape:
        s.problem = f"shape mismatch: {s.cand_shape} (candidate) vs {s.ref_shape} (reference)"
        return s
    if ref.dtype != cand.dtype:
        s.problem = f"dtype mismatch: {cand.dtype} (candidate) vs {ref.dtype} (reference)"
        return s
    if ref.size == 0:
        s.ok = True
        s.max_abs_err = s.mean_abs_err = s.max_rel_err = 0.0
        return s
    r, c = ref.astype(np.float64), cand.astype(np.float64)
    both_nan = np.isnan(r) & np.isnan(c)
    same_inf = np.isinf(r) & (r == c)
    finite = np.isfinite(r) & np.isfinite(c)
    s.nonfinite_mismatch = int((~finite & ~both_nan & ~same_inf).sum())
    r0, c0 = np.where(finite, r, 0.0), np.where(finite, c, 0.0)
    diff = np.abs(c0 - r0)
    rel = diff / (np.abs(r0) + REL_EPS)
    allowed = tol.atol + tol.rtol * np.abs(r0)
    bad = (finite & (diff > allowed)) | (~finite & ~both_nan & ~same_inf)
    s.max_abs_err = float(diff.max())
    s.mean_abs_err = float(diff[finite].mean()) if finite.any() else 0.0
    s.max_rel_err = float(rel.max())
    s.num_out_of_tol = int(bad.sum())
    # worst = the element furthest past its allowance (or the largest gap when all pass)
    score = np.where(bad, np.where(finite, diff - allowed, np.inf), -np.inf) if bad.any() else diff
    worst = np.unravel_index(int(np.argmax(score)), ref.shape) if ref.ndim else ()
    s.worst_index = [int(i) for i in worst]
    s.worst_ref, s.worst_cand = float(r[worst]), float(c[worst])
    s.worst_allowed = float(allowed[worst])
    s.ok = s.num_out_of_tol == 0
    if not s.ok:
        s.problem = _describe_gap(s, tol)
        if s.nonfinite_mismatch:
            s.problem = f"{s.nonfinite_mismatch} NaN/Inf element(s) differ; " + s.problem
    return s


def compare_outputs(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], tol: Tolerance, *,
                    ref_name: str = "pytorch", cand_name: str = "onnxruntime") -> Comparison:
    """Compare every output by name; missing/extra outputs are failures too."""
    result = Comparison(ref_name=ref_name, cand_name=cand_name, tol=tol)
    for name, ref in reference.items():
        if name not in candidate:
            result.outputs.append(OutputStats(
                name=name, ok=False, ref_shape=list(np.shape(ref)),
                problem=f"missing from {cand_name} (it has: {', '.join(candidate) or 'nothing'})"))
            continue
        result.outputs.append(compare_arrays(name, ref, candidate[name], tol))
    for name, cand in candidate.items():
        if name not in reference:
            result.outputs.append(OutputStats(
                name=name, ok=False, cand_shape=list(np.shape(cand)),
                problem=f"only in {cand_name}; {ref_name} has: {', '.join(reference) or 'nothing'}"))
    return result
