"""Stage 1: model → factorized model, saved as checkpoint + spec + rank table
(``--structure KIND``: a structured model instead, see :mod:`.compress_structured`)."""
from __future__ import annotations

import itertools
from collections.abc import Callable

from torch import nn

from .._io import write_text_atomic
from ..measure import count_params
from ..errors import OptionError
from ..lowrank import CompressionResult, factorize_model, format_rank_table, save_compressed
from ..models.base import LoadedModel
from ..lowrank.select import classify_layers, describe_selection, explain_empty
from .compress_options import describe_ranks, effective_ratio, ratio_choice
from .context import Context, log
from .dataaware import data_aware_kwargs
from .records import CompressRecord


def trial_forward(loaded: LoadedModel) -> Callable[[nn.Module], object]:
    """One forward pass on dummy inputs, different ones on each call: finds layers whose weight the model code
    reads directly, and layers whose input does not depend on the model's."""
    batches = [loaded.dummy_inputs(2, seed=seed) for seed in (0, 1)]
    calls = itertools.count()
    return lambda model: model(*batches[next(calls) % 2])


def _check_conv_option(ctx: Context) -> None:
    """``--conv-decomposition`` on a selection without convolutions would do nothing: say so instead."""
    given = ctx.cfg.compress.conv_decomposition
    if given is None:
        return
    choices = classify_layers(ctx.original(), ctx.cfg.compress.include, ctx.cfg.compress.exclude)
    if not any(c.chosen and isinstance(c.module, nn.Conv2d) for c in choices):
        convs = [c for c in choices if isinstance(c.module, nn.Conv2d)]
        what = (f"none of its {len(convs)} Conv2d layers is selected (e.g. {convs[0].name}: {convs[0].reason})"
                if convs else "it has no nn.Conv2d layer")
        raise OptionError(f"--conv-decomposition {given} was given, but {ctx.loaded.name!r} would factorize no "
                          f"convolution: {what}",
                          fix="drop --conv-decomposition, or select convolutions with --include GLOB "
                              "(`pela-export inspect MODEL` lists them)")


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
                          fix="choose layers by name with --include GLOB (repeatable); `pela-export inspect MODEL` "
                              "lists every Linear/Conv2d and why it was left out")
    raise OptionError(f"no layer of {ctx.loaded.name!r} was factorized ({len(result.layers)} eligible, all skipped: "
                      "factorizing would not save parameters at this ratio)",
                      fix="lower --ratio, or widen the selection with --include GLOB")


def _latency_artifact(ctx: Context, latency: bool) -> dict[str, str]:
    """The run's latency table, which the bundle carries for ``pela-export device-latency``."""
    from .latency import table_path

    return {"latency_table": str(table_path(ctx))} if latency and table_path(ctx).is_file() else {}


def _latency_kwargs(ctx: Context, extra: dict[str, object]) -> bool:
    """Measure the latency table (and budgets) when the rank policy reads them; True when it does."""
    from ..lowrank import RANK_ALLOCATORS

    if "latency" not in RANK_ALLOCATORS.get(ctx.cfg.compress.rank_policy).needs:
        return False
    from .latency import latency_model

    extra.update(latency=latency_model(ctx), latency_budget=ctx.cfg.compress.latency_budget,
                 max_drop=ctx.cfg.compress.max_drop)
    return True


def compress_stage(ctx: Context) -> CompressRecord:
    """Factorize, save (atomically) and record; returns the stage record."""
    cfg = ctx.cfg
    if cfg.train is None:  # under torchrun, ranks > 0 only train (and end after it, in train_stage); rank 0 writes
        from ..train.distributed import end_rank_unless_main

        end_rank_unless_main("no --train, nothing to share")
    if cfg.structure.kind is not None:
        from .compress_structured import structured_compress_stage

        return structured_compress_stage(ctx)
    choice = ratio_choice(cfg)
    if choice is not None:
        ctx.note(choice)
    log(f"compressing {ctx.loaded.name}: method={cfg.compress.method}, rank policy={cfg.compress.rank_policy}, {describe_ranks(cfg)}"
        + (f", align={cfg.compress.align}" if cfg.compress.align else ""))
    _check_conv_option(ctx)
    extra, calibration = data_aware_kwargs(ctx)
    latency = _latency_kwargs(ctx, extra)
    result = factorize_model(ctx.original(), ratio=effective_ratio(cfg), method=cfg.compress.method, rank_policy=cfg.compress.rank_policy,
                             align=cfg.compress.align, include=cfg.compress.include, exclude=cfg.compress.exclude,
                             conv_decomposition=cfg.compress.conv_decomposition, trial=trial_forward(ctx.loaded),
                             **extra)
    _check_selection(ctx, result)
    if latency:
        from .latency import note_latency_result

        note_latency_result(ctx, result.policy_inputs.get("latency") or {})
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
                   "rank_table": str(ctx.artifacts.rank_table), **_latency_artifact(ctx, latency)},
    )
    return ctx.save_record(record)
