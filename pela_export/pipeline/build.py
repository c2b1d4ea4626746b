"""Stage: ONNX variants → TensorRT engines. Without TensorRT (this CPU machine, CI)
the stage still does what needs no GPU — the static "will this graph parse on
that TensorRT" check and the equivalent ``trtexec`` script per variant, so the
device can build the same engines — and says clearly that engines were not built."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from ..errors import DependencyError
from .bench import deployed_onnx, recorded_precision_variants
from .context import Context, log
from .records import BuildRecord, BuildVariant

ENGINE_DIR = "engines"


def onnx_variants(ctx: Context) -> dict[str, Path]:
    """Every ONNX file to build: the FP32 files and the precision variants recorded so far."""
    files = dict(deployed_onnx(ctx))
    files.update({name: onnx for name, (onnx, _) in recorded_precision_variants(ctx, needed_by="build").items()})
    return files


def run_build_options(ctx: Context) -> Any:
    """The run's TensorRT build options with the model's axis ranges (e.g. ``sequence`` 1/128/512 from its
    config) as profile defaults; checked against the model's inputs (a bad ``--profile`` fails here)."""
    from ..tensorrt import BuildOptions, check_profiles, with_model_axes
    from ..tensorrt.profiles import with_bench_batches

    options = with_model_axes(ctx.cfg.tensorrt.build if ctx.cfg.tensorrt.build is not None else BuildOptions(), ctx.loaded.spec)
    options = with_bench_batches(options, ctx.cfg.bench.batch_sizes)  # opt: the batch the bench times most
    check_profiles(options, ctx.loaded.spec)
    return options


def _target_versions(ctx: Context, installed: str | None) -> list[str]:
    from ..tensorrt import TABLE_VERSIONS

    if installed:
        return [installed]
    return [ctx.cfg.tensorrt.trt_version] if ctx.cfg.tensorrt.trt_version else list(TABLE_VERSIONS)


def build_stage(ctx: Context, *, required: bool = False) -> BuildRecord:
    """Check, script and (with TensorRT) build every variant; ``required`` makes absent TensorRT an error."""
    from .. import __version__
    from ..tensorrt import (build_engine, check_onnx_for_trt, features_for_version, format_findings, inspect_onnx,
                            plan_build, write_trtexec_script)
    from ..tensorrt._trt import load_tensorrt, tensorrt_available, version_of
    from ..tensorrt.parse_check import errors_of

    from ..tensorrt.profiles import batch_opt

    options = run_build_options(ctx)  # option errors before any file is read
    if options.opt_batch is None and ctx.cfg.export.dynamic_batch:  # the automatic opt, recorded with its reason
        ctx.note(f"TensorRT profile batch {batch_opt(options)[1]}; --opt-batch to choose")
    files = onnx_variants(ctx)
    installed = version_of(load_tensorrt()) if tensorrt_available() else None
    versions = _target_versions(ctx, installed)
    engines_dir = ctx.artifacts.root / ENGINE_DIR
    record = BuildRecord(tensorrt_installed=installed, target_versions=versions, variants={})
    # quoted in the runner's "rebuild on this device" errors
    model = [ctx.cfg.model.spec] if ctx.cfg.model.spec else []
    rebuild = shlex.join(["pela-export", "build", *model, "--out", str(ctx.artifacts.root)])
    for name, onnx in files.items():
        entry = BuildVariant(onnx=str(onnx))
        graph = inspect_onnx(onnx)
        for version in versions:
            findings = check_onnx_for_trt(onnx, version)
            entry.parse_check[version] = [f.to_dict() for f in findings]
            if errors_of(findings):
                ctx.note(f"{name}: TensorRT {version}'s ONNX parser will reject it:\n{format_findings(errors_of(findings))}")
                continue
            plan_path = engines_dir / version / f"{name}.plan"
            plan = plan_build(options, features_for_version(version), graph)
            entry.precision_mode[version] = plan.precision_mode
            script = write_trtexec_script(onnx, plan_path, plan, tool_version=__version__)
            entry.trtexec[version] = str(script)
        if installed:
            plan_path = engines_dir / installed / f"{name}.plan"
            log(f"building TensorRT {installed} engine for {name}")
            entry.engine = build_engine(onnx, plan_path, options, log=log, rebuild_command=rebuild).to_dict()
        record.variants[name] = entry
    if installed is None:
        record.skipped = ("TensorRT Python bindings are not installed here: engines not built; the static parser "
                             f"check and trtexec scripts for TensorRT {', '.join(versions)} are in {engines_dir}")
        log(f"build: {record.skipped}")
    ctx.save_record(record)
    if installed is None and required:
        raise DependencyError("TensorRT Python bindings are not installed, so no engine was built "
                              f"(parser check and trtexec scripts written to {engines_dir})",
                              fix="run `pela-export build --out DIR` on the device (JetPack ships TensorRT), "
                                  "or run the trtexec scripts there")
    return record
