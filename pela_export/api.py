"""The Python API: the same operations as the CLI subcommands.

>>> from pela_export import api
>>> from pela_export.pipeline.config import RunConfig
>>> api.run(RunConfig(model="timm:deit_small_patch16_224", ratio=3))  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any

from .pipeline.bench import bench_stage
from .pipeline.compress import compress_stage
from .pipeline.config import RunConfig
from .pipeline.context import Context, prepare
from .pipeline.inspect import inspect
from .pipeline.report import report_stage
from .pipeline.run import run_pipeline

__all__ = ["RunConfig", "run", "compress", "export", "precision", "build", "bench", "inspect", "prepare"]


def _ensure_compressed(ctx: Context) -> None:
    """Reuse a matching saved compression, else compress now (and say so)."""
    from .errors import ArtifactError

    try:
        ctx.compressed()
    except ArtifactError as exc:
        ctx.note(f"compressing first: no reusable compressed model in {ctx.artifacts.root} ({exc.problem.splitlines()[0]})")
        compress_stage(ctx)


def run(cfg: RunConfig) -> dict[str, Any]:
    """All stages in order (``cfg.skip`` stages reuse saved artifacts)."""
    return run_pipeline(cfg)


def compress(cfg: RunConfig) -> dict[str, Any]:
    """Factorize and save the compressed model, spec and rank table."""
    return compress_stage(prepare(cfg))


def export(cfg: RunConfig) -> dict[str, Any]:
    """ONNX of original and compressed, simplified and verified; compresses first if needed."""
    from .pipeline.export import export_stage

    ctx = prepare(cfg)
    _ensure_compressed(ctx)
    return export_stage(ctx, simplify="simplify" not in cfg.skip, verify="verify" not in cfg.skip)


def bench(cfg: RunConfig) -> dict[str, Any]:
    """Benchmark both variants and write the report; exports first if no ONNX was saved."""
    from .errors import ArtifactError
    from .pipeline.export import export_stage

    ctx = prepare(cfg)
    _ensure_compressed(ctx)
    try:
        from .pipeline.bench import deployed_onnx

        deployed_onnx(ctx)
    except ArtifactError as exc:
        ctx.note(f"exporting first: {exc.problem.splitlines()[0]}")
        export_stage(ctx)
    record = bench_stage(ctx)
    report_stage(ctx)
    return record


def precision(cfg: RunConfig) -> dict[str, Any]:
    """FP16 / INT8 variants of the saved FP32 ONNX files, measured against FP32 with ONNX Runtime."""
    from .pipeline.precision import precision_stage

    return precision_stage(prepare(cfg))


def build(cfg: RunConfig) -> dict[str, Any]:
    """TensorRT engines for every saved ONNX variant; without TensorRT, the parser check and trtexec
    scripts are written and a DependencyError says engines need the device."""
    from .pipeline.build import build_stage

    return build_stage(prepare(cfg), required=True)
