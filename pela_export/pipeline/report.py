"""Stage 6: merge the stage records into ``report.json`` + ``report.md`` (+ PNG charts)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..report import build_report, write_report
from .context import Context, log

#: Stages whose records the report shows when they ran (absent when skipped or never run).
OPTIONAL_STAGES = ("precision", "build")


def _merged_choices(ctx: Context, records: list[dict[str, Any]]) -> list[str]:
    seen: list[str] = []
    for choice in [c for r in records for c in r.get("automatic_choices", [])] + ctx.choices:
        if choice not in seen:
            seen.append(choice)
    return seen


def _optional_records(ctx: Context) -> dict[str, dict[str, Any]]:
    """The precision/build records that exist in this output directory."""
    return {name: ctx.load_record(name, needed_by="report") for name in OPTIONAL_STAGES
            if ctx.artifacts.stage_record(name).is_file()}


def report_stage(ctx: Context) -> tuple[Path, Path]:
    from ..report.charts import charts_record
    from ..report.markdown_structured import summarize_structured
    from ..report.stage_summary import summarize_build, summarize_precision

    comp = ctx.load_record("compress", needed_by="report")
    exp = ctx.load_record("export", needed_by="report")
    bench = ctx.load_record("bench", needed_by="report")
    optional = _optional_records(ctx)
    artifacts = {"output_dir": str(ctx.artifacts.root), **comp.get("artifacts", {}),
                 "onnx": exp.get("final_onnx", {}), "onnx_raw": exp.get("raw_onnx", {})}
    precision = optional.get("precision")
    build = optional.get("build")
    report = build_report(
        model=ctx.loaded.describe() | {"extra": {k: v for k, v in ctx.loaded.extra.items() if isinstance(v, (int, float, str))}},
        compression=comp["compression"] | {"params": comp.get("params", {})},
        export=exp.get("export", {}),
        verification=exp.get("verification", {}),
        benchmarks=bench["benchmarks"],
        accuracy=bench.get("accuracy"),
        automatic_choices=_merged_choices(ctx, [comp, exp, bench, *optional.values()]),
        settings=ctx.cfg.to_dict(),
        artifacts=artifacts,
        precision=None if precision is None else summarize_precision(
            precision, source=str(ctx.artifacts.stage_record("precision")),
            fp32_optimization=(bench.get("onnxruntime_session") or {}).get("graph_optimization")),
        build=None if build is None else summarize_build(build, source=str(ctx.artifacts.stage_record("build"))),
        structured=summarize_structured(comp, exp),
        shapes=bench.get("shapes"),
    )
    if report.get("precision"):
        for name, per_batch in (bench.get("precision_latency") or {}).items():
            if name in report["precision"]["variants"]:
                report["precision"]["variants"][name]["latency"] = per_batch
    report["charts"] = charts_record(report, ctx.artifacts.root)
    if report["charts"]["skipped"]:
        log(f"charts skipped: {report['charts']['skipped']}")
    json_path, md_path = write_report(report, ctx.artifacts.root)
    log(f"report written: {md_path} and {json_path}")
    return json_path, md_path
