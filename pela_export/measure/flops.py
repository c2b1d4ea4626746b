"""Analytic FLOP count of one forward pass via PyTorch's own op-level counter.

``FlopCounterMode`` counts matmul/conv FLOPs as 2·M·N·K (a multiply and an add
per MAC) and ignores cheap elementwise ops, so a low-rank layer's saving shows
up exactly: dense ``2·B·in·out`` vs factored ``2·B·r·(in+out)``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..errors import OptionError
from .latency import eval_mode


@dataclass(frozen=True)
class FlopCount:
    """FLOPs/MACs of one forward pass at ``batch``; per-sample values for comparisons."""

    flops: int
    macs: int
    batch: int = 1

    @property
    def flops_per_sample(self) -> float:
        return self.flops / self.batch

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["flops_per_sample"] = self.flops_per_sample
        d["macs_per_sample"] = self.macs / self.batch
        return d


def count_flops(model: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...]) -> FlopCount:
    """Count FLOPs of ``model(example)`` at the example's batch size (eval mode, no grad)."""
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415

    args = example if isinstance(example, tuple) else (example,)
    if not args or not isinstance(args[0], torch.Tensor) or args[0].dim() < 1:
        raise OptionError("FLOP counting needs a tensor input with a batch dimension",
                          fix="pass an example input shaped (batch, *input_shape)")
    batch = int(args[0].shape[0])
    counter = FlopCounterMode(display=False)
    with eval_mode(model), torch.no_grad(), counter:
        model(*args)
    flops = int(counter.get_total_flops())
    return FlopCount(flops=flops, macs=flops // 2, batch=batch)
