"""The composed pipeline: every registered stage (:data:`.stages.PIPELINE`) runs in order unless
skipped; skipped stages reuse saved artifacts. The deployment bundle (package) is the last stage.

Under torchrun, ranks other than 0 take part in PELA training only (the compress stage raises ``RankDone``
on them after it); rank 0 alone runs the later stages and writes every file."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..errors import ArtifactError
from .config import RunConfig
from .context import Context, log, prepare
from .stages import PIPELINE, missing_inputs


def run_pipeline(cfg: RunConfig, ctx: Context | None = None) -> dict[str, Any]:
    """Run compress → export → simplify → verify → precision → build → bench → report → package.

    Returns output paths (``out``, ``report_json``/``report_md``, ``bundle``/``bundle_archive`` when those
    stages ran) and per-stage timings.
    """
    if cfg.train is None or "compress" in cfg.skip:  # no training to share: torchrun ranks > 0 have nothing to do
        from ..train.distributed import end_rank_unless_main

        end_rank_unless_main("no PELA training in this run")
    ctx = ctx or prepare(cfg)
    running = [s for s in PIPELINE if s.name not in cfg.skip]
    missing = missing_inputs(running, cfg.skip, ctx.artifacts.stage_record)
    if missing:  # before any stage runs, not after compress and export
        raise ArtifactError("\n".join(missing),
                            fix="drop the --skip of those stages, or pass the --out of an earlier run that ran them")
    for stage in running:
        stage.precheck(ctx)  # option errors (e.g. a bad --profile) before any stage runs
    timings: dict[str, float] = {}
    result: dict[str, Any] = {"out": str(ctx.artifacts.root), "timings_s": timings}
    t_all = time.perf_counter()
    for stage in PIPELINE:
        if stage.part_of is not None:
            continue  # simplify/verify run inside export
        if stage.name in cfg.skip:
            log(f"skipping {stage.name} (reusing saved artifacts in {ctx.artifacts.root})")
            continue
        t0 = time.perf_counter()
        record = stage.run(ctx)
        timings[stage.name] = round(time.perf_counter() - t0, 2)
        if record is not None:
            result.update(record.outputs())
    result["total_s"] = round(time.perf_counter() - t_all, 2)
    log(f"done in {result['total_s']:.1f}s: {Path(result['out'])}")
    return result
