"""The composed pipeline: each stage runs unless skipped; skipped stages reuse saved artifacts.
The deployment bundle (package) is the last stage."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .bench import bench_stage
from .build import build_stage
from .compress import compress_stage
from .config import RunConfig
from .context import Context, log, prepare
from .package import package_stage
from .precision import precision_stage
from .report import report_stage


def _export_stages(ctx: Context) -> dict[str, Any]:
    from .export import export_stage

    return export_stage(ctx, simplify="simplify" not in ctx.cfg.skip, verify="verify" not in ctx.cfg.skip)


def run_pipeline(cfg: RunConfig, ctx: Context | None = None) -> dict[str, Any]:
    """Run compress → export → simplify → verify → precision → build → bench → report → package.

    Returns output paths and per-stage timings.
    """
    ctx = ctx or prepare(cfg)
    if "build" not in cfg.skip:  # a bad --profile fails now, not after compress and export
        from .build import run_build_options

        run_build_options(ctx)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    steps = [("compress", compress_stage), ("export", _export_stages), ("precision", precision_stage),
             ("build", build_stage), ("bench", bench_stage)]
    for name, fn in steps:
        if name in cfg.skip:
            log(f"skipping {name} (reusing saved artifacts in {ctx.artifacts.root})")
            continue
        t0 = time.perf_counter()
        fn(ctx)
        timings[name] = round(time.perf_counter() - t0, 2)
    result: dict[str, Any] = {"out": str(ctx.artifacts.root), "timings_s": timings}
    if "report" not in cfg.skip:
        json_path, md_path = report_stage(ctx)
        result.update(report_json=str(json_path), report_md=str(md_path))
    if "package" not in cfg.skip:
        t0 = time.perf_counter()
        record = package_stage(ctx)
        timings["package"] = round(time.perf_counter() - t0, 2)
        result.update(bundle=record["bundle"], bundle_archive=record["archive"])
    result["total_s"] = round(time.perf_counter() - t_all, 2)
    log(f"done in {result['total_s']:.1f}s: {Path(result['out'])}")
    return result
