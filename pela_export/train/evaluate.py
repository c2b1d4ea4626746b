"""Top-1 accuracy as an ``eval_fn`` for :func:`train_pela`, so per-epoch
history shows whether distillation is recovering the original accuracy."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .blocks import first_tensor
from .data import TrainData, batch_to, call_model


def accuracy_fn(data: TrainData, batch_size: int = 256) -> Callable[[nn.Module], float]:
    """A function ``model → top-1 accuracy on data`` (labelled data only; model's device is used)."""
    if not data.labelled:
        raise ValueError(f"accuracy needs labelled data; {data.name!r} has no labels")

    @torch.no_grad()
    def evaluate(model: nn.Module) -> float:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        correct = 0
        for x, y in data.batches(batch_size):
            logits = first_tensor(call_model(model, batch_to(x, device)))
            correct += int((logits.argmax(-1).cpu() == y).sum())  # type: ignore[union-attr]
        model.train(was_training)
        return correct / len(data)

    return evaluate
