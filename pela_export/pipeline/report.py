"""Stage 6: merge the stage records into ``report.json`` + ``report.md`` (+ PNG charts)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..report import build_report, write_report
from .context import Context, log
from .records import BenchRecord, BuildRecord, CompressRecord, ExportRecord, PrecisionRecord, Record, ReportRecord


def _merged_choices(ctx: Context, records: list[Record]) -> list[str]:
    seen: list[str] = []
    for choice in [c for r in records for c in r.automatic_choices] + ctx.choices:
        if choice not in seen:
            seen.append(choice)
    return seen


def report_stage(ctx: Context) -> tuple[Path, Path]:
    """Write the report; returns (report.json, report.md)."""
    record = run_report(ctx)
    return Path(record.report_json), Path(record.report_md)


def run_report(ctx: Context) -> ReportRecord:
    """Write ``report.json`` + ``report.md`` from the saved records, and record where they are."""
    from ..report.charts import charts_record
    from ..report.markdown_structured import summarize_structured
    from ..report.stage_summary import summarize_build, summarize_precision

    comp = ctx.load_record(CompressRecord, needed_by="report")
    exp = ctx.load_record(ExportRecord, needed_by="report")
    bench = ctx.load_record(BenchRecord, needed_by="report")
    precision = ctx.optional_record(PrecisionRecord, needed_by="report")
    build = ctx.optional_record(BuildRecord, needed_by="report")
    artifacts = {"output_dir": str(ctx.artifacts.root), **comp.artifacts, "onnx": exp.final_onnx,
                 "onnx_raw": exp.raw_onnx}
    report = build_report(
        model=ctx.loaded.describe() | {"extra": {k: v for k, v in ctx.loaded.extra.items() if isinstance(v, (int, float, str))}},
        compression=comp.compression | {"params": comp.params},
        export=exp.export,
        verification=exp.verification,
        benchmarks=bench.benchmarks,
        accuracy=bench.accuracy,
        automatic_choices=_merged_choices(ctx, [r for r in (comp, exp, bench, precision, build) if r is not None]),
        settings=ctx.cfg.settings(),
        artifacts=artifacts,
        precision=None if precision is None else summarize_precision(
            precision, source=str(ctx.artifacts.stage_record("precision")),
            fp32_optimization=(bench.onnxruntime_session or {}).get("graph_optimization")),
        build=None if build is None else summarize_build(build, source=str(ctx.artifacts.stage_record("build"))),
        structured=summarize_structured(comp, exp),
        shapes=bench.shapes,
    )
    if report.get("precision"):
        for name, per_batch in bench.precision_latency.items():
            if name in report["precision"]["variants"]:
                report["precision"]["variants"][name]["latency"] = per_batch
    report["charts"] = charts_record(report, ctx.artifacts.root)
    if report["charts"]["skipped"]:
        log(f"charts skipped: {report['charts']['skipped']}")
    json_path, md_path = write_report(report, ctx.artifacts.root)
    log(f"report written: {md_path} and {json_path}")
    return ctx.save_record(ReportRecord(report_json=str(json_path), report_md=str(md_path)))
