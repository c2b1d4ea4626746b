"""``pela-export inspect`` on a saved structured model: each layer's type, parameters
and deployment form (the plan recorded at save time, or measured now).

A structured model is recognised from ``--structure-spec FILE``, a directory or
``.json`` holding a ``structured.json``, or a ``--checkpoint`` whose sibling
``structured.json`` names it; the original architecture comes from MODEL or from the
spec's recorded source, since the state_dict alone cannot say what the layers were.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ArtifactError
from ..lowrank.layer import LowRankLinear
from ..models.sources import resolve_model
from .apply import StructureRecord
from .base import model_param_counts
from .lowering import LoweringPlan, plan_lowering
from .saved import CHECKPOINT_NAME, SPEC_NAME, load_structured, read_structured_spec


def _is_structured_json(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("kind") == "structured"


def find_structured(target: str | None, checkpoint: str | None,
                    structure_spec: str | None) -> tuple[str | None, Path, Path] | None:
    """(model spec or None, checkpoint, spec) when the arguments name a saved structured model, else None."""
    spec: Path | None = None
    model = target
    if structure_spec:
        spec = Path(structure_spec)
    elif target and Path(target).is_dir() and (Path(target) / SPEC_NAME).is_file():
        spec, model = Path(target) / SPEC_NAME, None
    elif target and target.endswith(".json") and Path(target).is_file() and _is_structured_json(Path(target)):
        spec, model = Path(target), None
    elif checkpoint and (Path(checkpoint).parent / SPEC_NAME).is_file():
        sibling = Path(checkpoint).parent / SPEC_NAME
        if _is_structured_json(sibling) and read_structured_spec(sibling).get("checkpoint") == Path(checkpoint).name:
            spec = sibling
    if spec is None:
        return None
    if checkpoint and (structure_spec or model is not None):
        return model, Path(checkpoint), spec
    recorded = read_structured_spec(spec).get("checkpoint", CHECKPOINT_NAME)
    return model, spec.parent / recorded, spec


def _plan(model: Any, spec: dict[str, Any], spec_path: Path, tokens: int | None, measure: bool,
          threads: int) -> tuple[LoweringPlan, str]:
    recorded = spec.get("lowering")
    if recorded and not measure and tokens is None:
        plan = LoweringPlan.from_dict(recorded)
        names = {n for n, _ in model.named_modules()}
        missing = [lp.name for lp in plan.layers if lp.name not in names]
        if missing:
            raise ArtifactError(f"the recorded lowering plan names layers the model lacks: {', '.join(missing[:5])}",
                                fix="pass --remeasure to plan the lowering again", where=str(spec_path))
        return plan, "recorded when the model was saved"
    return plan_lowering(model, tokens=tokens, threads=threads), "measured now"


def inspect_structured(model_spec: str | None, ckpt: Path, spec_path: Path, *,
                       input_shape: tuple[int, ...] | None = None, tokens: int | None = None,
                       measure: bool = False, threads: int = 1) -> str:
    """Summary text: parameters per layer and model, shared tensors, and the lowering choice per layer."""
    spec = read_structured_spec(spec_path)
    source = spec.get("source") or {}
    model_spec = model_spec or source.get("model")
    if not model_spec:
        raise ArtifactError("the spec records no source model, so the original architecture is unknown",
                            fix="pass MODEL (the architecture it was structured from) before the spec",
                            where=str(spec_path))
    shape = input_shape or (tuple(source["input_shape"]) if source.get("input_shape") else None)
    loaded = resolve_model(model_spec, None, None if model_spec.startswith("default") else shape)
    model, spec = load_structured(loaded.model, ckpt, spec_path)
    counts = model_param_counts(model)
    record = StructureRecord.from_model(model)
    lowrank = [e for e in spec["layers"] if e["kind"] == "lowrank"]
    lines = [f"structured model: {spec_path} (weights {ckpt})",
             f"architecture: {loaded.name} ({model_spec})",
             f"parameters: {counts.trainable:,} trainable / {counts.stored:,} stored (a shared tensor counted once)",
             ""]
    if record.layers:
        lines += [record.format().split("\n\nmodel:")[0],
                  "(per layer, a shared tensor counts in every layer that uses it; the totals above count it once)"]
    if lowrank:
        lines.append(f"\n{len(lowrank)} plain low-rank layer(s) (LowRankLinear, deployed as two GEMMs): "
                     + ", ".join(f"{e['name']} (rank {e['config'].get('rank')})" for e in lowrank[:8]))
    sharing = spec.get("sharing", [])
    lines.append(f"\nshared tensors: {len(sharing)} group(s)" + "".join(f"\n  {' = '.join(g)}" for g in sharing))
    if record.layers:
        plan, origin = _plan(model, spec, spec_path, tokens, measure, threads)
        chosen = [lp.candidate(lp.chosen) for lp in plan.layers]
        deployed = sum(c.deployed_params for c in chosen if c is not None)
        lines += ["", f"lowering ({origin}):", plan.format(), "",
                  f"structured layers as deployed: {deployed:,} parameters in the chosen forms (summed per layer; "
                  "a shared tensor in a structured form is stored once in the exported graph)"]
    elif any(isinstance(m, LowRankLinear) for m in model.modules()):
        lines.append("\nno structured layer: nothing to lower (low-rank layers export as they are)")
    return "\n".join(lines)
