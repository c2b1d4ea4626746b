"""Stage: FP32 ONNX → precision variants in the graph (FP16, INT8 Q/DQ) for the
original and the compressed model, each checked with ONNX Runtime against its
FP32 graph on the evaluation data (accuracy, agreement, output error)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..models.io import batch_len
from ..precision.registry import Feeds, PrecisionResult
from ..precision.spec import precision_spec, variant_name
from .bench import EVAL_BATCH, deployed_onnx
from .calib import calibration_data
from .context import Context, log
from .evaldata import EvalData, evaluation_data
from .records import PrecisionRecord, PrecisionVariant

CALIB_BATCH = 32


def converter_options(ctx: Context, precision: str) -> dict[str, Any]:
    """The converter options the user set for ``precision`` (defaults stay the converter's): the run-wide
    options its spec passes through (threads, ...) and its options dataclass, renamed to converter keys."""
    cfg = ctx.cfg
    spec = precision_spec(precision)
    opts: dict[str, Any] = {k: cfg.value(k) for k in spec.run_options if cfg.value(k) is not None}
    chosen = (cfg.precision.options or {}).get(precision) or spec.default_options()
    opts.update(chosen.converter_options())
    return opts


def calibration_batch(ctx: Context, precision: str) -> int:
    """Batch size of the calibration feeds ``precision`` gets (its options may ask for one)."""
    chosen = (ctx.cfg.precision.options or {}).get(precision)
    return (chosen.calibration_batch_size() if chosen is not None else None) or CALIB_BATCH


def calibration_feeds(ctx: Context, batch: int = CALIB_BATCH) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
    """The seeded calibration selection as ONNX feeds (every input name → batch), plus its description.

    Without a dataset the feeds are valid random inputs of every input (token ids in the
    vocabulary, right-padded attention masks), never one float tensor for a text model.
    """
    calib = calibration_data(ctx, ctx.cfg.data.calib_samples, labelled=False, why="--precision (calibration)")
    return calib.feeds(batch, ctx.loaded.spec.input_names), calib.describe()


def compared_output(ctx: Context) -> tuple[str, str]:
    """(name, role) of the output variants are scored on: the model's first declared output."""
    first = ctx.loaded.spec.outputs[0]
    return first.name, first.role


def fp32_logits(ctx: Context, src: Path, data: EvalData) -> np.ndarray:
    """Reference outputs (the first declared output: logits or an embedding) of an FP32 ONNX file on
    the evaluation data (ONNX Runtime, full optimisation)."""
    from ..measure import collect_logits_onnx

    return collect_logits_onnx(src, ctx.loaded.spec.input_names, data.x, EVAL_BATCH,
                               output_name=compared_output(ctx)[0], threads=ctx.cfg.bench.threads)


def measure_variant(ctx: Context, src: Path, dst: Path, precision: str, options: dict[str, Any],
                    feeds: Feeds, data: EvalData, ref: np.ndarray) -> tuple[PrecisionResult, np.ndarray, dict[str, Any]]:
    """Convert ``src`` → ``dst`` and score the variant's first output against the FP32 ``ref`` outputs.

    Logits: top-1 (with labels), agreement, cosine; an embedding: cosine and nearest-neighbour
    agreement. Returns (conversion result, variant outputs, accuracy/agreement record).
    """
    from ..measure import collect_logits_onnx
    from ..measure.outputs import evaluate_outputs
    spec = precision_spec(precision)
    result = spec.resolve()(src, dst, calib=feeds, options=options)
    level = spec.ort_level
    name, role = compared_output(ctx)
    logits = collect_logits_onnx(dst, ctx.loaded.spec.input_names, data.x, EVAL_BATCH, output_name=name,
                                 threads=ctx.cfg.bench.threads, optimization=level)
    accuracy = evaluate_outputs(ref, logits, role, data.labels, num_classes=data.num_classes)
    accuracy["output"] = name
    accuracy["onnxruntime_optimization"] = level
    return result, logits, accuracy


def precision_stage(ctx: Context) -> PrecisionRecord:
    """Write every requested variant of every FP32 ONNX file and measure it; returns the stage record."""
    from ..measure import onnx_file_size
    from ..measure.outputs import agreement_summary

    cfg = ctx.cfg
    precisions = [p for p in cfg.precision.precisions if precision_spec(p).converter is not None]  # fp32: the graph itself
    fp32 = deployed_onnx(ctx)
    record = PrecisionRecord(precisions=precisions, variants={}, fp32={k: str(v) for k, v in fp32.items()})
    if not precisions:
        log("precision: FP32 only (pass --precision fp16,int8 for graph variants)")
        return ctx.save_record(record)
    batches = {p: calibration_batch(ctx, p) for p in precisions}
    feeds_by_batch: dict[int, Feeds] = {}
    for b in dict.fromkeys(batches.values()):
        feeds_by_batch[b], calib = calibration_feeds(ctx, b)
    record.calibration = calib
    data = evaluation_data(ctx)
    record.evaluation = {"data": data.source, "samples": batch_len(data.x), "output": compared_output(ctx)[0]}
    for model, src in fp32.items():
        ref = fp32_logits(ctx, src, data)
        for precision in precisions:
            name = variant_name(model, precision)
            dst = ctx.artifacts.onnx(name)
            log(f"precision {precision}: {src.name} → {dst.name}")
            result, _, accuracy = measure_variant(ctx, Path(src), dst, precision, converter_options(ctx, precision),
                                                  feeds_by_batch[batches[precision]], data, ref)
            accuracy["reference"] = f"{model} fp32 (onnxruntime)"
            record.variants[name] = PrecisionVariant(model=model, precision=precision, onnx=str(dst),
                                                     onnx_bytes=onnx_file_size(dst).bytes, accuracy=accuracy,
                                                     conversion=result.to_dict())
            top1 = accuracy.get("top1_candidate")
            log(f"  {name}: {agreement_summary(accuracy)}"
                + (f", top-1 {top1:.2%} (fp32 {accuracy['top1_reference']:.2%})" if top1 is not None else ""))
    return ctx.save_record(record)
