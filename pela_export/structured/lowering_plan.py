"""What the lowering planner decided, per layer, as plain data: the candidates it
measured, the forms a layer cannot take (and why), the choice and its reason.
Kept JSON-round-trippable so a saved structured model can carry its plan and
``pela-export inspect`` can print it without measuring again."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ArtifactError


@dataclass
class Candidate:
    """One deployable form of a layer, as measured."""

    form: str
    p50_ms: float
    deployed_params: int
    max_abs_err: float
    measured_on: str  # the layer actually timed (same type, config and size)
    rank: int | None = None  # a truncation rank the user chose (lowrank:R), else None (exact)
    exporter: str = "legacy"  # which exporter produced the timed graph (and why, if not the requested one)


@dataclass
class LayerPlan:
    """A layer's candidates, the forms it cannot take (with why), and the choice."""

    name: str
    kind: str
    in_features: int
    out_features: int
    candidates: list[Candidate] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    chosen: str = "dense"
    why: str = ""
    rank: int | None = None

    def candidate(self, form: str) -> Candidate | None:
        return next((c for c in self.candidates if c.form == form), None)


@dataclass
class LoweringPlan:
    """Per-layer deployment forms plus the measurement settings (JSON-able via ``to_dict``)."""

    layers: list[LayerPlan] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def allow_dft(self) -> bool:
        return bool(self.settings.get("allow_dft", False))

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings, "layers": [asdict(lp) for lp in self.layers]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoweringPlan:
        try:
            layers = [LayerPlan(**{**lp, "candidates": [Candidate(**c) for c in lp.get("candidates", [])]})
                      for lp in data["layers"]]
        except (KeyError, TypeError) as exc:
            raise ArtifactError(f"recorded lowering plan is malformed ({exc})",
                                fix="re-run plan_lowering and save the plan again") from None
        return cls(layers=layers, settings=dict(data.get("settings", {})))

    def format(self) -> str:
        """Markdown: one row per layer with every candidate's p50 latency and deployed parameters."""
        s = self.settings
        lines = [f"lowering measured on ONNX Runtime (CPU, {s.get('threads')} thread(s)) for input "
                 f"{s.get('batch')} x {s.get('tokens')} tokens x in ({s.get('tokens_origin')}); "
                 f"p50 of {s.get('runs')} runs; DFT {'allowed' if self.allow_dft else 'not allowed'}", "",
                 "| layer | kind | shape (out x in) | candidates: p50 ms (deployed params) | unavailable | chosen | why |",
                 "|---|---|---|---|---|---|---|"]
        for lp in self.layers:
            cands = "; ".join(f"{c.form}{f':{c.rank}' if c.rank else ''} {c.p50_ms:.4f} ({c.deployed_params:,})"
                              for c in lp.candidates)
            unav = "; ".join(f"{f}: {r}" for f, r in lp.unavailable.items()) or "-"
            chosen = lp.chosen + (f" (rank {lp.rank})" if lp.rank else "")
            lines.append(f"| {lp.name} | {lp.kind} | {lp.out_features}x{lp.in_features} | {cands} | {unav} | "
                         f"{chosen} | {lp.why} |")
        return "\n".join(lines)
