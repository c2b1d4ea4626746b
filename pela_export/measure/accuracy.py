"""How closely the compressed model follows the original.

Top-1 against labels needs a labelled dataset; top-1 *agreement* and logit
cosine similarity need only the reference model, so they are always reported
and are the main signal when no labels are available.

A model without a classification head (a sentence encoder) is scored by a
linear probe: logistic regression fitted once on the *original* model's
embeddings of the training split, then applied unchanged to the original's and
the compressed model's test embeddings; plus the mean embedding cosine to the
original. ``scoring`` in every result says which of the two was used.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import DatasetError, OptionError, VerificationError
from ..models.io import as_feeds, batch_len, batch_slice
from ._ort import check_input_name, make_session, resolve_output_name
from .latency import eval_mode
from .outputs import row_cosine

#: ``scoring`` values: top-1 of the model's logits, or a linear probe on its embeddings.
CLASSIFIER, EMBEDDING_PROBE = "classifier", "embedding_probe"


def _as_rows(logits: np.ndarray, what: str) -> np.ndarray:
    """View logits as (samples, classes); extra leading dims (e.g. tokens) become samples."""
    arr = np.asarray(logits)
    if arr.ndim < 2 or arr.shape[-1] < 1 or arr.size == 0:
        raise VerificationError(f"{what} logits must be shaped (samples, classes), got {arr.shape}",
                                fix="collect logits from the model's classification output")
    return arr.reshape(-1, arr.shape[-1]).astype(np.float64)


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
    cos = row_cosine(ref, cand)
    out: dict[str, Any] = {
        "n_samples": int(n), "num_classes": int(c),
        "top1_reference": None, "top1_candidate": None, "top1_delta": None, "top1_skipped": None,
        "top1_agreement": float((pred_ref == pred_cand).mean()),
        "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
        "max_abs_diff": float(np.abs(ref - cand).max()),
        "scoring": CLASSIFIER,
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
        # an API argument only: the pipeline evaluates in fixed batches (pipeline.bench.EVAL_BATCH), no flag sets it
        raise OptionError(f"batch_size must be an integer >= 1, got {batch_size!r}",
                          fix="call collect_logits_torch/collect_logits_onnx with batch_size=64 (or any positive integer)")


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


def _trimmed(x: Any) -> Any:
    from ..data.tokens import trim_padding

    return trim_padding(x)


def collect_logits_torch(model: nn.Module, x: Any, batch_size: int) -> np.ndarray:
    """Run ``model`` over ``x`` in batches (eval, inference mode) and stack float32 logits.

    ``x``: one array (single-input models) or ``{input name: array}`` (called with keywords;
    text batches are cut to their longest row, which changes no output).
    """
    _check_batch_size(batch_size)
    parts: list[np.ndarray] = []
    with eval_mode(model), torch.inference_mode():
        for i in range(0, batch_len(x), batch_size):
            xb = _trimmed(batch_slice(x, i, i + batch_size))
            if isinstance(xb, Mapping):
                out = model(**{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in xb.items()})
            else:
                out = model(torch.from_numpy(np.ascontiguousarray(xb)))
            parts.append(_logits_tensor(out).float().cpu().numpy())
    return _stack(parts)


def collect_logits_onnx(onnx_path: str | os.PathLike[str], input_name: str | Sequence[str] | None, x: Any,
                        batch_size: int, *, output_name: str | None = None, threads: int | None = None,
                        optimization: str = "all") -> np.ndarray:
    """Run an ONNX model over ``x`` in batches with onnxruntime (CPU) and stack float32 outputs.

    ``x``: one array fed to ``input_name``, or ``{input name: array}`` for a model with several
    inputs (``input_name`` may then be None or the list of names to feed; default: the graph's inputs).
    """
    _check_batch_size(batch_size)
    sess, _ = make_session(onnx_path, threads, optimization)
    graph_inputs = [i.name for i in sess.get_inputs()]
    if isinstance(x, Mapping):
        names = list(input_name) if isinstance(input_name, (list, tuple)) else graph_inputs
    else:
        names = [input_name if isinstance(input_name, str) else graph_inputs[0]]
    for name in names:
        check_input_name(sess, name, onnx_path)
    out_name = resolve_output_name(sess, output_name, onnx_path)
    parts = [np.asarray(sess.run([out_name], as_feeds(_trimmed(batch_slice(x, i, i + batch_size)), names))[0],
                        dtype=np.float32)
             for i in range(0, batch_len(x), batch_size)]
    return _stack(parts)


# -- models without a classification head: a linear probe on embeddings ------------------------
#: At most this many training examples fit the probe (a seeded subset beyond it).
PROBE_TRAIN_SAMPLES = 10000


@dataclass
class EmbeddingProbe:
    """Logistic regression on standardised embeddings, fitted once on the original model's embeddings."""

    model: Any
    train_samples: int
    classes: list[int]
    fitted_on: str
    train_top1: float

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(_as_rows(embeddings, "embedding")), dtype=np.int64)

    def describe(self) -> dict[str, Any]:
        return {"model": "StandardScaler + LogisticRegression (lbfgs, C=1, max_iter=2000)",
                "fitted_on": self.fitted_on, "train_samples": self.train_samples, "classes": len(self.classes),
                "train_top1": self.train_top1}


def fit_probe(embeddings: np.ndarray, labels: np.ndarray, fitted_on: str = "original model, training split",
              seed: int = 0) -> EmbeddingProbe:
    """Fit the linear probe on ``embeddings`` (the original model's) and integer ``labels``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    emb = _as_rows(embeddings, "training embedding")
    lab = np.asarray(labels).reshape(-1)
    if lab.shape[0] != emb.shape[0]:
        raise DatasetError(f"got {lab.shape[0]} labels for {emb.shape[0]} training embeddings",
                           fix="pass one label per training example")
    if not np.issubdtype(lab.dtype, np.integer):
        raise DatasetError(f"probe labels must be integer class ids, got dtype {lab.dtype}",
                           fix="use a dataset with a label column")
    classes = sorted(int(c) for c in np.unique(lab))
    if len(classes) < 2:
        raise DatasetError(f"the probe needs at least two classes in the training split, got {classes}",
                           fix="pass a labelled training split with several classes (--data TRAIN,TEST)")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0, random_state=seed))
    model.fit(emb, lab)
    train_top1 = float((model.predict(emb) == lab).mean())
    return EmbeddingProbe(model, int(len(lab)), classes, fitted_on, train_top1)


def evaluate_embedding_probe(emb_ref: np.ndarray, emb_cand: np.ndarray, labels: np.ndarray | None = None,
                        probe: EmbeddingProbe | None = None) -> dict[str, Any]:
    """Compare candidate embeddings with the original's: cosine always; with labels and a probe,
    the probe's top-1 on both (same probe, unchanged) and how often their predictions agree."""
    ref, cand = _as_rows(emb_ref, "reference embedding"), _as_rows(emb_cand, "candidate embedding")
    if ref.shape != cand.shape:
        raise VerificationError(f"reference embeddings {ref.shape} and candidate embeddings {cand.shape} differ "
                                "in shape", fix="evaluate both models on the same inputs and compare the same output")
    cos = row_cosine(ref, cand)
    out: dict[str, Any] = {
        "scoring": EMBEDDING_PROBE, "comparison": "embedding", "n_samples": int(ref.shape[0]), "embedding_dim": int(ref.shape[1]),
        "num_classes": None, "top1_reference": None, "top1_candidate": None, "top1_delta": None,
        "top1_agreement": None, "top1_skipped": None,
        "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
        "max_abs_diff": float(np.abs(ref - cand).max()), "probe": probe.describe() if probe else None,
    }
    if labels is None or probe is None:
        out["top1_skipped"] = "no labels" if labels is None else "no probe (no labelled training split)"
        return out
    lab = np.asarray(labels).reshape(-1)
    if lab.shape[0] != ref.shape[0]:
        raise DatasetError(f"got {lab.shape[0]} labels for {ref.shape[0]} embeddings",
                           fix="pass one label per evaluated sample")
    pred_ref, pred_cand = probe.predict(ref), probe.predict(cand)
    out.update({"num_classes": len(probe.classes), "top1_reference": float((pred_ref == lab).mean()),
                "top1_candidate": float((pred_cand == lab).mean()),
                "top1_agreement": float((pred_ref == pred_cand).mean())})
    out["top1_delta"] = out["top1_candidate"] - out["top1_reference"]
    return out


def _stack(parts: list[np.ndarray]) -> np.ndarray:
    if not parts:
        raise DatasetError("no samples to evaluate", fix="use a dataset (or --eval-samples) with at least one sample")
    return np.concatenate(parts, axis=0)
