"""What every model source resolves to: the module plus the facts export,
verification and benchmarking need (Optimum-style per-family config)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..tolerance import Tolerance

__all__ = ["LoadedModel", "Preprocessing", "Tolerance"]


@dataclass(frozen=True)
class Preprocessing:
    """How raw images in [0, 1], NCHW, become model input (recorded for deployment)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: tuple[int, int]
    channels: int
    layout: str = "NCHW"


@dataclass
class LoadedModel:
    """A resolved model and its family config.

    ``input_shape`` excludes the batch dimension. ``input_shape_origin`` records
    where it came from ("config", "user", "recipe", "example_inputs") so the
    report can say which choices were automatic.
    """

    model: nn.Module
    name: str
    source: str
    input_shape: tuple[int, ...]
    input_shape_origin: str
    input_name: str = "input"
    output_name: str = "logits"
    input_dtype: torch.dtype = torch.float32
    preprocessing: Preprocessing | None = None
    num_classes: int | None = None
    tolerance: Tolerance = field(default_factory=Tolerance)
    default_dataset: str | None = None
    family: str = "generic"
    extra: dict[str, Any] = field(default_factory=dict)

    def dummy_input(self, batch: int = 1, seed: int = 0) -> torch.Tensor:
        """Deterministic random input of the model's shape and dtype."""
        g = torch.Generator().manual_seed(seed)
        shape = (batch, *self.input_shape)
        if self.input_dtype.is_floating_point:
            return torch.randn(shape, generator=g, dtype=self.input_dtype)
        vocab = int(self.extra.get("vocab_size", 100))
        return torch.randint(0, vocab, shape, generator=g, dtype=self.input_dtype)

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for reports."""
        return {
            "name": self.name,
            "source": self.source,
            "family": self.family,
            "input_name": self.input_name,
            "output_name": self.output_name,
            "input_shape": list(self.input_shape),
            "input_shape_origin": self.input_shape_origin,
            "input_dtype": str(self.input_dtype).replace("torch.", ""),
            "num_classes": self.num_classes,
            "preprocessing": asdict(self.preprocessing) if self.preprocessing else None,
            "tolerance": asdict(self.tolerance),
        }
