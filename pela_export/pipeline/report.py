"""Stage 6: merge the stage records into ``report.json`` + ``report.md``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..bench import build_report, write_report
from .context import Context, log


def _merged_choices(ctx: Context, records: list[dict[str, Any]]) -> list[str]:
    seen: list[str] = []
    for choice in [c for r in records for c in r.get("automatic_choices", [])] + ctx.choices:
        if choice not in seen:
            seen.append(choice)
    return seen


def report_stage(ctx: Context) -> tuple[Path, Path]:
    comp = ctx.load_record("compress", needed_by="report")
    exp = ctx.load_record("export", needed_by="report")
    bench = ctx.load_record("bench", needed_by="report")
    artifacts = {"output_dir": str(ctx.artifacts.root), **comp.get("artifacts", {}),
                 "onnx": exp.get("final_onnx", {}), "onnx_raw": exp.get("raw_onnx", {})}
    report = build_report(
        model=ctx.loaded.describe() | {"extra": {k: v for k, v in ctx.loaded.extra.items() if isinstance(v, (int, float, str))}},
        compression=comp["compression"] | {"params": comp.get("params", {})},
        export=exp.get("export", {}),
        verification=exp.get("verification", {}),
        benchmarks=bench["benchmarks"],
        accuracy=bench.get("accuracy"),
        automatic_choices=_merged_choices(ctx, [comp, exp, bench]),
        settings=ctx.cfg.to_dict(),
        artifacts=artifacts,
    )
    json_path, md_path = write_report(report, ctx.artifacts.root)
    log(f"report written: {md_path} and {json_path}")
    return json_path, md_path
