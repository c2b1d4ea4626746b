"""The export stage's part for ``--structure`` models: choose each structured layer's
deployable form (measured on ONNX Runtime unless the user set it), lower the model,
and check the exported graphs hold no DFT op (TensorRT <= 10 has none) unless
``--allow-dft``.

The ONNX file is verified against the *un-lowered* structured module, so a wrong
lowering fails verification; the weight-preservation check runs on the lowered
model, because its weights are the ones the graph holds (see :func:`param_check_notes`).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any

import torch
from torch import nn

from ..errors import OptionError
from ..structured.base import StructuredLinear
from .context import Context, log


def structured_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, StructuredLinear)]


def check_override_globs(names: list[str], overrides: Mapping[str, str]) -> None:
    """Every ``--lowering-override`` glob must name at least one structured layer (never ignored silently)."""
    for glob in overrides:
        if not any(fnmatchcase(n, glob) for n in names):
            shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            raise OptionError(f"--lowering-override {glob!r} matches no structured layer",
                              fix=f"use a glob over the structured layer names ({shown}), e.g. '*fc1'")


def layer_tokens(ctx: Context, model: nn.Module) -> tuple[int, str]:
    """Tokens per sample at the structured layers' inputs, seen in one forward pass on a dummy input."""
    shapes: dict[str, tuple[int, ...]] = {}

    def hook(name: str) -> Any:
        def record(_m: nn.Module, inp: tuple[Any, ...], _out: Any) -> None:  # returns None: output unchanged
            shapes.setdefault(name, tuple(inp[0].shape))
        return record

    hooks = [m.register_forward_hook(hook(name)) for name, m in model.named_modules()
             if isinstance(m, StructuredLinear)]
    try:
        with torch.no_grad():
            model.eval()(ctx.loaded.dummy_input(1))
    finally:
        for h in hooks:
            h.remove()
    counts = Counter(math.prod(s[1:-1]) if len(s) > 2 else 1 for s in shapes.values())
    if not counts:
        raise OptionError("no structured layer ran in a forward pass on the model's dummy input, so the lowering "
                          "cannot be measured", fix="check --include/--exclude select layers the model uses")
    tokens = counts.most_common(1)[0][0]
    if len(counts) > 1:
        ctx.note(f"structured layers see different token counts per sample ({dict(counts)} layers); "
                 f"each layer's lowering is timed at {tokens} tokens")
    return tokens, f"measured: forward pass on a dummy input ({tokens} tokens per sample)"


def lower_for_export(ctx: Context, model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """(the model with every structured layer in its chosen form, the export record's ``structured`` part)."""
    from ..structured.lowering import apply_lowering, plan_lowering
    from .structured_saved import record_lowering

    cfg = ctx.cfg
    overrides = dict(cfg.structure.lowering_overrides or {})
    check_override_globs(structured_names(model), overrides)
    form = None if cfg.structure.lowering == "auto" else cfg.structure.lowering
    tokens, origin = layer_tokens(ctx, model)
    threads = cfg.bench.threads or 1
    log(f"planning the lowering of {len(structured_names(model))} structured layer(s): "
        + (f"--lowering {form}" if form else "fastest measured form per layer")
        + (f", overrides {overrides}" if overrides else "") + f" (ONNX Runtime, {threads} thread(s), {tokens} tokens)")
    plan = plan_lowering(model, tokens=tokens, batch=1, form=form, overrides=overrides, allow_dft=cfg.structure.allow_dft,
                         threads=threads, warmup=cfg.bench.warmup, runs=cfg.bench.runs, opset=cfg.export.opset, exporter="legacy")
    plan.settings["tokens_origin"] = origin
    chosen = Counter(lp.chosen for lp in plan.layers)
    if form is None:
        ctx.note("structured layers deployed in the fastest form measured per layer on ONNX Runtime "
                 f"({', '.join(f'{f} x{n}' for f, n in chosen.items())}; pass --lowering or --lowering-override "
                 "to choose)")
    print(plan.format())
    lowered = apply_lowering(model, plan)
    record_lowering(ctx, plan)
    return lowered, {"lowering": plan.to_dict(), "chosen": dict(chosen), "allow_dft": cfg.structure.allow_dft}


def check_dft(ctx: Context, paths: list[str], record: dict[str, Any]) -> None:
    """Refuse DFT nodes in the exported compressed graphs (unless ``--allow-dft``); record what was found."""
    from ..export import load_onnx
    from ..structured.lowering import assert_no_dft, find_dft

    found: dict[str, list[str]] = {}
    for path in dict.fromkeys(paths):
        proto = load_onnx(path, check=False)
        found[path] = find_dft(proto)
        assert_no_dft(proto, allow_dft=ctx.cfg.structure.allow_dft, where=path)
    record["dft_nodes"] = found
    if ctx.cfg.structure.allow_dft and any(found.values()):
        ctx.note("the compressed ONNX holds DFT nodes (--allow-dft): TensorRT <= 10 cannot parse it")


def deployed_params(path: str) -> int:
    """Float weight elements of the final compressed ONNX (the "deployed" count of the accounting)."""
    from ..export import load_onnx
    from ..structured.accounting import deployed_params as count

    return count(load_onnx(path, check=False))


def param_check_notes(record: Mapping[str, Any], lowered: nn.Module) -> list[str]:
    """Why the weight check looks the way it does for a structured model (stored in the verification record)."""
    from ..lowrank.layer import LowRankLinear

    partly: list[str] = []
    count_only: list[str] = []
    for lp in (record.get("lowering") or {}).get("layers") or []:
        module = lowered.get_submodule(lp["name"])
        if isinstance(module, LowRankLinear):
            continue
        inner = any(isinstance(m, LowRankLinear) for m in module.modules())
        (partly if inner else count_only).append(f"{lp['name']} ({lp['chosen']})")
    notes = [("outputs compared with the structured PyTorch module (un-lowered), weights with the lowered model "
              "(the forms chosen by the lowering plan), whose weights are the ones the graph holds")]
    partly_why = "the factor pairs of their low-rank base are checked, the rest of the layer by the weight count"
    count_why = "no LowRankLinear once lowered, so no factor pair to check: covered by the weight count only"
    for layers, what in ((partly, partly_why), (count_only, count_why)):
        if layers:
            notes.append(f"{len(layers)} structured layer(s): {what}: " + ", ".join(layers[:6])
                         + (", ..." if len(layers) > 6 else ""))
    return notes
