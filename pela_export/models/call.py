"""Calling a model on one batch, whatever its input signature.

A batch is one tensor (single-input models) or ``{input name: tensor}`` (text models and
every other multi-input model, whose ``forward`` takes those names as parameters).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

Inputs = torch.Tensor | Mapping[str, torch.Tensor]


def call_model(model: torch.nn.Module, x: Inputs) -> object:
    """``model(x)``, or ``model(**x)`` for ``{input name: tensor}`` batches."""
    return model(**x) if isinstance(x, Mapping) else model(x)
