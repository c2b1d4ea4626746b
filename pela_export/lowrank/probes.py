"""Loss probes for sensitivity-based ranks: a callable that scores a candidate
model on fixed calibration batches. Registered so ``--sensitivity-loss`` choices
come from one place.

``kl`` (the default) measures how far the candidate's output distribution moves
from the original's — it needs no labels and, unlike the task loss on a few
hundred images, it sees every change of the logits, not only changes that flip a
label: on the Fashion-MNIST ViT its ranks had a lower test KL from the original
than the cross-entropy probe's at every ratio measured so far (k = 2, 3, 4, 6;
bench/results/fashion_mnist_methods_interrupted.log and a scratch run)."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._registry import Registry
from ..models.call import call_model
from ..models.io import batch_len
from .stats import CalibrationError

Batch = tuple[torch.Tensor, "torch.Tensor | None"]
LossFn = Callable[[nn.Module], float]
ProbeFactory = Callable[[nn.Module, Sequence[Batch]], LossFn]

PROBES: Registry[ProbeFactory] = Registry("sensitivity loss", flag="--sensitivity-loss")


def _probe(batches: Sequence[Batch], per_batch: Callable[[int, torch.Tensor, "torch.Tensor | None"], torch.Tensor]) -> LossFn:
    """Mean of ``per_batch`` (a summed loss) over all calibration samples."""
    if not batches:
        raise CalibrationError("no calibration batches for the sensitivity probe", fix="pass --calib-data with examples")

    @torch.no_grad()
    def loss(model: nn.Module) -> float:
        total, n = 0.0, 0
        for i, (x, y) in enumerate(batches):
            total += float(per_batch(i, call_model(model, x), y))
            n += batch_len(x)
        return total / n

    return loss


def _reference(model_ref: nn.Module, batches: Sequence[Batch]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [call_model(model_ref, x) for x, _ in batches]  # type: ignore[misc]


@PROBES.register("kl")
def kl_probe(model_ref: nn.Module, batches: Sequence[Batch]) -> LossFn:
    """KL(original ‖ candidate) of the softmax over the last output axis; no labels needed."""
    ref = [r.log_softmax(-1) for r in _reference(model_ref, batches)]
    return _probe(batches, lambda i, out, _y: F.kl_div(out.log_softmax(-1), ref[i], log_target=True, reduction="sum")
                  / (out.numel() // out.shape[0] // out.shape[-1]))


@PROBES.register("mse")
def mse_probe(model_ref: nn.Module, batches: Sequence[Batch]) -> LossFn:
    """Mean squared error to the original's outputs, for models whose outputs are not logits."""
    ref = _reference(model_ref, batches)
    return _probe(batches, lambda i, out, _y: F.mse_loss(out, ref[i], reduction="sum") / (out.numel() // out.shape[0]))


@PROBES.register("task")
def task_probe(model_ref: nn.Module, batches: Sequence[Batch]) -> LossFn:
    """Cross-entropy against the labels (needs labelled calibration data)."""
    del model_ref
    if any(y is None for _, y in batches):
        raise CalibrationError("--sensitivity-loss task needs labelled calibration data",
                               fix="pass --calib-data with labels (digits, fashion-mnist, idx:DIR, a class folder), "
                                   "or use --sensitivity-loss kl")
    return _probe(batches, lambda _i, out, y: F.cross_entropy(out, y, reduction="sum"))
