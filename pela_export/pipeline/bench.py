"""Stage 5: original vs compressed side by side (params, FLOPs, size, latency, accuracy)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..measure import bench_latency_grid, count_flops, count_params, onnx_file_size
from ..report import VariantBenchmark
from ..measure.shapes import BenchShapes, bench_shapes
from ..export import count_onnx_params, load_onnx
from ..errors import ArtifactError
from .context import Context, log
from .evaldata import accuracy_record
from .records import BenchRecord, ExportRecord, PrecisionRecord, PrecisionVariant

EVAL_BATCH = 64


def deployed_onnx(ctx: Context) -> dict[str, Path]:
    """The final ONNX file of each variant, as recorded by the export stage."""
    record = ctx.load_record(ExportRecord, needed_by="bench")
    check_export_io(ctx, record)
    paths = {v: Path(p) for v, p in record.final_onnx.items()}
    for variant, path in paths.items():
        if not path.is_file():
            raise ArtifactError(f"{variant} ONNX {path} recorded by the export stage is missing",
                                fix="re-run the export stage (drop --skip export)")
    return paths


def check_export_io(ctx: Context, record: ExportRecord) -> None:
    """The saved graphs must have this run's model inputs and outputs (names, input dtypes); a record written
    before it carried them (``io`` absent) is trusted as before."""
    if record.io is None:
        return
    saved, model = record.io, ctx.loaded.spec
    ins = [(t.name, t.dtype) for t in saved.inputs], [(t.name, t.dtype) for t in model.inputs]
    outs = saved.output_names, model.output_names
    if ins[0] != ins[1] or outs[0] != outs[1]:
        raise ArtifactError(f"the saved ONNX files were exported with inputs {ins[0]} and outputs {outs[0]}, but "
                            f"this run's model has inputs {ins[1]} and outputs {outs[1]}",
                            fix="re-run the export stage (drop --skip export), or pass the same model options "
                                "(e.g. --hidden-state) as the saved run",
                            where=str(ctx.artifacts.stage_record("export")))


def recorded_precision_variants(ctx: Context, needed_by: str) -> dict[str, tuple[Path, PrecisionVariant]]:
    """Each FP16/INT8 variant the precision stage recorded: name → (its ONNX file, checked to exist; its record).

    Empty when the precision stage never ran in this output directory.
    """
    record = ctx.optional_record(PrecisionRecord, needed_by=needed_by)
    if record is None:
        return {}
    out: dict[str, tuple[Path, PrecisionVariant]] = {}
    for name, variant in record.variants.items():
        onnx = Path(variant.onnx)
        if not onnx.is_file():
            raise ArtifactError(f"{name} ONNX {onnx} recorded by the precision stage is missing",
                                fix="re-run the precision stage (drop --skip precision)")
        out[name] = (onnx, variant)
    return out


def shapes_for(ctx: Context) -> BenchShapes:
    """The shapes every timing and the FLOP count of this run use (stated in the report)."""
    return bench_shapes(ctx.loaded.spec, ctx.cfg.bench.batch_sizes)


def example_inputs(ctx: Context, shapes: BenchShapes, batch: int) -> tuple[torch.Tensor, ...]:
    """Seeded inputs at ``batch`` and the stated shapes, one tensor per model input in ``forward`` order.

    A single-tensor model gets :meth:`LoadedModel.dummy_input` exactly as before; other models
    valid values of every input (token ids in the vocabulary, right-padded masks).
    """
    loaded = ctx.loaded
    if loaded.spec.is_single_tensor() and not shapes.sizes:
        return (loaded.dummy_input(batch),)
    return loaded.dummy_inputs(batch, seed=0, sizes=dict(shapes.sizes))


def _precision_latency(ctx: Context, shapes: BenchShapes) -> dict[str, dict[str, Any]]:
    """ONNX Runtime CPU latency of every precision variant the precision stage wrote (all batch sizes).

    Timed at the full optimisation level, the way a CPU deployment would run them
    (INT8 then uses ORT's fused integer kernels). CPU timings of FP16/INT8 say
    little about a GPU: ``pela-export device-bench`` times them on the device.
    """
    from ..measure import bench_onnxruntime

    cfg = ctx.cfg
    names = ctx.loaded.spec.input_names
    out: dict[str, dict[str, Any]] = {}
    for name, (onnx, _) in recorded_precision_variants(ctx, needed_by="bench").items():
        log(f"benchmarking {name} (ONNX Runtime CPU): {', '.join(shapes.describe(b) for b in cfg.bench.batch_sizes)}")
        out[name] = {}
        for b in cfg.bench.batch_sizes:
            feeds = {n: t.numpy() for n, t in zip(names, example_inputs(ctx, shapes, b), strict=True)}
            out[name][str(b)] = bench_onnxruntime(onnx, None, feeds, cfg.bench.warmup, cfg.bench.runs, cfg.bench.threads).to_dict()
    return out


def bench_stage(ctx: Context) -> BenchRecord:
    cfg = ctx.cfg
    onnx_paths = deployed_onnx(ctx)
    device = torch.device(cfg.output.device)
    shapes = shapes_for(ctx)
    models = {"original": ctx.original(), "compressed": ctx.compressed()}
    benchmarks: dict[str, Any] = {}
    for variant, model in models.items():
        path = onnx_paths[variant]
        log(f"benchmarking {variant}: {', '.join(shapes.describe(b) for b in cfg.bench.batch_sizes)}, "
            f"{cfg.bench.runs} runs after {cfg.bench.warmup} warm-up")
        flops = count_flops(model, example_inputs(ctx, shapes, 1))
        model_dev = model.to(device)
        grid = bench_latency_grid(model_dev, path, ctx.loaded.spec.input_names,
                                  lambda b: tuple(t.to(device) for t in example_inputs(ctx, shapes, b)),
                                  cfg.bench.batch_sizes, cfg.bench.warmup, cfg.bench.runs, cfg.bench.threads)
        model.to("cpu")
        benchmarks[variant] = VariantBenchmark(
            params_torch=count_params(model), params_onnx=count_onnx_params(load_onnx(path, check=False)), flops=flops,
            onnx_size=onnx_file_size(path), latency=grid["latency"], threads=grid["threads"])
    record = BenchRecord(
        precision_latency=_precision_latency(ctx, shapes),
        device=cfg.output.device,
        shapes=shapes.to_dict(),
        onnxruntime_session={"provider": "CPUExecutionProvider", "graph_optimization": "all",
                             "execution_mode": "sequential", "intra_op_spinning": False},
        benchmarks={k: v.to_dict() for k, v in benchmarks.items()},
        accuracy=accuracy_record(ctx, onnx_paths, EVAL_BATCH, threads=cfg.bench.threads),
        onnx={k: str(v) for k, v in onnx_paths.items()},
    )
    return ctx.save_record(record)
