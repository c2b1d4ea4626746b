"""Stage 1 with ``--structure KIND``: the model → a structured student (MPO, a structured
adapter or a SNELL delta, a registered layer type), optionally trained, saved as
``structured.pt`` + ``structured.json``, with honest parameter accounting.

"Trainable" is what the method trains: the structured layers' own parameters that are
not frozen (an adapter's base is; MPO cores are not), so the rest of the network is
marked frozen here too, exactly as :func:`~pela_export.structured.train.train_structured`
would leave it; ``--train --train-scope all`` trains (and counts) everything.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ..measure import count_params
from ..errors import OptionError
from ..structured.apply import StructureRecord
from ..structured.base import StructuredLinear, count_unique
from .context import Context, log
from .records import CompressRecord
from .compress_options import effective_ratio
from .structured_options import resolved_base


def _notes(ctx: Context, base: str | None) -> None:
    cfg = ctx.cfg
    if base == "lowrank" and cfg.structure.structure_base is None:
        ctx.note(f"--structure {cfg.structure.kind}: the delta sits on a frozen plain-SVD base at k={effective_ratio(cfg):g}"
                 f"{'' if cfg.compress.ratio is not None else ' (default --ratio)'}, as in bench/structured_methods.py; "
                 "pass --structure-base dense for the delta on the dense weights")
    if cfg.compress.include is None or cfg.compress.exclude is None:
        from ..lowrank.select import classify_layers, describe_selection

        choices = classify_layers(ctx.original(), cfg.compress.include, cfg.compress.exclude)
        ctx.note(describe_selection(cfg.compress.include, cfg.compress.exclude, choices))


def _share(student: nn.Module) -> dict[str, Any]:
    from ..structured.sharing import share_central_cores

    report = share_central_cores(student, "auto")
    if not report.groups:
        raise OptionError("--share-central found no two MPO layers to share a central core: none have the same name "
                          "pattern (block index replaced by *) and the same core shapes",
                          fix="drop --share-central, or fix the bond dimension (--structure-opt bond_dim=N) so "
                              "matching projections get equal cores")
    log(f"sharing central cores: {len(report.groups)} group(s), stored parameters "
        f"{report.params_before:,} -> {report.params_after:,}")
    return report.to_dict()


def _rows(original: nn.Module, rec: StructureRecord, student: nn.Module) -> list[dict[str, Any]]:
    """Compression-table rows (same keys as the low-rank ones, so the report's table renders them)."""
    rows = []
    for e in rec.layers:
        layer = student.get_submodule(e.name)
        ref = original.get_submodule(e.name)
        err = None
        weight = getattr(ref, "weight", None)
        if isinstance(layer, StructuredLinear) and isinstance(weight, torch.Tensor):
            with torch.no_grad():
                w = weight.detach().float()
                err = float(torch.linalg.norm(layer.effective_weight().detach().float() - w)
                            / max(float(torch.linalg.norm(w)), 1e-12))
        rows.append({"name": e.name, "kind": e.kind, "shape": [e.out_features, e.in_features],
                     "in_features": e.in_features, "out_features": e.out_features, "rank": None,
                     "params_before": e.params_before, "params_after": e.stored, "trainable": e.trainable,
                     "rel_error": err, "status": "structured",
                     "reason": f"{e.kind} (base: {e.base})" + (f"; {e.note}" if e.note else "")})
    return rows


def _totals(student: nn.Module, rec: StructureRecord) -> dict[str, Any]:
    layers = [m for m in student.modules() if isinstance(m, StructuredLinear)]
    after = count_unique([p for m in layers for p in m.parameters()], [b for m in layers for b in m.buffers()])
    before = sum(e.params_before for e in rec.layers)
    return {"params_before_factorized_layers": before, "params_after_factorized_layers": after.stored,
            "reduction_in_factorized_layers": 1.0 - after.stored / max(before, 1),
            "layers_factorized": len(rec.layers), "layers_eligible": len(rec.layers),
            "note": "structured layers; a shared tensor counted once"}


def structured_compress_stage(ctx: Context) -> CompressRecord:
    """Structure, share, train (if asked), save and record; returns the stage record."""
    from ..structured.accounting import account
    from ..structured.apply import structure_model
    from ..structured.train import set_trainable
    from .structured_saved import save_run_structured

    cfg = ctx.cfg
    kind = cfg.structure.kind
    if kind is None:
        raise OptionError("the structured compress stage needs a layer type", fix="pass --structure KIND")
    base = resolved_base(cfg)
    _notes(ctx, base)
    opts = ", ".join(f"{k}={v}" for k, v in (cfg.structure.structure_opts or {}).items()) or "defaults"
    log(f"structuring {ctx.loaded.name}: --structure {kind} ({opts})" + (f", base {base}" if base else "")
        + (f" k={effective_ratio(cfg):g}" if base == "lowrank" else "") + (", sharing central cores" if cfg.structure.share_central else ""))
    original = ctx.original()
    student, first = structure_model(original, kind, include=cfg.compress.include, exclude=cfg.compress.exclude,
                                     hyper=cfg.structure.structure_opts, base=base or "dense",
                                     ratio=effective_ratio(cfg))
    sharing = _share(student) if cfg.structure.share_central else None
    training = None
    if cfg.train is not None:
        from .train import train_stage

        training = train_stage(ctx, student, structured=True)
    else:
        set_trainable(student, "layers")  # what the method trains: the structured layers' own parameters
    student.eval()
    rec = StructureRecord.from_model(student, kind=kind, bases={e.name: e.base for e in first.layers},
                                     notes={e.name: e.note for e in first.layers}, hyper=dict(cfg.structure.structure_opts or {}),
                                     base=base, ratio=first.ratio, include=first.include, exclude=first.exclude)
    print(rec.format())
    params = account(f"structured:{kind}", student)
    source = {"model": ctx.loaded.source, "checkpoint": cfg.model.checkpoint, "input_shape": list(ctx.loaded.input_shape),
              "trained": training is not None}
    save_run_structured(ctx, student, source, {"record": rec.to_dict()})
    ctx.set_compressed(student)
    record = CompressRecord(
        compression={"method": f"structured:{kind}", "structure": kind, "ratio": first.ratio,
                     "layers": _rows(original, rec, student), "totals": _totals(student, rec)},
        structured={"kind": kind, "hyper": rec.hyper, "base": base, "ratio": first.ratio,
                    "share_central": cfg.structure.share_central, "sharing": sharing,
                    "params": {"trainable": params.trainable, "stored": params.stored},
                    "layers": [dataclasses.asdict(e) for e in rec.layers]},
        params={"original": count_params(original), "compressed": count_params(student)},
        calibration=None,
        training=training,
        artifacts={"checkpoint": str(ctx.artifacts.structured_ckpt), "spec": str(ctx.artifacts.structured_spec)},
    )
    return ctx.save_record(record)
