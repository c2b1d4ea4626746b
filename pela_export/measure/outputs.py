"""How two runs of one model output (e.g. an FP16 variant and its FP32 graph) are compared,
according to what the output is.

The compared output is the first one the model declares: logits of a classifier
(top-1, agreement, cosine: :func:`~pela_export.measure.accuracy.evaluate_logits`) or a
pooled embedding, whose argmax means nothing, so embeddings are compared by cosine
and by whether each sample keeps its nearest neighbour among the evaluated samples.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import VerificationError

#: Output roles compared as embeddings (cosine, nearest-neighbour agreement), not as logits.
EMBEDDING_ROLES = ("embedding", "hidden_state")


def output_role(io: Mapping[str, Any] | None, output_name: str | None = None) -> str:
    """Role of ``output_name`` (default: the first output) in an ``io_to_dict`` record; "logits" when unknown."""
    outputs = list((io or {}).get("outputs") or [])
    for o in outputs:
        if output_name is None or o.get("name") == output_name:
            return str(o.get("role") or "logits")
    return "logits"


def _rows(a: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim < 1 or arr.size == 0:
        raise VerificationError(f"{what} outputs are empty (shape {arr.shape})",
                                fix="compare a non-empty output of the model")
    return arr.reshape(arr.shape[0], -1)


def _unit(a: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    return np.divide(a, norm, out=np.zeros_like(a), where=norm > 0)


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row cosine; two all-zero rows count as identical (1), one zero row as 0."""
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    denom = na * nb
    cos = np.divide((a * b).sum(axis=1), denom, out=np.zeros_like(denom), where=denom > 0)
    cos[(na == 0) & (nb == 0)] = 1.0
    return np.clip(cos, -1.0, 1.0)


def nearest_neighbours(a: np.ndarray) -> np.ndarray:
    """Index of each row's most cosine-similar other row (rows of one set against each other)."""
    u = _unit(a)
    sim = u @ u.T
    np.fill_diagonal(sim, -np.inf)
    return sim.argmax(axis=1)


def compare_embeddings(ref: np.ndarray, cand: np.ndarray) -> dict[str, Any]:
    """Candidate embeddings against reference embeddings of the same samples.

    ``cosine_mean``/``cosine_min``: per-sample cosine; ``neighbour_agreement``: share of
    samples whose nearest other sample (by cosine) is the same under both, the
    retrieval counterpart of top-1 agreement (None below 3 samples).
    """
    r, c = _rows(ref, "reference"), _rows(cand, "candidate")
    if r.shape != c.shape:
        raise VerificationError(f"reference outputs {r.shape} and candidate outputs {c.shape} differ in shape",
                                fix="evaluate both models on the same inputs and compare the same output")
    cos = row_cosine(r, c)
    n = int(r.shape[0])
    agree = float((nearest_neighbours(r) == nearest_neighbours(c)).mean()) if n >= 3 else None
    diff = np.abs(r - c)
    return {"comparison": "embedding", "n_samples": n, "dim": int(r.shape[1]),
            "top1_reference": None, "top1_candidate": None, "top1_delta": None,
            "top1_skipped": "embedding output (no classes): compared by cosine and nearest-neighbour agreement",
            "top1_agreement": None, "neighbour_agreement": agree,
            "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
            "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean())}


def evaluate_outputs(ref: np.ndarray, cand: np.ndarray, role: str = "logits", labels: np.ndarray | None = None,
                     num_classes: int | None = None) -> dict[str, Any]:
    """Compare two runs of one output: as logits (top-1 vs labels, agreement, cosine) or as embeddings."""
    if role in EMBEDDING_ROLES:
        return compare_embeddings(ref, cand)
    from .accuracy import evaluate_logits

    out = evaluate_logits(ref, cand, labels, num_classes=num_classes)
    out.setdefault("mean_abs_diff", float(np.abs(np.asarray(ref, np.float64) - np.asarray(cand, np.float64)).mean()))
    return {"comparison": "logits", **out}


def agreement_summary(acc: Mapping[str, Any], reference: str = "fp32") -> str:
    """A short line for logs: agreement of a logits comparison, cosine of an embedding one."""
    if acc.get("comparison") == "embedding":
        nn = acc.get("neighbour_agreement")
        return (f"embedding cosine with {reference} {acc['cosine_mean']:.6f} (min {acc['cosine_min']:.6f})"
                + (f", nearest-neighbour agreement {nn:.2%}" if nn is not None else ""))
    return f"agreement with {reference} {acc['top1_agreement']:.2%}"
