"""PELA's intermediate-training objective, one term per concern.

total = task + α·feat + β·logit + λ·wp, where

* ``task``  – cross-entropy against labels; 0 for unlabelled batches.
* ``feat``  – feature distillation: MSE between student and frozen-teacher
  outputs of every transformer block (see :mod:`.blocks`), averaged over blocks
  so α does not grow with depth.
* ``logit`` – logit distillation: KL(teacher ‖ student) of temperature-softened
  distributions, times T² (Hinton et al.) so its gradient scale does not depend
  on T. KL rather than MSE because it only asks the student to rank classes like
  the teacher, which is what accuracy measures; off by default (β = 0) as in PELA.
* ``wp``    – weight-perturbation regularisation: for each factorized layer,
  ``relu(max|U·V − W| − ε)²`` with W the teacher's dense weight of the same
  name, averaged over layers. Clamped at 0 (PELA's formulation): perturbations
  within ε are free; without the clamp the term would push an already-close
  layer *away* from W until its error reached ε.

Every term is returned separately so the loop can log it.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ArtifactError, OptionError
from ..lowrank.layer import LowRankLayer
from .blocks import capture_outputs, find_blocks, first_tensor

__all__ = ["LossTerms", "PelaLoss", "feature_loss", "find_blocks", "logit_kl", "weight_perturbation"]

TERMS: tuple[str, ...] = ("total", "task", "feat", "logit", "wp")


@dataclass
class LossTerms:
    """The objective and its parts (scalar tensors; only ``total`` carries the weights α, β, λ)."""

    total: torch.Tensor
    task: torch.Tensor
    feat: torch.Tensor
    logit: torch.Tensor
    wp: torch.Tensor

    def floats(self) -> dict[str, float]:
        """Detached Python floats for logging and history."""
        return {k: float(getattr(self, k).detach()) for k in TERMS}


def feature_loss(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor],
                 names: Sequence[str]) -> torch.Tensor:
    """Mean over ``names`` of MSE(student block output, teacher block output), computed in fp32."""
    missing = [n for n in names if n not in student or n not in teacher]
    if missing:
        raise OptionError(f"distilled blocks produced no tensor output: {', '.join(missing[:5])}",
                          fix="pass --distill-blocks GLOB naming modules that return a tensor")
    losses = []
    for n in names:
        s, t = student[n].float(), teacher[n].float()
        if s.shape != t.shape:
            raise OptionError(f"block {n!r}: student output {tuple(s.shape)} != teacher output {tuple(t.shape)}",
                              fix="distil blocks whose outputs have the same shape (--distill-blocks GLOB)")
        losses.append(F.mse_loss(s, t))
    return torch.stack(losses).mean()


def logit_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T²·KL(softmax(t/T) ‖ softmax(s/T)), mean over the batch (all leading dims flattened)."""
    n = student.shape[-1]
    s = F.log_softmax(student.float().reshape(-1, n) / temperature, dim=-1)
    t = F.log_softmax(teacher.float().reshape(-1, n) / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature ** 2


def _dense_weight(module: nn.Module) -> torch.Tensor:
    return module.weight_product if isinstance(module, LowRankLayer) else module.weight  # type: ignore[return-value]


def _student_weight(module: nn.Module) -> torch.Tensor:
    """The dense matrix a compressed layer applies: U·V, or a structured layer's effective weight."""
    if isinstance(module, LowRankLayer):
        return module.weight_product
    return module.effective_weight()  # type: ignore[operator]


def factor_pairs(student: nn.Module, teacher: nn.Module) -> list[tuple[str, nn.Module, torch.Tensor]]:
    """(name, student layer, teacher dense weight) for every factorized or structured layer of ``student``.

    A low-rank base inside a structured layer (an adapter's frozen U·V) is covered by its
    outer layer, whose effective weight includes it, so it is not paired on its own.
    """
    from ..structured.base import StructuredLinear  # lazy: structured/ may import pela_export.train

    pairs = []
    outer: list[str] = []
    for name, module in student.named_modules():
        if not isinstance(module, (LowRankLayer, StructuredLinear)) or any(name.startswith(o + ".") for o in outer):
            continue
        outer.append(name)
        try:
            ref = teacher.get_submodule(name)
        except AttributeError:
            ref = None
        if not isinstance(ref, (nn.Linear, nn.Conv2d, LowRankLayer)) or \
                tuple(_dense_weight(ref).shape) != tuple(_student_weight(module).shape):
            raise ArtifactError(
                f"factorized layer {name!r} ({module.out_features}x{module.in_features}) has no dense "
                f"layer of the same name and shape in the teacher (found {type(ref).__name__})",
                fix="pass the original model the student was compressed from as the teacher")
        pairs.append((name, module, _dense_weight(ref).detach()))
    return pairs


def weight_perturbation(pairs: Sequence[tuple[str, nn.Module, torch.Tensor]], eps: float) -> torch.Tensor:
    """Mean over layers of relu(max|U·V − W| − ε)² (effective weight for structured layers); 0 without layers."""
    if not pairs:
        return torch.zeros(())
    terms = [torch.relu((_student_weight(m).float() - w.float()).abs().max() - eps) ** 2 for _, m, w in pairs]
    return torch.stack(terms).mean()


class PelaLoss:
    """Runs student and frozen teacher on a batch and returns :class:`LossTerms`.

    Use as a context manager: forward hooks on the distilled blocks live for
    its duration only, so the models are left as they were found.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, *, alpha: float = 1.0, beta: float = 0.0,
                 lam: float = 0.1, eps: float = 0.0, temperature: float = 2.0,
                 blocks: str | Sequence[str] | None = None, runner: nn.Module | None = None) -> None:
        for label, v in (("alpha", alpha), ("beta", beta), ("lam", lam), ("eps", eps)):
            if not v >= 0:
                raise OptionError(f"{label} must be >= 0, got {v}", fix=f"pass a non-negative --{label}")
        if not temperature > 0:
            raise OptionError(f"temperature must be > 0, got {temperature}", fix="pass --temperature 2 (or > 0)")
        self.student, self.teacher = student, teacher
        # the module whose forward runs the student: a DistributedDataParallel wrapper under torchrun, so its
        # gradients are averaged across ranks (hooks and factor pairs stay on the unwrapped student)
        self.runner = runner if runner is not None else student
        self.alpha, self.beta, self.lam, self.eps, self.temperature = alpha, beta, lam, eps, temperature
        self.blocks = find_blocks(teacher, blocks) if alpha > 0 else []
        student_names = {n for n, _ in student.named_modules()}
        absent = [b for b in self.blocks if b not in student_names]
        if absent:
            raise OptionError(f"distilled blocks missing from the student: {', '.join(absent[:5])}",
                              fix="student and teacher must share the architecture; check --distill-blocks")
        self.pairs = factor_pairs(student, teacher)
        self._stack: list[object] = []

    def __enter__(self) -> PelaLoss:
        s = capture_outputs(self.student, self.blocks)
        t = capture_outputs(self.teacher, self.blocks)
        self._s_feats, self._t_feats = s.__enter__(), t.__enter__()
        self._stack = [s, t]
        return self

    def __exit__(self, *exc: object) -> None:
        for ctx in reversed(self._stack):
            ctx.__exit__(None, None, None)  # type: ignore[attr-defined]
        self._stack = []

    def __call__(self, x: torch.Tensor | Mapping[str, torch.Tensor],
                 y: torch.Tensor | None) -> tuple[torch.Tensor, LossTerms]:
        """Student logits and the loss terms for one batch (student must be in the caller's mode);
        ``x`` is a tensor or ``{input name: tensor}`` (called as keywords)."""
        if not self._stack:
            raise RuntimeError("PelaLoss must be used inside `with loss:` (hooks are not attached)")
        with torch.no_grad():
            t_logits = first_tensor(self.teacher(**x) if isinstance(x, Mapping) else self.teacher(x))
        s_logits = first_tensor(self.runner(**x) if isinstance(x, Mapping) else self.runner(x))
        if s_logits is None or t_logits is None:
            raise OptionError("the model returned no tensor output", fix="train a model whose forward returns logits")
        zero = s_logits.new_zeros((), dtype=torch.float32)
        task = F.cross_entropy(s_logits.float(), y) if y is not None else zero
        feat = feature_loss(self._s_feats, self._t_feats, self.blocks) if self.blocks else zero
        # a term with weight 0 is still logged, but computed without building a graph
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.beta > 0):
            logit = logit_kl(s_logits, t_logits, self.temperature)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.lam > 0):
            wp = weight_perturbation(self.pairs, self.eps).to(zero.device)
        total = task
        for weight, term in ((self.alpha, feat), (self.beta, logit), (self.lam, wp)):
            if weight > 0:
                total = total + weight * term
        self._s_feats.clear()
        self._t_feats.clear()
        return s_logits, LossTerms(total=total, task=task, feat=feat, logit=logit, wp=wp)
