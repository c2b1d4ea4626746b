"""How closely the compressed model follows the original.

Top-1 against labels needs a labelled dataset; top-1 *agreement* and logit
cosine similarity need only the reference model, so they are always reported
and are the main signal when no labels are available.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import DatasetError, OptionError, VerificationError
from ._ort import check_input_name, make_session, resolve_output_name
from .latency import eval_mode


def _as_rows(logits: np.ndarray, what: str) -> np.ndarray:
    """View logits as (samples, classes); extra leading dims (e.g. tokens) become samples."""
    arr = np.asarray(logits)
    if arr.ndim < 2 or arr.shape[-1] < 1 or arr.size == 0:
        raise VerificationError(f"{what} logits must be shaped (samples, classes), got {arr.shape}",
                                fix="collect logits from the model's classification output")
    return arr.reshape(-1, arr.shape[-1]).astype(np.float64)


def _row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row cosine; two all-zero rows count as identical (1), one zero row as 0."""
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    denom = na * nb
    cos = np.divide((a * b).sum(axis=1), denom, out=np.zeros_like(denom), where=denom > 0)
    cos[(na == 0) & (nb == 0)] = 1.0
    return np.clip(cos, -1.0, 1.0)


def evaluate_logits(logits_ref: np.ndarray, logits_cand: np.ndarray, labels: np.ndarray | None = None,
                    num_classes: int | None = None) -> dict[str, Any]:
    """Compare candidate logits with reference logits (and labels when usable).

    Top-1 accuracies are None when there are no labels, or the labels' class
    count does not match the logits (``num_classes`` of the dataset differs, or
    a label falls outside the logit columns); ``top1_skipped`` says why.
    """
    ref, cand = _as_rows(logits_ref, "reference"), _as_rows(logits_cand, "candidate")
    if ref.shape != cand.shape:
        raise VerificationError(
            f"reference logits {ref.shape} and candidate logits {cand.shape} differ in shape",
            fix="evaluate both models on the same inputs and compare the same output")
    n, c = ref.shape
    pred_ref, pred_cand = ref.argmax(axis=1), cand.argmax(axis=1)
    cos = _row_cosine(ref, cand)
    out: dict[str, Any] = {
        "n_samples": int(n), "num_classes": int(c),
        "top1_reference": None, "top1_candidate": None, "top1_delta": None, "top1_skipped": None,
        "top1_agreement": float((pred_ref == pred_cand).mean()),
        "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
        "max_abs_diff": float(np.abs(ref - cand).max()),
    }
    if labels is None:
        out["top1_skipped"] = "no labels"
        return out
    lab = np.asarray(labels).reshape(-1)
    if lab.shape[0] != n:
        raise DatasetError(f"got {lab.shape[0]} labels for {n} logit rows",
                           fix="pass one label per evaluated sample")
    if not np.issubdtype(lab.dtype, np.integer):
        raise DatasetError(f"labels must be integer class ids, got dtype {lab.dtype}",
                           fix="use a dataset with integer class labels")
    if num_classes is not None and num_classes != c:
        out["top1_skipped"] = f"dataset has {num_classes} classes but the model outputs {c}"
        return out
    if lab.min() < 0 or lab.max() >= c:
        out["top1_skipped"] = f"labels span [{int(lab.min())}, {int(lab.max())}] but the model outputs {c} classes"
        return out
    out["top1_reference"] = float((pred_ref == lab).mean())
    out["top1_candidate"] = float((pred_cand == lab).mean())
    out["top1_delta"] = out["top1_candidate"] - out["top1_reference"]
    return out


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise OptionError(f"--eval-batch-size must be an integer >= 1, got {batch_size!r}",
                          fix="pass --eval-batch-size 32 (or any positive integer)")


def _logits_tensor(out: Any) -> torch.Tensor:
    """The logits from a model output: a tensor, HF-style ``.logits``, or the first element."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits") and isinstance(out.logits, torch.Tensor):
        return out.logits
    if isinstance(out, dict) and out:
        return _logits_tensor(out.get("logits", next(iter(out.values()))))
    if isinstance(out, (tuple, list)) and out:
        return _logits_tensor(out[0])
    raise VerificationError(f"cannot find logits in a model output of type {type(out).__name__}",
                            fix="make the model return a tensor (or an object with .logits)")


def collect_logits_torch(model: nn.Module, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Run ``model`` over ``x`` in batches (eval, inference mode) and stack float32 logits."""
    _check_batch_size(batch_size)
    parts: list[np.ndarray] = []
    with eval_mode(model), torch.inference_mode():
        for i in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size]))
            parts.append(_logits_tensor(model(xb)).float().cpu().numpy())
    return _stack(parts)


def collect_logits_onnx(onnx_path: str | os.PathLike[str], input_name: str, x: np.ndarray, batch_size: int,
                        *, output_name: str | None = None, threads: int | None = None,
                        optimization: str = "all") -> np.ndarray:
    """Run an ONNX model over ``x`` in batches with onnxruntime (CPU) and stack float32 logits."""
    _check_batch_size(batch_size)
    sess, _ = make_session(onnx_path, threads, optimization)
    check_input_name(sess, input_name, onnx_path)
    out_name = resolve_output_name(sess, output_name, onnx_path)
    parts = [np.asarray(sess.run([out_name], {input_name: np.ascontiguousarray(x[i:i + batch_size])})[0],
                        dtype=np.float32)
             for i in range(0, len(x), batch_size)]
    return _stack(parts)


def _stack(parts: list[np.ndarray]) -> np.ndarray:
    if not parts:
        raise DatasetError("no samples to evaluate", fix="use a dataset (or --eval-samples) with at least one sample")
    return np.concatenate(parts, axis=0)
