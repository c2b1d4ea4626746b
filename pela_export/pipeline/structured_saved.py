"""A run's structured model on disk: ``structured.pt`` + ``structured.json`` in the
output directory, written by the compress stage and reloaded by later stages.

The spec records the options the model was built with, so a restarted run (``--skip
compress``) reuses it only when it asks for the same thing, and, once exported, the
lowering plan, so ``pela-export inspect OUT`` prints the deployment form without
measuring again.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from .._io import write_json_atomic
from ..errors import ArtifactError
from .structured_options import options_mismatch, structure_options

if TYPE_CHECKING:
    from ..structured.lowering import LoweringPlan
    from .context import Context

_RERUN = "re-run the compress stage (drop --skip compress)"


def saved_kind(spec_path: Path) -> str:
    """The ``--structure`` kind recorded in a run's structured.json ("?" when unreadable)."""
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
        return str(spec["options"]["structure"])
    except (OSError, ValueError, KeyError, TypeError):
        return "?"


def save_run_structured(ctx: Context, model: nn.Module, source: dict[str, Any],
                        extra: dict[str, Any]) -> dict[str, Any]:
    """Write the structured model of this run (atomically) and drop a stale plain low-rank one."""
    from ..structured.saved import save_structured

    arts = ctx.artifacts
    spec = save_structured(model, arts.structured_ckpt, arts.structured_spec, source=source,
                           extra={"options": structure_options(ctx.cfg), **extra})
    drop_stale(ctx, keep="structured")
    return spec


def drop_stale(ctx: Context, keep: str) -> None:
    """Remove the other kind's compressed model from the output directory (it no longer matches the run)."""
    arts = ctx.artifacts
    stale = [arts.compressed_ckpt, arts.lowrank_spec, arts.rank_table] if keep == "structured" \
        else [arts.structured_ckpt, arts.structured_spec]
    removed = [p.name for p in stale if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    if removed:
        ctx.note(f"removed the previous {'plain low-rank' if keep == 'structured' else 'structured'} model from "
                 f"{arts.root} ({', '.join(removed)}): this run's {keep} model replaces it")


def _read_checked(ctx: Context) -> dict[str, Any]:
    from ..structured.saved import read_structured_spec

    arts, cfg = ctx.artifacts, ctx.cfg
    if not arts.structured_spec.is_file():
        held = " (it holds a plain low-rank model)" if arts.lowrank_spec.is_file() else ""
        raise ArtifactError(f"no structured model saved in {arts.root}{held}, but this run asks for "
                            f"--structure {cfg.structure.kind}", fix=_RERUN + ", or pass the --out of a structured run")
    spec = read_structured_spec(arts.structured_spec)
    src = spec.get("source") or {}
    if src.get("model") != ctx.loaded.source:
        raise ArtifactError(f"the structured model in {arts.root} was made from {src.get('model')!r}, "
                            f"not {ctx.loaded.source!r}", fix=f"pass a different --out, or {_RERUN}")
    diff = options_mismatch(spec.get("options") or {}, cfg)
    if diff is not None:
        key, saved, asked = diff
        flag = {"structure_opts": "--structure-opt", "share_central": "--share-central"}.get(
            key, "--" + key.replace("_", "-"))
        raise ArtifactError(f"the saved structured model used {key}={saved!r} but this run asks for {asked!r}",
                            fix=f"{_RERUN}, or pass the same {flag} as the saved run", where=str(arts.structured_spec))
    return spec


def load_run_structured(ctx: Context) -> nn.Module:
    """The structured model saved in the output directory, checked against this run's options."""
    from ..structured.saved import load_structured

    _read_checked(ctx)
    model, _ = load_structured(copy.deepcopy(ctx.loaded.model), ctx.artifacts.structured_ckpt,
                               ctx.artifacts.structured_spec)
    return model


def record_lowering(ctx: Context, plan: LoweringPlan) -> None:
    """Add the export's lowering plan to structured.json (what ``pela-export inspect OUT`` prints)."""
    path = ctx.artifacts.structured_spec
    if not path.is_file():
        return
    spec = json.loads(path.read_text(encoding="utf-8"))
    spec["lowering"] = plan.to_dict()
    write_json_atomic(path, spec)
