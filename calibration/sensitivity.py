"""Which nodes suffer most from INT8: quantize one node at a time and measure.

For every quantizable node, the model with *only that node* quantized runs on
the calibration batches and its final outputs are compared with FP32
(relative L2 over all float outputs, and max abs). The worst nodes are the
ones worth keeping in higher precision. Cost: one ONNX Runtime session and
run per node, so ``max_batches`` bounds it; use a few batches on big models.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pela_export.errors import DatasetError

from . import graph as g
from .methods import DEFAULT_PERCENTILE
from .qdq import QUANTIZABLE_OPS, QuantTarget, find_targets, insert_qdq
from .statistics import DEFAULT_BINS, ActivationStatistics, collect_statistics

DEFAULT_SENSITIVITY_BATCHES = 4


def output_error(ref: Sequence[Mapping[str, np.ndarray]], cand: Sequence[Mapping[str, np.ndarray]]) -> dict[str, float]:
    """Relative L2 (||cand - ref|| / ||ref||) and max abs error over all float outputs of all batches."""
    num = den = max_abs = 0.0
    for r, c in zip(ref, cand, strict=True):
        for name, rv in r.items():
            if not np.issubdtype(np.asarray(rv).dtype, np.floating):
                continue
            d = np.asarray(c[name], np.float64) - np.asarray(rv, np.float64)
            num += float((d * d).sum())
            den += float((np.asarray(rv, np.float64) ** 2).sum())
            max_abs = max(max_abs, float(np.abs(d).max()) if d.size else 0.0)
    return {"error": float(np.sqrt(num) / max(np.sqrt(den), 1e-30)), "max_abs": max_abs}


def node_sensitivity(model: Any, feeds: Sequence[Mapping[str, np.ndarray]], targets: Sequence[QuantTarget],
                     act_scales: Mapping[str, float], *, threads: int | None = None) -> list[dict[str, Any]]:
    """Per target: the output error with only that node quantized; worst first, with ``rank`` (1 = worst)."""
    if not feeds:
        raise DatasetError("sensitivity needs calibration batches", fix="pass --calib-data with examples")
    base = g.session(model, threads=threads)
    feeds = list(g.micro_batches(feeds, fixed=g.fixed_batch(base)))
    ref = [g.run(base, b) for b in feeds]
    rows = []
    for t in targets:
        sess = g.session(insert_qdq(model, [t], act_scales), threads=threads)
        rows.append({"node": t.node, "op": t.op, **output_error(ref, [g.run(sess, b) for b in feeds])})
    rows.sort(key=lambda r: (-r["error"], r["node"]))
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return rows


def int8_sensitivity(src: str | Path | Any, calib: Sequence[Mapping[str, np.ndarray]], *, method: str = "entropy",
                     percentile: float = DEFAULT_PERCENTILE, ops: Sequence[str] = QUANTIZABLE_OPS,
                     activation_matmul: bool = False, stats: ActivationStatistics | None = None,
                     max_batches: int | None = DEFAULT_SENSITIVITY_BATCHES, bins: int = DEFAULT_BINS,
                     threads: int | None = None) -> list[dict[str, Any]]:
    """Sensitivity report of every quantizable node of ``src`` (path or ModelProto): ``[{node, op, error,
    max_abs, rank}]`` worst first. ``stats`` reuses statistics already collected on ``calib``."""
    model = g.name_nodes(g.load_model(src) if isinstance(src, (str, Path)) else g.copy_model(src))
    batches = list(calib)
    if stats is None:
        stats = collect_statistics(model, batches, bins=bins, threads=threads)
    targets, _ = find_targets(model, ops=ops, activation_matmul=activation_matmul)
    scales = stats.scales(method, percentile=percentile)
    targets = [t for t in targets if all(a in scales for a in t.activations)]
    return node_sensitivity(model, batches[:max_batches] if max_batches else batches, targets, scales, threads=threads)
