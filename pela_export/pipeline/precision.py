"""Stage: FP32 ONNX → precision variants in the graph (FP16, INT8 Q/DQ) for the
original and the compressed model, each checked with ONNX Runtime against its
FP32 graph on the evaluation data (accuracy, agreement, output error)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .bench import EVAL_BATCH, deployed_onnx
from .calib import calibration_data
from .context import Context, log
from .evaldata import evaluation_data

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


def _feeds(ctx: Context, input_name: str) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
    calib = calibration_data(ctx, ctx.cfg.calib_samples, labelled=False, why="--precision (calibration)")
    feeds = [{input_name: x.numpy()} for x, _ in calib.batches(CALIB_BATCH)]
    return feeds, calib.describe()


def precision_stage(ctx: Context) -> dict[str, Any]:
    """Write every requested variant of every FP32 ONNX file and measure it; returns the stage record."""
    from ..bench import collect_logits_onnx, evaluate_logits, onnx_file_size
    from ..precision import PRECISIONS

    cfg = ctx.cfg
    precisions = [p for p in cfg.precisions if p != "fp32"]
    fp32 = deployed_onnx(ctx)
    record: dict[str, Any] = {"precisions": precisions, "variants": {}, "fp32": {k: str(v) for k, v in fp32.items()}}
    if not precisions:
        log("precision: FP32 only (pass --precision fp16,int8 for graph variants)")
        ctx.save_record("precision", record)
        return record
    feeds, calib = _feeds(ctx, ctx.loaded.input_name)
    record["calibration"] = calib
    data = evaluation_data(ctx)
    record["evaluation"] = {"data": data.source, "samples": int(len(data.x))}
    for model, src in fp32.items():
        ref = collect_logits_onnx(src, ctx.loaded.input_name, data.x, EVAL_BATCH, threads=cfg.threads)
        for precision in precisions:
            name = variant_name(model, precision)
            dst = ctx.artifacts.onnx(name)
            log(f"precision {precision}: {src.name} → {dst.name}")
            result = PRECISIONS.get(precision)(Path(src), dst, calib=feeds, options=converter_options(ctx, precision))
            level = ORT_LEVEL.get(precision, "all")
            logits = collect_logits_onnx(dst, ctx.loaded.input_name, data.x, EVAL_BATCH, threads=cfg.threads,
                                         optimization=level)
            accuracy = evaluate_logits(ref, logits, data.labels, num_classes=data.num_classes)
            accuracy.update({"reference": f"{model} fp32 (onnxruntime)", "onnxruntime_optimization": level})
            record["variants"][name] = {"model": model, "precision": precision, "onnx": str(dst),
                                        "onnx_bytes": onnx_file_size(dst).bytes, "accuracy": accuracy,
                                        "conversion": result.to_dict()}
            top1 = accuracy.get("top1_candidate")
            log(f"  {name}: agreement with fp32 {accuracy['top1_agreement']:.2%}"
                + (f", top-1 {top1:.2%} (fp32 {accuracy['top1_reference']:.2%})" if top1 is not None else ""))
    ctx.save_record("precision", record)
    return record
