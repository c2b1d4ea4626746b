"""Stage 1: model → factorized model, saved as checkpoint + spec + rank table
(``--structure KIND``: a structured model instead, see :mod:`.compress_structured`)."""
from __future__ import annotations

from .._io import write_text_atomic
from ..measure import count_params
from ..lowrank import factorize_model, format_rank_table, save_compressed
from .compress_options import describe_ranks, effective_ratio, ratio_choice
from .context import Context, log
from .dataaware import data_aware_kwargs
from .records import CompressRecord


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
    if not result.factorized:
        from ..errors import OptionError

        raise OptionError(
            f"no layer of {ctx.loaded.name!r} was factorized ({len(result.layers)} eligible, all skipped)",
            fix="check --include/--exclude globs against the layer names (`pela-export inspect MODEL`), or lower --ratio")
    if cfg.compress.include is None or cfg.compress.exclude is None:
        ctx.note("layer selection uses the default globs (attention and MLP linears; patch embed, norms, head kept dense)")
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
