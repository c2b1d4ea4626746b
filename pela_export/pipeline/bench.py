"""Stage 5: original vs compressed side by side (params, FLOPs, size, latency, accuracy)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..bench import (VariantBenchmark, bench_latency_grid, collect_logits_onnx, count_flops, count_params,
                     evaluate_logits, onnx_file_size)
from ..export import count_onnx_params, load_onnx
from ..errors import ArtifactError
from .context import Context, log
from .evaldata import evaluation_data

EVAL_BATCH = 64


def deployed_onnx(ctx: Context) -> dict[str, Path]:
    """The final ONNX file of each variant, as recorded by the export stage."""
    record = ctx.load_record("export", needed_by="bench")
    paths = {v: Path(p) for v, p in record["final_onnx"].items()}
    for variant, path in paths.items():
        if not path.is_file():
            raise ArtifactError(f"{variant} ONNX {path} recorded by the export stage is missing",
                                fix="re-run the export stage (drop --skip export)")
    return paths


def recorded_precision_variants(ctx: Context, needed_by: str) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Each FP16/INT8 variant the precision stage recorded: name → (its ONNX file, checked to exist; its record).

    Empty when the precision stage never ran in this output directory.
    """
    if not ctx.artifacts.stage_record("precision").is_file():
        return {}
    out: dict[str, tuple[Path, dict[str, Any]]] = {}
    for name, variant in ctx.load_record("precision", needed_by=needed_by)["variants"].items():
        onnx = Path(variant["onnx"])
        if not onnx.is_file():
            raise ArtifactError(f"{name} ONNX {onnx} recorded by the precision stage is missing",
                                fix="re-run the precision stage (drop --skip precision)")
        out[name] = (onnx, variant)
    return out


def _precision_latency(ctx: Context) -> dict[str, dict[str, Any]]:
    """ONNX Runtime CPU latency of every precision variant the precision stage wrote (all batch sizes).

    Timed at the full optimisation level, the way a CPU deployment would run them
    (INT8 then uses ORT's fused integer kernels). CPU timings of FP16/INT8 say
    little about a GPU: ``pela-export device-bench`` times them on the device.
    """
    from ..bench import bench_onnxruntime

    cfg = ctx.cfg
    out: dict[str, dict[str, Any]] = {}
    for name, (onnx, _) in recorded_precision_variants(ctx, needed_by="bench").items():
        log(f"benchmarking {name} (ONNX Runtime CPU): batch sizes {list(cfg.batch_sizes)}")
        out[name] = {str(b): bench_onnxruntime(onnx, ctx.loaded.input_name, ctx.loaded.dummy_input(b).numpy(),
                                               cfg.warmup, cfg.runs, cfg.threads).to_dict()
                     for b in cfg.batch_sizes}
    return out


def bench_stage(ctx: Context) -> dict[str, Any]:
    cfg = ctx.cfg
    onnx_paths = deployed_onnx(ctx)
    device = torch.device(cfg.device)
    models = {"original": ctx.original(), "compressed": ctx.compressed()}
    benchmarks: dict[str, Any] = {}
    for variant, model in models.items():
        path = onnx_paths[variant]
        log(f"benchmarking {variant}: batch sizes {list(cfg.batch_sizes)}, {cfg.runs} runs after {cfg.warmup} warm-up")
        flops = count_flops(model, ctx.loaded.dummy_input(1))
        model_dev = model.to(device)
        grid = bench_latency_grid(model_dev, path, ctx.loaded.input_name,
                                  lambda b: ctx.loaded.dummy_input(b).to(device), cfg.batch_sizes,
                                  cfg.warmup, cfg.runs, cfg.threads)
        model.to("cpu")
        benchmarks[variant] = VariantBenchmark(
            params_torch=count_params(model), params_onnx=count_onnx_params(load_onnx(path, check=False)), flops=flops,
            onnx_size=onnx_file_size(path), latency=grid["latency"], threads=grid["threads"])
    data = evaluation_data(ctx)
    log(f"evaluating accuracy with ONNX Runtime on {data.source}")
    logits = {v: collect_logits_onnx(p, ctx.loaded.input_name, data.x, EVAL_BATCH, threads=cfg.threads)
              for v, p in onnx_paths.items()}
    accuracy = evaluate_logits(logits["original"], logits["compressed"], data.labels,
                               num_classes=data.num_classes)
    accuracy.update({"backend": "onnxruntime", "data": data.source})
    record = {
        "precision_latency": _precision_latency(ctx),
        "device": cfg.device,
        "onnxruntime_session": {"provider": "CPUExecutionProvider", "graph_optimization": "all",
                                "execution_mode": "sequential", "intra_op_spinning": False},
        "benchmarks": {k: v.to_dict() for k, v in benchmarks.items()},
        "accuracy": accuracy,
        "onnx": {k: str(v) for k, v in onnx_paths.items()},
    }
    ctx.save_record("bench", record)
    return record
