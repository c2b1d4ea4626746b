"""Honest parameter accounting for every compression method: three numbers, not one.

- ``trainable``: what training updates (``requires_grad``; an adapter's frozen base is not);
- ``stored``: what the checkpoint holds, every tensor once (a shared MPO central core
  counts once, not once per block);
- ``deployed``: the float weights of the exported, lowered ONNX graph (its initializers
  and constants, :func:`pela_export.export.params.count_onnx_params`), i.e. what the
  runtime actually loads: a layer materialised as dense for speed costs its dense size.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from ..export.onnx_export import DEFAULT_OPSET, ExportResult, export_onnx, load_onnx
from ..export.params import count_onnx_params
from .base import model_param_counts
from .lowering import LoweringPlan, apply_lowering, assert_no_dft


@dataclass(frozen=True)
class MethodParams:
    """The three counts of one method on one model (``deployed`` is None until exported)."""

    method: str
    trainable: int
    stored: int
    deployed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def deployed_params(onnx_model: onnx.ModelProto | str | os.PathLike[str]) -> int:
    """Float weights (> 1 element) in the graph's initializers and Constant nodes."""
    model = onnx_model if isinstance(onnx_model, onnx.ModelProto) else load_onnx(onnx_model)
    return count_onnx_params(model)


def account(method: str, model: nn.Module,
            onnx_model: onnx.ModelProto | str | os.PathLike[str] | None = None) -> MethodParams:
    """Trainable and stored counts of ``model`` (shared tensors once) plus the deployed count if exported."""
    pc = model_param_counts(model)
    return MethodParams(method, pc.trainable, pc.stored,
                        deployed_params(onnx_model) if onnx_model is not None else None)


def export_deployed(model: nn.Module, plan: LoweringPlan | None, example: torch.Tensor,
                    path: str | os.PathLike[str], *, opset: int = DEFAULT_OPSET, exporter: str = "dynamo",
                    input_name: str = "input", output_name: str = "logits",
                    dynamic_batch: bool = True) -> tuple[nn.Module, ExportResult, int]:
    """Lower ``model`` by ``plan`` (None: already plain ops), export it, refuse DFT nodes.

    Returns (lowered model, export result, deployed parameters). The DFT check uses the
    plan's ``allow_dft``; a model without a plan must hold no DFT at all.
    """
    lowered = apply_lowering(model, plan) if plan is not None else model.eval()
    result = export_onnx(lowered, example, Path(path), input_name=input_name, output_name=output_name,
                         opset=opset, exporter=exporter, dynamic_batch=dynamic_batch)  # type: ignore[arg-type]
    proto = load_onnx(result.path)
    assert_no_dft(proto, allow_dft=plan.allow_dft if plan is not None else False, where=str(result.path))
    return lowered, result, count_onnx_params(proto)


def format_accounting(rows: list[MethodParams]) -> str:
    """Markdown table: one row per method."""
    lines = ["| method | trainable | stored | deployed |", "|---|---:|---:|---:|"]
    lines += [f"| {r.method} | {r.trainable:,} | {r.stored:,} | "
              f"{'-' if r.deployed is None else format(r.deployed, ',')} |" for r in rows]
    return "\n".join(lines)
