"""The inputs used to verify and evaluate a model: a real dataset when one
fits (the model's own or ``--data``), else seeded random inputs, said so.

Image datasets (``digits``, ``fashion-mnist``, ``idx:DIR``) feed image models; text
files (``text:FILE``, ``FILE.tab|.tsv|.csv|.jsonl``, ``TRAIN,TEST``) feed text models,
tokenized with the model's own tokenizer up to its ``sequence`` max (``--max-length``).
One resolver (:func:`dataset_split`) serves evaluation, calibration and the probe.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.opendata import DataSplit, open_data, random_inputs, resolve_spec
from ..data.spec import use_of
from ..models.io import Batch, batch_len
from .context import Context

RANDOM_EVAL_SAMPLES = 64
PROBE_SEED = 0
Select = Callable[[int], "slice | np.ndarray"]


@dataclass
class EvalData:
    """Evaluation inputs: one array (single-input models) or ``{input name: array}``."""

    x: Batch
    labels: np.ndarray | None
    source: str
    num_classes: int | None
    spec: str | None = None
    class_names: list[str] | None = None
    details: dict[str, Any] = field(default_factory=dict)


#: Model-ready inputs of one split of a dataset spec, with labels and provenance (the resolver's record).
Split = DataSplit


def text_columns(ctx: Context) -> tuple[str | None, str | None]:
    """``--text-column`` / ``--label-column`` of this run (None: detect)."""
    return ctx.cfg.data.text_column, ctx.cfg.data.label_column


def dataset_split(ctx: Context, spec: str, flag: str, split: str, select: Select | None = None) -> Split:
    """``split`` ("train"/"test") of a dataset spec, rows chosen by ``select(count)``, ready for the model.

    Resolved by :func:`pela_export.data.opendata.open_data` (the one resolver of ``--data``,
    ``--calib-data`` and ``--train-data``): images resized/normalised to the model input, text
    tokenized with the model's tokenizer. A text spec for an image model (or the reverse) is a DatasetError.
    """
    text_column, label_column = text_columns(ctx)
    return open_data(spec, ctx.loaded, use=use_of(flag), split=split, select=select,
                     text_column=text_column, label_column=label_column)


def image_split(ctx: Context, spec: str, flag: str, split: str,
                select: Callable[[int], slice | np.ndarray]) -> tuple[Batch, np.ndarray | None, int | None, tuple[int, ...]]:
    """Inputs of ``split`` chosen by ``select(count)``, adapted to the model input.

    Returns (inputs, int64 labels, class count, raw image shape). Shared by evaluation
    (first N test images) and calibration/training (seeded train selection). A text spec
    gives ``{input name: array}``, labels None when the file has no label column, and ``()``.
    """
    s = dataset_split(ctx, spec, flag, split, select)
    return s.x, s.labels, s.num_classes, s.raw_shape


def evaluation_data(ctx: Context, limit: int | None = None) -> EvalData:
    """Test-split inputs shaped for the model (first ``limit`` samples, deterministic)."""
    loaded, cfg = ctx.loaded, ctx.cfg
    resolved = resolve_spec(cfg.data.eval_data, loaded, "eval")
    spec = resolved.label
    n = limit if limit is not None else cfg.data.eval_samples
    if resolved.kind == "random":
        ctx.note(f"no dataset for {loaded.name}: accuracy not measured; agreement and cosine use "
                 f"{RANDOM_EVAL_SAMPLES} seeded random inputs (pass --data for real data)")
        return EvalData(random_inputs(loaded, RANDOM_EVAL_SAMPLES, 1), None, "random", None)
    s = dataset_split(ctx, spec, "--data", "test", lambda count: slice(0, n))
    if s.details:  # text
        d = s.details
        source = f"{d['name']} test split ({batch_len(s.x)} samples, max_length {d['max_length']})"
        return EvalData(s.x, s.labels, source, s.num_classes, spec, s.class_names, d)
    if s.raw_shape != tuple(loaded.input_shape) and spec != loaded.default_dataset:
        ctx.note(f"{spec} images {list(s.raw_shape)} adapted to the model's input {list(loaded.input_shape)} "
                 "(resize, channels, normalise)")
    return EvalData(s.x, s.labels, f"{spec} test split ({batch_len(s.x)} samples)", s.num_classes, spec,
                    s.class_names)


def probe_training_data(ctx: Context, data: EvalData) -> Split | None:
    """The training split the embedding probe is fitted on: the same dataset spec as ``data``
    (at most PROBE_TRAIN_SAMPLES, a seeded selection beyond); None without labels."""
    from ..measure.accuracy import PROBE_TRAIN_SAMPLES

    if data.spec is None or data.labels is None:
        return None

    def select(count: int) -> np.ndarray | slice:
        if count <= PROBE_TRAIN_SAMPLES:
            return slice(None)
        return np.sort(np.random.default_rng(PROBE_SEED).permutation(count)[:PROBE_TRAIN_SAMPLES])

    s = dataset_split(ctx, data.spec, "--data", "train", select)
    return s if s.labels is not None else None


def output_role(loaded: Any) -> tuple[str, str]:
    """(name, role) of the output accuracy is scored on: the model's first declared output."""
    first = loaded.spec.outputs[0]
    return first.name, first.role


def accuracy_record(ctx: Context, onnx_paths: Mapping[str, Path], batch_size: int, *,
                    reference: str = "original", threads: int | None = None) -> dict[str, Any]:
    """Accuracy of every ONNX file against ``reference`` on the evaluation data (ONNX Runtime).

    A classifier (logits) is scored by top-1 and agreement; a model whose first output is an
    embedding by a linear probe fitted on the reference model's training-split embeddings and
    applied unchanged to both, plus mean embedding cosine. ``scoring`` says which. With two
    files (original, compressed) the result is one record; the candidate is the other file.
    """
    from ..measure.accuracy import (
        EMBEDDING_PROBE,
        collect_logits_onnx,
        evaluate_embedding_probe,
        evaluate_logits,
        fit_probe,
    )
    from .context import log

    loaded = ctx.loaded
    data = evaluation_data(ctx)
    name, role = output_role(loaded)
    names = loaded.spec.input_names
    log(f"evaluating accuracy with ONNX Runtime on {data.source}")

    def run(path: Path, x: Batch) -> np.ndarray:
        return collect_logits_onnx(path, names if isinstance(x, Mapping) else names[0], x, batch_size,
                                   output_name=name, threads=threads)

    outputs = {v: run(p, data.x) for v, p in onnx_paths.items()}
    candidate = next(v for v in onnx_paths if v != reference)
    if role != "embedding":
        acc = evaluate_logits(outputs[reference], outputs[candidate], data.labels, num_classes=data.num_classes)
    else:
        probe = None
        train = probe_training_data(ctx, data)
        if train is not None:
            log(f"fitting the embedding probe on the {reference} model's embeddings of "
                f"{batch_len(train.x)} training samples")
            train_emb = run(onnx_paths[reference], train.x)
            where = train.details.get("train_file") or data.spec
            probe = fit_probe(train_emb, train.labels,
                              fitted_on=f"{reference} model, train split of {where} ({batch_len(train.x)} samples)")
        acc = evaluate_embedding_probe(outputs[reference], outputs[candidate], data.labels, probe)
        assert acc["scoring"] == EMBEDDING_PROBE
    acc.update({"backend": "onnxruntime", "data": data.source, "output": name})
    if data.class_names is not None:
        acc["label_names"] = list(data.class_names)
    if data.details:
        acc["dataset"] = {k: data.details[k] for k in ("pairing", "train_file", "test_file", "text_column",
                                                       "label_column", "label_mapping", "max_length", "at_max_length")
                          if k in data.details}
    return acc
