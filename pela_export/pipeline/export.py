"""Stages 2–4: trace both variants to ONNX, simplify, and verify every file
against PyTorch (outputs within tolerance, factorized weights preserved)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import PelaExportError, VerificationError
from ..export import export_onnx, load_onnx, simplify_onnx
from ..export.params import check_parameter_preservation
from ..export.onnx_export import export_example
from ..export.verify import as_feeds, describe_feeds, make_verification_inputs, verify_onnx
from .context import Context, log
from .evaldata import evaluation_data
from .records import ExportRecord

REAL_VERIFY_SAMPLES = 16


def _real_inputs(ctx: Context) -> np.ndarray | None:
    """A few real samples for verification when the model has a dataset."""
    if ctx.cfg.data.eval_data is None and ctx.loaded.default_dataset is None:
        return None
    return evaluation_data(ctx, limit=REAL_VERIFY_SAMPLES).x


def export_stage(ctx: Context, simplify: bool = True, verify: bool = True) -> ExportRecord:
    """Write ``<variant>.onnx`` (+ ``<variant>.sim.onnx``), verify each, and record the final files."""
    cfg, loaded, arts = ctx.cfg, ctx.loaded, ctx.artifacts
    models = {"original": ctx.original(), "compressed": ctx.compressed()}
    exported = dict(models)  # what is traced: a --structure model in its planned deployable forms
    structured: dict[str, Any] | None = None
    if cfg.structure.kind is not None:
        from .export_structured import lower_for_export

        exported["compressed"], structured = lower_for_export(ctx, models["compressed"])
    example = export_example(loaded, 2 if cfg.export.dynamic_batch else 1)
    exports: dict[str, Any] = {}
    simplified: dict[str, Any] = {}
    raw: dict[str, str] = {}
    final: dict[str, str] = {}
    for variant, model in exported.items():
        log(f"exporting {variant} to ONNX (opset {cfg.export.opset}, {cfg.export.exporter} exporter, "
            f"{'dynamic batch' if cfg.export.dynamic_batch else 'static shapes'})")
        res = export_onnx(model, example, arts.onnx(variant), io=loaded.spec,
                          opset=cfg.export.opset, dynamic_batch=cfg.export.dynamic_batch,
                          exporter=cfg.export.exporter, fallback_exporter=cfg.export.exporter_fallback)  # type: ignore[arg-type]
        for choice in [*res.auto_choices, *res.conversions]:
            ctx.note(f"{variant} export: {choice}")
        if res.fallback_reason:
            ctx.note(f"{variant} export fell back to the {res.exporter} exporter: {res.fallback_reason}")
        for w in res.exporter_warnings[:5]:
            log(f"[yellow]{variant} exporter warning:[/] {w}")
        exports[variant] = res.to_dict()
        raw[variant] = final[variant] = str(res.path)
        if simplify:
            log(f"simplifying {variant} with {cfg.export.simplifier}")
            sres = simplify_onnx(res.path, arts.onnx(variant, simplified=True), method=cfg.export.simplifier)
            for w in sres.warnings:
                ctx.note(f"{variant} simplify: {w}")
            simplified[variant] = sres.to_dict()
            final[variant] = str(sres.dst)
    if structured is not None:
        from .export_structured import check_dft, deployed_params, param_check_notes

        check_dft(ctx, [raw["compressed"], final["compressed"]], structured)
        structured["deployed_params"] = deployed_params(final["compressed"])
        structured["deployed_onnx"] = final["compressed"]
    verification: dict[str, Any] = {}
    if verify:
        notes = {"compressed": param_check_notes(structured, exported["compressed"])} if structured else None
        verification = verify_files(ctx, models, {v: [raw[v]] + ([final[v]] if final[v] != raw[v] else []) for v in models},
                                    param_models=exported, notes=notes)
    else:
        ctx.note("verification skipped on request (--skip verify): ONNX outputs were not compared with PyTorch")
    record = ExportRecord(export={"exports": exports, "simplify": simplified}, verification=verification,
                          raw_onnx=raw, final_onnx=final, structured=structured, io=loaded.spec)
    return ctx.save_record(record)


def verify_files(ctx: Context, models: dict[str, Any], files: dict[str, list[str]], *,
                 param_models: dict[str, Any] | None = None,
                 notes: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Compare every ONNX file with its PyTorch model and check weights; raise once, listing all failures.

    ``param_models`` (default ``models``) are the models whose weights the graphs should hold: for a
    structured model the lowered one, while outputs are compared with the un-lowered module;
    ``notes`` per variant say why (stored with each file's result).
    """
    param_models = param_models or models
    loaded = ctx.loaded
    batch_sizes = (1, 4) if ctx.cfg.export.dynamic_batch else (1,)
    inputs = make_verification_inputs(loaded, real=_real_inputs(ctx), batch_sizes=batch_sizes)
    results: dict[str, Any] = {}
    failures: list[str] = []
    for variant, paths in files.items():
        for path in paths:
            log(f"verifying {path} against PyTorch on {len(inputs)} input batches")
            vres = verify_onnx(models[variant], path, inputs, ctx.tolerance, loaded.spec.input_names,
                               loaded.spec.output_names, threads=ctx.cfg.bench.threads)
            try:
                pres = check_parameter_preservation(param_models[variant], load_onnx(path), raise_on_failure=False)
            except PelaExportError as exc:  # a check that cannot run is a failure, not a pass
                failures.append(f"{path}: parameter check failed to run: {exc}")
                pres = None
            results[path] = {"variant": variant, "outputs": vres.to_dict(),
                             "parameters": pres.to_dict() if pres is not None else None,
                             "ok": vres.ok and (pres is not None and pres.ok)}
            if notes and notes.get(variant):
                results[path]["parameter_check_notes"] = notes[variant]
            failures += [f"{path}: {f}" for f in vres.failures()]
            if pres is not None:
                failures += [f"{path}: {p}" for p in pres.problems()]
    if failures:
        raise VerificationError(
            f"ONNX verification failed (atol={ctx.tolerance.atol:g}, rtol={ctx.tolerance.rtol:g})",
            failures=failures, where="verify",
            fix="if the gap is expected pass --atol/--rtol; try --legacy-exporter or --simplifier none/onnxslim; "
                "a missing factor means constant folding merged U·V (use --simplifier none)")
    return {"ok": True, "tolerance": {"atol": ctx.tolerance.atol, "rtol": ctx.tolerance.rtol},
            "inputs": [describe_feeds(as_feeds(x, loaded.spec.input_names)) if not isinstance(x, np.ndarray)
                       else list(x.shape) for x in inputs], "files": results}
