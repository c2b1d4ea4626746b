"""Calibration statistics for data-aware factorization.

Plain SVD treats every input channel and output row of W as equally important.
Real activations are not isotropic (outlier channels, correlated features) and
the task loss does not weigh every output row alike, so the weighted
decompositions need per-layer statistics gathered on calibration data:

* ``abs_mean``: mean |x| per input channel (ASVD's channel scaling),
* ``gram``: XᵀX / n, in×in float64 (SVD-LLM whitening; also the risk score),
* ``fisher_rows``: per output row Σ_j (∂L/∂W_ij)², averaged over batches (FWSVD),
* ``fisher_elements``: (∂L/∂W_ij)² per weight, out×in, averaged over batches (``ewsvd``).

Activation statistics come from forward pre-hooks; Fisher rows from
``torch.autograd.grad`` on the named weights (needs labels). Hooks, module
train/eval flags and ``requires_grad`` flags are restored even when a batch fails.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import OptionError
from ..models.call import Inputs, call_model
from .kinds import as_matrix, input_rows

ACTIVATION_STATS: frozenset[str] = frozenset({"abs_mean", "gram"})


class CalibrationError(OptionError):
    """Calibration data is missing, unlabelled where labels are needed, or does not fit the model."""


@dataclass
class LayerStats:
    """What calibration data says about one linear layer (all tensors float64, CPU)."""

    abs_mean: torch.Tensor | None = None  # (in,)
    gram: torch.Tensor | None = None  # (in, in)
    fisher_rows: torch.Tensor | None = None  # (out,)
    fisher_elements: torch.Tensor | None = None  # (out, in)
    n_samples: int = 0  # input rows seen (all leading dims flattened)


def _linears(model: nn.Module, layer_names: Iterable[str]) -> dict[str, nn.Module]:
    out: dict[str, nn.Module] = {}
    for name in layer_names:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise CalibrationError(f"layer {name!r} does not exist in the model",
                                   fix="pass layer names from `pela-export inspect MODEL` (--include/--exclude)") from None
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            raise CalibrationError(f"layer {name!r} is {type(module).__name__}, not nn.Linear or nn.Conv2d",
                                   fix="calibration statistics are only collected for nn.Linear/nn.Conv2d layers")
        out[name] = module
    return out


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout noise in the statistics), restoring each module's own flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _inputs(batch: object) -> Inputs:
    """A batch is inputs or an (inputs, y) pair; only the inputs (a tensor or a dict) are fed here."""
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise CalibrationError("a calibration batch is empty", fix="check --calib-data")
        batch = batch[0]
    if isinstance(batch, Mapping) and all(isinstance(v, torch.Tensor) for v in batch.values()):
        return batch
    if not isinstance(batch, torch.Tensor):
        raise CalibrationError(f"a calibration batch is {type(batch).__name__}, expected a tensor or (x, y)",
                               fix="check --calib-data")
    return batch


def collect_activation_stats(
    model: nn.Module,
    layer_names: Iterable[str],
    batches: Iterable[torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]],
    need: Iterable[str] = ACTIVATION_STATS,
    conv: str | None = None,
) -> dict[str, LayerStats]:
    """Run ``batches`` through ``model`` (eval, no grad) and accumulate input statistics per layer.

    A convolution's rows are its input patches as the ``conv`` decomposition's first factor sees them."""
    wanted = frozenset(need)
    unknown = wanted - ACTIVATION_STATS
    if unknown:
        raise OptionError(f"unknown activation statistics {sorted(unknown)}",
                          fix=f"ask for a subset of {sorted(ACTIVATION_STATS)}")
    layers = _linears(model, layer_names)
    sums: dict[str, dict[str, torch.Tensor]] = {n: {} for n in layers}
    counts = dict.fromkeys(layers, 0)

    def hook_for(name: str) -> Callable[[nn.Module, tuple[object, ...]], None]:
        def hook(module: nn.Module, args: tuple[object, ...]) -> None:
            if not args or not isinstance(args[0], torch.Tensor):
                return
            x = input_rows(module, args[0].detach(), conv).to(torch.float64)
            acc = sums[name]
            if "abs_mean" in wanted:
                part = x.abs().sum(dim=0)
                acc["abs_mean"] = acc["abs_mean"] + part if "abs_mean" in acc else part
            if "gram" in wanted:
                part = x.T @ x
                acc["gram"] = acc["gram"] + part if "gram" in acc else part
            counts[name] += x.shape[0]
        return hook

    handles = [m.register_forward_pre_hook(hook_for(n)) for n, m in layers.items()]
    try:
        with _eval_mode(model), torch.no_grad():
            for batch in batches:
                call_model(model, _inputs(batch))
    finally:
        for h in handles:
            h.remove()

    out: dict[str, LayerStats] = {}
    for name in layers:
        n = counts[name]
        if n == 0:
            raise CalibrationError(f"layer {name!r} saw no calibration inputs",
                                   fix="give non-empty --calib-data that reaches every selected layer")
        acc = sums[name]
        out[name] = LayerStats(
            abs_mean=(acc["abs_mean"] / n).cpu() if "abs_mean" in acc else None,
            gram=(acc["gram"] / n).cpu() if "gram" in acc else None,
            n_samples=n,
        )
    return out


def collect_fisher(
    model: nn.Module,
    layer_names: Iterable[str],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    per_element: bool = False,
    conv: str | None = None,
) -> dict[str, torch.Tensor]:
    """Per output row, Σ_j (∂loss/∂W_ij)² averaged over batches (FWSVD's row importance).

    With ``per_element`` the (out, in) matrix of (∂loss/∂W_ij)² is returned instead
    (the element-wise method's weights; its row sums are the row importance).
    Gradients are taken per batch (the batch-level empirical Fisher), so small
    batches give a finer estimate. Parameter ``.grad`` fields are not touched.
    """
    layers = _linears(model, layer_names)
    names = list(layers)
    weights: list[torch.Tensor] = [layers[n].weight for n in names]  # type: ignore[misc]
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    sums = [torch.zeros(tuple(w.shape) if per_element else w.shape[0], dtype=torch.float64) for w in weights]
    n_batches = 0
    try:
        for p in params:  # gradients only for the weights we score; activations still carry them back
            p.requires_grad_(False)
        for w in weights:
            w.requires_grad_(True)
        with _eval_mode(model), torch.enable_grad():
            for batch in batches:
                if not isinstance(batch, (tuple, list)) or len(batch) < 2 or batch[1] is None:
                    raise CalibrationError(
                        "FWSVD needs labelled calibration data (it weighs rows by loss gradients), got unlabelled batches"
                        if not per_element else "--method ewsvd needs labelled calibration data (it weighs every "
                        "weight by its loss gradient), got unlabelled batches",
                        fix="use --method asvd or --method whiten, or give labelled --calib-data")
                x, y = batch[0], batch[1]
                loss = loss_fn(call_model(model, x), y)
                grads = torch.autograd.grad(loss, weights, allow_unused=True)
                for i, g in enumerate(grads):
                    if g is not None:
                        sq = as_matrix(layers[names[i]], g.detach(), conv).to(torch.float64).pow(2)
                        sums[i] += (sq if per_element else sq.sum(dim=1)).cpu()
                n_batches += 1
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
    if n_batches == 0:
        raise CalibrationError("no calibration batches for the Fisher information",
                               fix="give labelled, non-empty --calib-data")
    return {n: s / n_batches for n, s in zip(names, sums)}


def with_fisher(stats: Mapping[str, LayerStats], fisher: Mapping[str, torch.Tensor]) -> dict[str, LayerStats]:
    """New stats mapping with ``fisher_rows`` filled in (entries created for layers without activation stats).

    A 2-D value (``collect_fisher(..., per_element=True)``) fills ``fisher_elements``
    and, with its row sums, ``fisher_rows`` too.
    """
    out = dict(stats)
    for name, value in fisher.items():
        if value.ndim == 2:
            out[name] = replace(out.get(name, LayerStats()), fisher_rows=value.sum(dim=1), fisher_elements=value)
        else:
            out[name] = replace(out.get(name, LayerStats()), fisher_rows=value)
    return out
