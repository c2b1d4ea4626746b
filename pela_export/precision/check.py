"""Error of a precision variant against its FP32 source, both run in ONNX Runtime (CPU).

The same comparator as every other stage (:func:`compare_outputs`), so a variant's
error is reported in the same terms as PyTorch vs ONNX. Variants with FP16 I/O get
their inputs cast to the dtype each input declares and their outputs upcast to the
reference dtype, so only precision differences remain.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import OptionError
from ..export.compare import Comparison, compare_outputs
from ..export.runtime import CPU, ort_run, ort_session
from ..models.base import Tolerance
from .registry import Feeds

_NP = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def _cast_feed(session: object, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Cast float feeds to the dtypes the session declares (FP16 inputs of an FP16-I/O variant)."""
    out: dict[str, np.ndarray] = {}
    for i in session.get_inputs():  # type: ignore[attr-defined]
        if i.name not in feed:
            raise OptionError(f"comparison feed lacks input {i.name!r} (it has: {', '.join(feed) or 'nothing'})",
                              fix="feeds must be dicts keyed by the ONNX input names")
        a = np.asarray(feed[i.name])
        out[i.name] = a.astype(_NP[i.type]) if i.type in _NP and a.dtype.kind == "f" else a
    return out


def _stack(batches: list[np.ndarray]) -> np.ndarray:
    """Join one output over batches: along axis 0 when trailing shapes agree, else flattened."""
    if len(batches) == 1:
        return batches[0]
    if all(b.ndim and b.shape[1:] == batches[0].shape[1:] for b in batches):
        return np.concatenate(batches, axis=0)
    return np.concatenate([b.ravel() for b in batches])


def compare_precision(fp32_path: str | os.PathLike[str], variant_path: str | os.PathLike[str], feeds: Feeds,
                      tol: Tolerance, *, threads: int | None = None, variant_name: str = "variant",
                      providers: Sequence[str] = (CPU,)) -> Comparison:
    """Run both models on every feed and compare all outputs (batches joined) within ``tol``.

    On the CPU provider this *understates* FP16 error: ONNX Runtime runs ops without
    an FP16 CPU kernel in FP32 and drops the fp32→fp16→fp32 Cast pairs between them,
    so mostly weight rounding (and graph outputs) is seen, and intermediate overflow
    is hidden. Pass ``providers=("CUDAExecutionProvider",)`` on a GPU for real FP16.
    """
    if not feeds:
        raise OptionError("no batches to compare on", where="precision check",
                          fix="pass at least one calibration or verification batch")
    ref_sess = ort_session(fp32_path, threads=threads, providers=providers)
    cand_sess = ort_session(variant_path, threads=threads, providers=providers)
    refs: dict[str, list[np.ndarray]] = {}
    cands: dict[str, list[np.ndarray]] = {}
    for feed in feeds:
        for name, value in ort_run(ref_sess, _cast_feed(ref_sess, feed)).items():
            refs.setdefault(name, []).append(value)
        for name, value in ort_run(cand_sess, _cast_feed(cand_sess, feed)).items():
            cands.setdefault(name, []).append(value)
    reference = {k: _stack(v) for k, v in refs.items()}
    candidate = {}
    for k, v in cands.items():
        c = _stack(v)
        r = reference.get(k)
        if r is not None and r.dtype.kind == "f" and c.dtype.kind == "f" and c.dtype != r.dtype:
            c = c.astype(r.dtype)  # FP16 I/O: compare values, not dtypes
        candidate[k] = c
    return compare_outputs(reference, candidate, tol, ref_name="fp32 onnxruntime",
                           cand_name=f"{variant_name} onnxruntime")
