"""Stage 1: model → factorized model, saved as checkpoint + spec + rank table
(``--structure KIND``: a structured model instead, see :mod:`.compress_structured`)."""
from __future__ import annotations

from .._io import write_text_atomic
from ..measure import count_params
from ..errors import OptionError
from ..lowrank import CompressionResult, factorize_model, format_rank_table, save_compressed
from ..lowrank.select import classify_layers, describe_selection, explain_empty
from .compress_options import describe_ranks, effective_ratio, ratio_choice
from .context import Context, log
from .dataaware import data_aware_kwargs
from .records import CompressRecord


def _check_selection(ctx: Context, result: CompressionResult) -> None:
    """Record the selection rule when it was (partly) the default; refuse a run that factorizes nothing, saying why."""
    inc, exc = ctx.cfg.compress.include, ctx.cfg.compress.exclude
    choices = classify_layers(ctx.original(), inc, exc)
    if inc is None or exc is None:
        ctx.note(describe_selection(inc, exc, choices))
    if result.factorized:
        return
    if not result.layers:
        raise OptionError(f"no layer of {ctx.loaded.name!r} was factorized: {explain_empty(ctx.original(), choices)}",
                          fix="choose Linears by name with --include GLOB (repeatable); `pela-export inspect MODEL` "
                              "lists every Linear and why it was left out")
    raise OptionError(f"no layer of {ctx.loaded.name!r} was factorized ({len(result.layers)} eligible, all skipped: "
                      "factorizing would not save parameters at this ratio)",
                      fix="lower --ratio, or widen the selection with --include GLOB")


def compress_stage(ctx: Context) -> CompressRecord:
    """Factorize, save (atomically) and record; returns the stage record."""
    cfg = ctx.cfg
    if cfg.structure.kind is not None:
        from .compress_structured import structured_compress_stage

        return structured_compress_stage(ctx)
    choice = ratio_choice(cfg)
    if choice is not None:
        ctx.note(choice)
    log(f"compressing {ctx.loaded.name}: method={cfg.compress.method}, rank policy={cfg.compress.rank_policy}, {describe_ranks(cfg)}"
        + (f", align={cfg.compress.align}" if cfg.compress.align else ""))
    extra, calibration = data_aware_kwargs(ctx)
    result = factorize_model(ctx.original(), ratio=effective_ratio(cfg), method=cfg.compress.method, rank_policy=cfg.compress.rank_policy,
                             align=cfg.compress.align, include=cfg.compress.include, exclude=cfg.compress.exclude, **extra)
    _check_selection(ctx, result)
    training = None
    if cfg.train is not None:
        from .train import train_stage

        training = train_stage(ctx, result.model)
    source = {"model": ctx.loaded.source, "checkpoint": cfg.model.checkpoint, "input_shape": list(ctx.loaded.input_shape),
              "trained": training is not None}
    save_compressed(result, ctx.artifacts.compressed_ckpt, ctx.artifacts.lowrank_spec, source=source)
    from .structured_saved import drop_stale

    drop_stale(ctx, keep="lowrank")
    table = format_rank_table(result)
    write_text_atomic(ctx.artifacts.rank_table, f"# Ranks: {ctx.loaded.name} ({describe_ranks(cfg)})\n\n{table}\n")
    print(table)
    ctx.set_compressed(result.model)
    record = CompressRecord(
        compression=result.to_dict(),
        params={"original": count_params(ctx.original()), "compressed": count_params(result.model)},
        calibration=calibration,
        training=training,
        artifacts={"checkpoint": str(ctx.artifacts.compressed_ckpt), "spec": str(ctx.artifacts.lowrank_spec),
                   "rank_table": str(ctx.artifacts.rank_table)},
    )
    return ctx.save_record(record)
