"""Stage: FP32 ONNX → precision variants in the graph (FP16, INT8 Q/DQ) for the
original and the compressed model, each checked with ONNX Runtime against its
FP32 graph on the evaluation data (accuracy, agreement, output error)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..models.io import batch_len
from ..precision.registry import Feeds, PrecisionResult
from .bench import EVAL_BATCH, deployed_onnx
from .calib import calibration_data
from .context import Context, log
from .evaldata import EvalData, evaluation_data

CALIB_BATCH = 32
# ORT's fused INT8 CPU kernels saturate on AVX2 hosts without VNNI; the basic level
# runs Q/DQ as simulated quantization, the arithmetic TensorRT's INT8 kernels approximate.
ORT_LEVEL = {"int8": "basic"}


def variant_name(model: str, precision: str) -> str:
    """``compressed.int8`` etc.: the artifact stem of one precision variant."""
    return f"{model}.{precision}"


def converter_options(ctx: Context, precision: str) -> dict[str, Any]:
    """The converter options the user set for ``precision`` (defaults stay the converter's)."""
    cfg = ctx.cfg
    opts: dict[str, Any] = {"threads": cfg.threads}
    if precision == "fp16":
        extra = {"block_ops": cfg.fp16_keep_ops, "block_nodes": cfg.fp16_keep_nodes,
                 "keep_io_fp32": None if cfg.fp16_io is None else cfg.fp16_io == "fp32"}
    elif precision == "int8":
        extra = {"method": cfg.calib_method, "percentile": cfg.calib_percentile, "exclude_nodes": cfg.int8_exclude,
                 "exclude_ops": cfg.int8_exclude_ops, "keep_worst": cfg.int8_keep_worst,
                 "trt_version": cfg.trt_version}
    else:
        extra = {}
    opts.update({k: v for k, v in extra.items() if v is not None})
    return opts


def calibration_feeds(ctx: Context) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
    """The seeded calibration selection as ONNX feeds (every input name → batch), plus its description.

    Without a dataset the feeds are valid random inputs of every input (token ids in the
    vocabulary, right-padded attention masks), never one float tensor for a text model.
    """
    calib = calibration_data(ctx, ctx.cfg.calib_samples, labelled=False, why="--precision (calibration)")
    return calib.feeds(CALIB_BATCH, ctx.loaded.spec.input_names), calib.describe()


def compared_output(ctx: Context) -> tuple[str, str]:
    """(name, role) of the output variants are scored on: the model's first declared output."""
    first = ctx.loaded.spec.outputs[0]
    return first.name, first.role


def fp32_logits(ctx: Context, src: Path, data: EvalData) -> np.ndarray:
    """Reference outputs (the first declared output: logits or an embedding) of an FP32 ONNX file on
    the evaluation data (ONNX Runtime, full optimisation)."""
    from ..measure import collect_logits_onnx

    return collect_logits_onnx(src, ctx.loaded.spec.input_names, data.x, EVAL_BATCH,
                               output_name=compared_output(ctx)[0], threads=ctx.cfg.threads)


def measure_variant(ctx: Context, src: Path, dst: Path, precision: str, options: dict[str, Any],
                    feeds: Feeds, data: EvalData, ref: np.ndarray) -> tuple[PrecisionResult, np.ndarray, dict[str, Any]]:
    """Convert ``src`` → ``dst`` and score the variant's first output against the FP32 ``ref`` outputs.

    Logits: top-1 (with labels), agreement, cosine; an embedding: cosine and nearest-neighbour
    agreement. Returns (conversion result, variant outputs, accuracy/agreement record).
    """
    from ..measure import collect_logits_onnx
    from ..measure.outputs import evaluate_outputs
    from ..precision import PRECISIONS

    result = PRECISIONS.get(precision)(src, dst, calib=feeds, options=options)
    level = ORT_LEVEL.get(precision, "all")
    name, role = compared_output(ctx)
    logits = collect_logits_onnx(dst, ctx.loaded.spec.input_names, data.x, EVAL_BATCH, output_name=name,
                                 threads=ctx.cfg.threads, optimization=level)
    accuracy = evaluate_outputs(ref, logits, role, data.labels, num_classes=data.num_classes)
    accuracy["output"] = name
    accuracy["onnxruntime_optimization"] = level
    return result, logits, accuracy


def precision_stage(ctx: Context) -> dict[str, Any]:
    """Write every requested variant of every FP32 ONNX file and measure it; returns the stage record."""
    from ..measure import onnx_file_size
    from ..measure.outputs import agreement_summary

    cfg = ctx.cfg
    precisions = [p for p in cfg.precisions if p != "fp32"]
    fp32 = deployed_onnx(ctx)
    record: dict[str, Any] = {"precisions": precisions, "variants": {}, "fp32": {k: str(v) for k, v in fp32.items()}}
    if not precisions:
        log("precision: FP32 only (pass --precision fp16,int8 for graph variants)")
        ctx.save_record("precision", record)
        return record
    feeds, calib = calibration_feeds(ctx)
    record["calibration"] = calib
    data = evaluation_data(ctx)
    record["evaluation"] = {"data": data.source, "samples": batch_len(data.x), "output": compared_output(ctx)[0]}
    for model, src in fp32.items():
        ref = fp32_logits(ctx, src, data)
        for precision in precisions:
            name = variant_name(model, precision)
            dst = ctx.artifacts.onnx(name)
            log(f"precision {precision}: {src.name} → {dst.name}")
            result, _, accuracy = measure_variant(ctx, Path(src), dst, precision, converter_options(ctx, precision),
                                                  feeds, data, ref)
            accuracy["reference"] = f"{model} fp32 (onnxruntime)"
            record["variants"][name] = {"model": model, "precision": precision, "onnx": str(dst),
                                        "onnx_bytes": onnx_file_size(dst).bytes, "accuracy": accuracy,
                                        "conversion": result.to_dict()}
            top1 = accuracy.get("top1_candidate")
            log(f"  {name}: {agreement_summary(accuracy)}"
                + (f", top-1 {top1:.2%} (fp32 {accuracy['top1_reference']:.2%})" if top1 is not None else ""))
    ctx.save_record("precision", record)
    return record
