"""The training configuration, its validation, and the fingerprint a
checkpoint records so a resumed run is refused when it would not reproduce
the interrupted one."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import OptionError

#: "trainable" keeps the caller's requires_grad flags (used for structured layers with frozen bases).
SCOPES: tuple[str, ...] = ("factors", "all", "trainable")

#: Fields that cannot change the trained weights, so they may differ on resume.
RUN_ONLY_FIELDS: frozenset[str] = frozenset({"resume", "progress", "checkpoint_dir"})


@dataclass
class TrainConfig:
    """Everything that determines a PELA intermediate-training run.

    Defaults follow PELA: train only the factors, distil block features (α=1),
    a light weight-perturbation penalty (λ=0.1, ε=0), no logit distillation.
    ``weight_decay`` defaults to 0 because decay would pull U, V towards zero,
    against both the distillation and the perturbation terms.
    ``warmup_steps`` wins over ``warmup_epochs`` when set.
    """

    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int | None = None
    warmup_epochs: float = 1.0
    grad_clip: float | None = 1.0
    alpha: float = 1.0
    beta: float = 0.0
    lam: float = 0.1
    eps: float = 0.0
    temperature: float = 2.0
    scope: str = "factors"
    distill_blocks: tuple[str, ...] | None = None
    seed: int = 0
    amp: bool = True
    device: str = "cpu"
    checkpoint_dir: str | Path | None = None
    resume: bool = False
    progress: bool = True

    def validate(self) -> None:
        """Raise :class:`OptionError` naming the option for any out-of-range value.

        Value checks only: ``resume`` is checked by :meth:`check_resume` once the run has chosen the
        checkpoint directory (the CLI's default, ``<out>/train``, is not known when options are parsed).
        """
        checks: list[tuple[bool, str, str]] = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}", "--epochs"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}", "--batch-size"),
            (self.lr > 0, f"learning rate must be > 0, got {self.lr}", "--lr"),
            (self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay}", "--weight-decay"),
            (self.warmup_steps is None or self.warmup_steps >= 0,
             f"warm-up steps must be >= 0, got {self.warmup_steps}", "--warmup-steps"),
            (self.warmup_epochs >= 0, f"warm-up epochs must be >= 0, got {self.warmup_epochs}", "--warmup-epochs"),
            (self.grad_clip is None or self.grad_clip > 0,
             f"gradient clip must be > 0 (or None), got {self.grad_clip}", "--grad-clip"),
            (self.scope in SCOPES, f"unknown training scope {self.scope!r}", "--train-scope"),
        ]
        for ok, problem, flag in checks:
            if not ok:
                choices = f" with one of: {', '.join(SCOPES)}" if flag == "--train-scope" else " with a valid value"
                raise OptionError(problem, fix=f"pass {flag}{choices}")

    def check_resume(self) -> None:
        """``resume`` needs the directory the interrupted run wrote to. The pipeline decides it (``<out>/train``
        unless ``--checkpoint-dir``), so this runs where training starts, not when the options are parsed."""
        if self.resume and self.checkpoint_dir is None:
            raise OptionError("resume needs the checkpoint directory of the interrupted run, and none was set",
                              fix="set TrainConfig(checkpoint_dir=...) (the CLI's --checkpoint-dir, default <out>/train)")

    def fingerprint(self, **data: Any) -> dict[str, Any]:
        """JSON-ready fields that determine the result, plus facts about the data (``data``)."""
        fields = {k: v for k, v in asdict(self).items() if k not in RUN_ONLY_FIELDS}
        if fields["distill_blocks"] is not None:
            fields["distill_blocks"] = list(fields["distill_blocks"])
        return json.loads(json.dumps(fields | data, default=str))


def fingerprint_hash(fp: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]
