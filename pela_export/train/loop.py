"""PELA intermediate training: the frozen original (teacher) teaches its
low-rank copy (student) through block-feature distillation and a
weight-perturbation penalty (:mod:`.losses`).

AdamW with linear warm-up then cosine decay, gradient clipping, mixed precision
on CUDA, fixed seeds, and an atomic checkpoint after every epoch from which
``resume=True`` continues exactly (:mod:`.checkpoint`). Under torchrun the same
loop runs in every process with DistributedDataParallel (:mod:`.distributed`).
"""
from __future__ import annotations

import contextlib
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from .._progress import make_progress
from ..errors import CheckpointError, OptionError
from ..lowrank.layer import LowRankLayer
from .checkpoint import capture_rng, checkpoint_path, load_for_resume, restore_rng, save_checkpoint
from .config import TrainConfig, fingerprint_hash
from .data import TrainData, batch_to, from_torch_dataset
from .distributed import GlobalBatchSampler, Session, launch_env, per_rank_batch, session
from .losses import TERMS, LossTerms, PelaLoss

StepCallback = Callable[[int, int, LossTerms], None]


@dataclass
class TrainResult:
    """The trained student and what happened; ``history`` has one dict per epoch (all epochs, resumed or not)."""

    student: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from_epoch: int | None = None
    seconds: float = 0.0
    checkpoint: Path | None = None
    world_size: int = 1  # torchrun processes that trained (1 without torchrun)
    backend: str | None = None  # their process group's backend: "gloo" (CPU) or "nccl" (CUDA)
    resumed_world_size: int | None = None  # processes that wrote the checkpoint resumed from

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def _set_scope(student: nn.Module, scope: str) -> list[nn.Parameter]:
    """Mark trainable parameters for ``scope``; returns them. Callers restore ``requires_grad`` afterwards."""
    if scope == "trainable":  # exactly what the caller marked (structured layers freeze their own bases)
        params = [p for p in student.parameters() if p.requires_grad]
        if not params:
            raise OptionError("no parameter of the student requires grad, so scope 'trainable' would train nothing",
                              fix="mark the parameters to train with requires_grad_(True), or use scope 'all'")
        return params
    factors = [m for m in student.modules() if isinstance(m, LowRankLayer)]
    if scope == "factors":
        if not factors:
            raise OptionError("the student has no factorized (low-rank) layers, so scope 'factors' would train nothing",
                              fix="factorize the model first (factorize_model), or pass --train-scope all")
        student.requires_grad_(False)
        for m in factors:
            m.requires_grad_(True)
    else:
        student.requires_grad_(True)
    return [p for p in student.parameters() if p.requires_grad]


def _optimizer(student: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases and norm parameters (ndim <= 1)."""
    decay, plain = [], []
    for p in student.parameters():
        if p.requires_grad:
            (plain if p.ndim <= 1 else decay).append(p)
    groups = [g for g in ({"params": decay, "weight_decay": cfg.weight_decay},
                          {"params": plain, "weight_decay": 0.0}) if g["params"]]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999))


def lr_lambda(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Linear warm-up to 1, then cosine decay to 0 at ``total_steps``."""
    warm = min(warmup_steps, max(0, total_steps - 1))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total_steps - warm)))

    return factor


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch/NumPy/Python for the run and give the caller its RNG streams back afterwards."""
    np_state, py_state = np.random.get_state(), random.getstate()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


@contextlib.contextmanager
def _rng_preserved(device: torch.device) -> Iterator[None]:
    """Run user code (evaluation) without letting it advance the training RNG streams."""
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def format_epoch(rec: dict[str, Any], epochs: int) -> str:
    """The one line logged per epoch."""
    terms = " ".join(f"{k} {rec[k]:.4f}" for k in TERMS)
    acc = f" acc {rec['accuracy']:.4f}" if rec.get("accuracy") is not None else ""
    return f"epoch {rec['epoch']}/{epochs} {terms}{acc} lr {rec['lr']:.2e} ({rec['seconds']:.1f}s)"


def _device(cfg: TrainConfig) -> torch.device:
    try:
        device = torch.device(cfg.device)
    except RuntimeError:
        raise OptionError(f"unknown device {cfg.device!r}", fix="pass --device cpu or --device cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OptionError("device 'cuda' was requested but CUDA is not available", fix="pass --device cpu")
    return device


def train_pela(student: nn.Module, teacher: nn.Module, train_data: TrainData | Dataset, cfg: TrainConfig,
               eval_fn: Callable[[nn.Module], float] | None = None, *,
               on_step: StepCallback | None = None) -> TrainResult:
    """Train ``student`` (modified in place) to mimic the frozen ``teacher``; returns it with its history.

    ``eval_fn(model) → accuracy`` runs after every epoch (its RNG use does not
    affect training). ``on_step(epoch, global_step, terms)`` runs after every
    optimizer step. ``requires_grad`` flags and the teacher's mode are restored.

    Under torchrun (``WORLD_SIZE`` > 1) every process calls this: ``cfg.batch_size`` is the global batch,
    split evenly across processes; ``eval_fn``, progress and checkpoints run on rank 0 only.
    """
    cfg.validate()
    cfg.check_resume()
    per_rank_batch(cfg.batch_size, launch_env().world_size)  # before joining the group: all ranks fail alike
    data = train_data if isinstance(train_data, TrainData) else from_torch_dataset(train_data)
    device = _device(cfg)
    flags = {name: p.requires_grad for name, p in student.named_parameters()}
    teacher_mode = teacher.training
    start_time = time.perf_counter()
    try:
        with session(device) as sess:
            student.to(sess.device)
            teacher.to(sess.device).eval()
            sess.sync_from_main(teacher)
            with _seeded(cfg.seed, sess.device):
                return _run(student, teacher, data, cfg, sess, eval_fn if sess.main else None, on_step, start_time)
    finally:
        for name, p in student.named_parameters():
            p.requires_grad_(flags.get(name, p.requires_grad))
        teacher.train(teacher_mode)


def _run(student: nn.Module, teacher: nn.Module, data: TrainData, cfg: TrainConfig, sess: Session,
         eval_fn: Callable[[nn.Module], float] | None, on_step: StepCallback | None,
         start_time: float) -> TrainResult:
    device, progress = sess.device, cfg.progress and sess.main
    params = _set_scope(student, cfg.scope)
    sampler = GlobalBatchSampler(len(data), cfg.batch_size, world_size=sess.world_size, rank=sess.rank,
                                 seed=cfg.seed)
    opt = _optimizer(student, cfg)
    steps_per_epoch = len(sampler)
    total_steps = cfg.epochs * steps_per_epoch
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else round(cfg.warmup_epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total_steps, warmup))
    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    n_factors = sum(isinstance(m, LowRankLayer) for m in student.modules())
    fingerprint = cfg.fingerprint(train_size=len(data), labelled=data.labelled, factorized_layers=n_factors,
                                  trainable_params=sum(p.numel() for p in params))
    ckpt = checkpoint_path(cfg.checkpoint_dir) if cfg.checkpoint_dir is not None else None
    result = TrainResult(student=student, checkpoint=ckpt, **sess.describe())
    start_epoch, step = 0, 0
    blob = load_for_resume(ckpt, fingerprint, sess) if cfg.resume and ckpt is not None else None
    if cfg.resume and ckpt is not None and blob is None and progress:
        # killed before the first epoch ended: nothing to continue, so starting over is the resumed run
        print(f"resume: no checkpoint at {ckpt} yet, training starts at epoch 1", file=sys.stderr, flush=True)
    if blob is not None and ckpt is not None:
        try:
            student.load_state_dict(blob["student"], strict=True)
            opt.load_state_dict(blob["optimizer"])
            sched.load_state_dict(blob["scheduler"])
            if blob["scaler"]:
                scaler.load_state_dict(blob["scaler"])
            _restore_rngs(blob, sess, progress)
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"training checkpoint {str(ckpt)!r} does not match this student/optimizer "
                                  f"({str(exc).splitlines()[0][:160]})",
                                  fix=f"delete {str(ckpt)!r} to start over, or run without --resume") from None
        start_epoch, step = int(blob["epoch"]), int(blob["global_step"])
        result.history = list(blob["history"])
        result.resumed_from_epoch = start_epoch
        result.resumed_world_size = int(blob.get("world_size", 1))

    sess.check_same_model(student)
    runner = sess.wrap(student)  # DDP: starts every rank from rank 0's weights, averages gradients
    loss = PelaLoss(student, teacher, alpha=cfg.alpha, beta=cfg.beta, lam=cfg.lam, eps=cfg.eps,
                    temperature=cfg.temperature, blocks=cfg.distill_blocks, runner=runner)
    bar = make_progress(progress)
    task = bar.add_task("PELA training", total=max(1, (cfg.epochs - start_epoch) * steps_per_epoch),
                        info="") if bar else None
    if bar:
        bar.start()
    try:
        with loss:
            for epoch in range(start_epoch, cfg.epochs):
                t0 = time.perf_counter()
                runner.train()
                sampler.set_epoch(epoch)
                sums = dict.fromkeys(TERMS, 0.0)
                seen = 0
                for shard in sampler:
                    x, y = data.take(shard.indices, like=shard.batch if sess.distributed else None)
                    x = batch_to(x, device)
                    y = y.to(device, non_blocking=True) if y is not None else None
                    with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                        _, terms = loss(x, y)
                    # weight 1 unless the last global batch split unevenly across ranks (see distributed.Shard)
                    objective = terms.total if shard.weight == 1.0 else terms.total * shard.weight
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(objective).backward()
                    if cfg.grad_clip:
                        scaler.unscale_(opt)
                        nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    scaler.step(opt)
                    scaler.update()
                    sched.step()
                    step += 1
                    vals = terms.floats()
                    for k in TERMS:
                        sums[k] += vals[k] * shard.examples
                    seen += shard.examples
                    if on_step is not None:
                        on_step(epoch, step, terms)
                    if bar:
                        bar.update(task, advance=1, info=f"epoch {epoch + 1}/{cfg.epochs} " +
                                   " ".join(f"{k} {vals[k]:.4f}" for k in TERMS))
                if sess.distributed:  # the epoch's means over every rank's examples, as one process logs them
                    *totals, seen_all = sess.sum([sums[k] for k in TERMS] + [float(seen)])
                    sums, seen = dict(zip(TERMS, totals)), int(seen_all)
                record: dict[str, Any] = {"epoch": epoch + 1, **{k: sums[k] / max(1, seen) for k in TERMS},
                                          "lr": float(sched.get_last_lr()[0]), "accuracy": None}
                if eval_fn is not None:
                    with _rng_preserved(device):
                        record["accuracy"] = float(eval_fn(student))
                record["seconds"] = round(time.perf_counter() - t0, 3)
                result.history.append(record)
                if progress:
                    print(format_epoch(record, cfg.epochs), file=sys.stderr, flush=True)
                if ckpt is not None:
                    rngs = sess.gather(capture_rng(sampler.generator_state()))
                    if sess.main:  # one writer, atomically (temp file + rename); the others wait below
                        save_checkpoint(ckpt, {
                            "fingerprint": fingerprint, "config_hash": fingerprint_hash(fingerprint),
                            "epoch": epoch + 1, "global_step": step,
                            "student": {k: v.detach().cpu().clone() for k, v in student.state_dict().items()},
                            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                            "rng": rngs[0], "history": result.history,
                            **sess.describe(), **({"rng_ranks": rngs} if sess.distributed else {}),
                        })
                    sess.barrier()
    finally:
        if bar:
            bar.stop()
    student.eval()
    result.seconds = round(time.perf_counter() - start_time, 3)
    return result


def _restore_rngs(blob: dict[str, Any], sess: Session, progress: bool) -> None:
    """This rank's RNG states when the checkpoint came from as many processes, else rank 0's on every rank
    (training's result then differs from an uninterrupted run only through dropout-like randomness)."""
    per_rank = blob.get("rng_ranks")
    written_by = int(blob.get("world_size", 1))
    if written_by == sess.world_size:
        restore_rng(per_rank[sess.rank] if per_rank else blob["rng"])
        return
    restore_rng(blob["rng"])
    if progress:
        print(f"resume: the checkpoint was written by {written_by} process(es), training continues on "
              f"{sess.world_size}; data order and batches are unchanged", file=sys.stderr, flush=True)
