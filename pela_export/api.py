"""The Python API: the same operations as the CLI subcommands.

>>> from pela_export import api
>>> from pela_export.pipeline.config import RunConfig
>>> api.run(RunConfig.of(model="timm:deit_small_patch16_224", ratio=3))  # doctest: +SKIP

The stage functions return their stage record as a plain dict (``stages/<stage>.json``'s
content; the typed records are :mod:`pela_export.pipeline.records`). :data:`STAGES` is the
order :func:`run` runs them in (:data:`pela_export.pipeline.stages.PIPELINE`).

Stage modules are imported inside each function: ``api.verify_bundle`` and
``api.device_bench`` run on a device without PyTorch, the workstation stages
import it when called.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .pipeline.config import STAGES, RunConfig

if TYPE_CHECKING:
    from .models.base import LoadedModel
    from .pipeline.context import Context
    from .runtime.sums import Problem

__all__ = ["RunConfig", "STAGES", "run", "compress", "export", "precision", "build", "bench", "package", "inspect", "prepare",
           "verify_bundle", "device_bench", "merge_reports", "sweep", "sweep_from_args"]


def prepare(cfg: RunConfig, loaded: LoadedModel | None = None) -> Context:
    """Resolve the model and output directory once per run (see :func:`pela_export.pipeline.context.prepare`)."""
    from .pipeline.context import prepare as _prepare

    return _prepare(cfg, loaded)


def inspect(*args: Any, **kwargs: Any) -> str:
    """Dry-run rank table of a model, or a summary of an ONNX file (:func:`pela_export.pipeline.inspect.inspect`)."""
    from .pipeline.inspect import inspect as _inspect

    return _inspect(*args, **kwargs)


def _ensure_compressed(ctx: Context) -> None:
    """Reuse a matching saved compression, else compress now (and say so)."""
    from .errors import ArtifactError
    from .pipeline.compress import compress_stage

    try:
        ctx.compressed()
    except ArtifactError as exc:
        ctx.note(f"compressing first: no reusable compressed model in {ctx.artifacts.root} ({exc.problem.splitlines()[0]})")
        compress_stage(ctx)


def run(cfg: RunConfig) -> dict[str, Any]:
    """All stages in order (``cfg.skip`` stages reuse saved artifacts)."""
    from .pipeline.run import run_pipeline

    return run_pipeline(cfg)


def compress(cfg: RunConfig) -> dict[str, Any]:
    """Factorize and save the compressed model, spec and rank table."""
    from .pipeline.compress import compress_stage

    return compress_stage(prepare(cfg)).to_dict()


def export(cfg: RunConfig) -> dict[str, Any]:
    """ONNX of original and compressed, simplified and verified; compresses first if needed."""
    from .pipeline.export import export_stage

    ctx = prepare(cfg)
    _ensure_compressed(ctx)
    return export_stage(ctx, simplify="simplify" not in cfg.skip, verify="verify" not in cfg.skip).to_dict()


def bench(cfg: RunConfig) -> dict[str, Any]:
    """Benchmark both variants and write the report; exports first if no ONNX was saved."""
    from .errors import ArtifactError
    from .pipeline.bench import bench_stage, deployed_onnx
    from .pipeline.export import export_stage
    from .pipeline.report import report_stage

    ctx = prepare(cfg)
    _ensure_compressed(ctx)
    try:
        deployed_onnx(ctx)
    except ArtifactError as exc:
        ctx.note(f"exporting first: {exc.problem.splitlines()[0]}")
        export_stage(ctx)
    record = bench_stage(ctx)
    report_stage(ctx)
    return record.to_dict()


def precision(cfg: RunConfig) -> dict[str, Any]:
    """FP16 / INT8 variants of the saved FP32 ONNX files, measured against FP32 with ONNX Runtime."""
    from .pipeline.precision import precision_stage

    return precision_stage(prepare(cfg)).to_dict()


def build(cfg: RunConfig) -> dict[str, Any]:
    """TensorRT engines for every saved ONNX variant; without TensorRT, the parser check and trtexec
    scripts are written and a DependencyError says engines need the device."""
    from .pipeline.build import build_stage

    return build_stage(prepare(cfg), required=True).to_dict()


def package(cfg: RunConfig) -> dict[str, Any]:
    """The deployment bundle (``OUT/bundle`` + ``OUT/bundle.tar.gz``) from a run's saved artifacts."""
    from .pipeline.package import package_stage

    return package_stage(prepare(cfg)).to_dict()


def sweep(base: dict[str, Any], grid: Any = None, out: str | os.PathLike[str] | None = None, *,
          budget_minutes: float | None = 60.0, timing_rounds: int = 3, train_top: int = 0,
          train: Any = None, train_data: str | None = None) -> dict[str, Any]:
    """Measure a grid of compression settings and write the Pareto front (``sweep.{json,md,png}`` in ``out``).

    ``base``: ``RunConfig.of`` keywords every point shares (``spec``, ``eval_data``, ``threads``, ...);
    ``grid``: a :class:`pela_export.sweep.grid.Grid` (None: ratios 2,3,4, the default method, fp32);
    ``timing_rounds``: rounds of the final timing with every point called in turn (0: each point's own);
    ``train_top``: PELA-train that many of the fastest front points that lose accuracy, with ``train`` (a
    :class:`pela_export.train.TrainConfig`, None: its defaults) on ``train_data`` (None: the model's own).
    Returns sweep.json's content plus ``paths``; points already measured in ``out`` are reused.
    """
    from .sweep.command import sweep as _sweep
    from .sweep.grid import Grid

    from .errors import OptionError
    from .sweep.trained import TrainTop

    top = None
    if train_top:
        from .train import TrainConfig

        top = TrainTop(train_top, train if train is not None else TrainConfig(), train_data)
    elif train is not None or train_data is not None:
        raise OptionError("training options were given but no point is trained",
                          fix="pass train_top=N (CLI: --train-top N) to train the N fastest front points")
    return _sweep(base, grid or Grid(), None if out is None else str(out), budget_minutes=budget_minutes,
                  timing_rounds=timing_rounds, train=top)


def sweep_from_args(ns: Any) -> dict[str, Any]:
    """``pela-export sweep``'s parsed flags → :func:`sweep`."""
    from .sweep.command import base_from_namespace
    from .sweep.options import SweepOptions

    from .cli.args import train_config
    from .errors import OptionError
    from .sweep.trained import TrainTop

    opts = SweepOptions.from_namespace(ns)
    config = train_config(ns)
    given = TrainTop(0, config, ns.train_data).flags()
    if not opts.train_top and given:
        raise OptionError(f"training flags {' '.join(given[::2])} were given but no point is trained",
                          fix="add --train-top N to train the N fastest front points that lose accuracy, or drop "
                              "the training flags")
    return sweep(base_from_namespace(ns), opts.grid(), ns.out, budget_minutes=opts.budget_minutes,
                 timing_rounds=opts.timing_rounds, train_top=opts.train_top,
                 train=config if opts.train_top else None, train_data=ns.train_data if opts.train_top else None)


def verify_bundle(path: str | os.PathLike[str]) -> list[Problem]:
    """Every problem of a bundle directory or ``bundle.tar.gz`` (hashes, schema, missing/extra files); [] if intact.

    An archive is unpacked (safely) into a temporary folder that is removed afterwards; an archive member
    with an absolute path, ``..`` or a link raises ArtifactError naming it.
    """
    from .runtime.bundle import verify_path

    return verify_path(path).problems


def device_bench(bundle: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
                 batch_sizes: Sequence[int] | None = None, runs: int = 100, warmup: int = 10,
                 backend: str = "auto", threads: int | None = None,
                 engine_cache: str | os.PathLike[str] | None = None,
                 sequence_length: int | None = None) -> tuple[Path, Path]:
    """Verify, check against golden outputs and time every variant of ``bundle`` on this device.

    Writes ``device-report.json`` + ``device-report.md`` into ``out`` (default ``./pela-device/<model>``)
    and returns their paths. ``backend="auto"`` uses TensorRT where it can run, else ONNX Runtime (and says so).
    Text models are timed at batch × ``sequence_length`` (default: the profile's optimal sequence length).
    """
    from .runtime.devicebench import device_bench as _device_bench

    return _device_bench(bundle, out, batch_sizes=batch_sizes, warmup=warmup, runs=runs, backend=backend,
                         threads=threads, engine_cache=engine_cache, sequence_length=sequence_length)


def device_latency(bundle: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
                   backend: str = "auto", precision: str | None = None, threads: int | None = None,
                   runs: int = 50, warmup: int = 10, engine_cache: str | os.PathLike[str] | None = None) -> Path:
    """Measure the per-layer latency table of a ``--rank-policy latency`` bundle on this device.

    Writes ``latency_table.json`` (+ ``.md``) into ``out`` (default ``./pela-device/<model>``) and returns its
    path; the workstation reads it back with ``--latency-table``. TensorRT tables are timed at ``precision``
    (fp16 by default), ONNX Runtime ones in fp32.
    """
    from .runtime.device_latency import device_latency as _device_latency

    return _device_latency(bundle, out, backend=backend, precision=precision, threads=threads, runs=runs,
                           warmup=warmup, engine_cache=engine_cache)


def merge_reports(workstation: str | os.PathLike[str], device_reports: Sequence[str | os.PathLike[str]],
                  out: str | os.PathLike[str]) -> tuple[Path, Path]:
    """One comparison (``comparison.json`` + ``.md`` + charts in ``out``) of a workstation run and device reports.

    ``workstation`` is a run's output directory (or its report.json); each device report is a
    ``device-report.json`` or a directory holding one (``pela-export device-bench`` writes them).
    """
    from .report.merge import merge_reports as _merge

    return _merge(workstation, device_reports, out)
