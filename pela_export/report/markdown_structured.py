"""The report's "Structured layers" part (``--structure`` runs): the method's trainable,
stored and deployed parameters, and per layer the deployment form chosen and why.

``summarize_structured`` condenses the compress and export stage records into the
``structured`` key of ``report.json``; ``structured_section`` renders it for
``report.md`` from the report dict alone, like every other section.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .markdown import DASH, _esc, fmt, table

if TYPE_CHECKING:
    from ..pipeline.records import CompressRecord, ExportRecord


def summarize_structured(compress: CompressRecord, export: ExportRecord | None) -> dict[str, Any] | None:
    """The report's ``structured`` object, or None for a plain low-rank run."""
    comp = compress.structured
    if comp is None:
        return None
    exp = (export.structured if export is not None else None) or {}
    plan = exp.get("lowering") or {}
    planned = {lp.get("name"): lp for lp in plan.get("layers") or [] if isinstance(lp, Mapping)}
    layers = []
    for e in comp.get("layers") or []:
        lp = planned.get(e.get("name"), {})
        layers.append({
            "name": e.get("name"), "kind": e.get("kind"), "shape": [e.get("out_features"), e.get("in_features")],
            "base": e.get("base"), "trainable": e.get("trainable"), "stored": e.get("stored"),
            "dense": e.get("params_before"), "chosen": lp.get("chosen"), "rank": lp.get("rank"), "why": lp.get("why"),
            "candidates": [{"form": c.get("form"), "rank": c.get("rank"), "p50_ms": c.get("p50_ms"),
                            "deployed_params": c.get("deployed_params")} for c in lp.get("candidates") or []],
            "unavailable": lp.get("unavailable") or {}})
    sharing = comp.get("sharing") or {}
    params = dict(comp.get("params") or {})
    params["deployed"] = exp.get("deployed_params")
    return {"method": comp.get("kind"), "hyper": comp.get("hyper") or {}, "base": comp.get("base"),
            "ratio": comp.get("ratio"), "share_central": bool(comp.get("share_central")),
            "shared_groups": [g.get("layers") for g in sharing.get("groups") or []],
            "params": params, "deployed_onnx": exp.get("deployed_onnx"),
            "lowering_settings": plan.get("settings") or {}, "dft_nodes": exp.get("dft_nodes"),
            "exported": bool(exp), "layers": layers}


def _candidates(layer: Mapping[str, Any]) -> str:
    cands = [f"{c.get('form')}{':' + str(c['rank']) if c.get('rank') else ''} {c['p50_ms']:.4f} ms "
             f"({fmt(c.get('deployed_params'))})" for c in layer.get("candidates") or [] if c.get("p50_ms") is not None]
    unav = [f"{f}: unavailable" for f in layer.get("unavailable") or {}]
    return _esc("; ".join(cands + unav)) or DASH


def structured_section(report: Mapping[str, Any]) -> list[str]:
    """Method-level parameter counts and one row per structured layer (empty for plain runs)."""
    s = report.get("structured")
    if not s:
        return []
    p = s.get("params") or {}
    hyper = ", ".join(f"{k}={v}" for k, v in (s.get("hyper") or {}).items()) or "defaults"
    base = f"; base: {s['base']}" + (f" (plain SVD at k={s['ratio']:g})" if s.get("ratio") else "") \
        if s.get("base") else ""
    groups = s.get("shared_groups") or []
    lines = ["## Structured layers", "",
             f"Method: **{_esc(s.get('method'))}** ({_esc(hyper)}{_esc(base)})"
             + (f"; central cores shared in {len(groups)} group(s)" if groups else "") + ".", ""]
    lines += table(["Parameters", "Count", "Meaning"], [
        ["trainable", fmt(p.get("trainable")), "what training updates (frozen bases excluded)"],
        ["stored", fmt(p.get("stored")), "what the checkpoint holds, a shared tensor once"],
        ["deployed", fmt(p.get("deployed")), "float weight elements of the final compressed ONNX"]])
    st = s.get("lowering_settings") or {}
    if not s.get("exported"):
        lines += ["_Not exported in this run: no lowering was chosen yet._", ""]
    else:
        how = (f"Lowering: each form exported alone and timed on ONNX Runtime (CPU, {fmt(st.get('threads'))} "
               f"thread(s), input 1 × {fmt(st.get('tokens'))} tokens, p50 of {fmt(st.get('runs'))} runs); DFT "
               f"{'allowed' if st.get('allow_dft') else 'not allowed'} in the graph.")
        lines += [how, ""]
    rows = [[f"`{_esc(e.get('name'))}`", _esc(e.get("kind")), fmt(e.get("shape"), "shape"), _esc(e.get("base")),
             fmt(e.get("trainable")), fmt(e.get("stored")), fmt(e.get("dense")),
             _esc(e.get("chosen") or DASH) + (f" (rank {e['rank']})" if e.get("rank") else ""),
             _esc(e.get("why") or DASH), _candidates(e)] for e in s.get("layers") or []]
    lines += table(["Layer", "Kind", "Shape", "Base", "Trainable", "Stored", "Dense", "Deployed as", "Why",
                    "Candidates: p50 (deployed params)"], rows)
    return lines + ["Per layer, a shared tensor counts in every layer that uses it; the totals above count it once.", ""]
