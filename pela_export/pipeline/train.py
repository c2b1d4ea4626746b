"""PELA intermediate training inside the compress stage: the frozen original
teaches the factorized (or structured) student; accuracy before/after goes into the record.

Under torchrun every process gets here and trains its share (:mod:`pela_export.train.distributed`);
afterwards only rank 0 goes on to save and record, the others end with ``RankDone``."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import OptionError
from ..train.checkpoint import checkpoint_path
from .context import Context, log


def checkpoint_dir(ctx: Context) -> str:
    """Where the per-epoch checkpoints go: ``--checkpoint-dir``, else ``<out>/train`` (recorded as a choice).

    Decided here, where the output directory is known, so ``--resume`` finds the interrupted run's checkpoint
    without the user naming it; checked writable now rather than after the first epoch.
    """
    from .._io import ensure_writable_dir

    given = ctx.cfg.train.checkpoint_dir
    path = Path(given).expanduser() if given is not None else ctx.artifacts.root / "train"
    if given is None:
        ctx.note(f"PELA training checkpoints: {path} (<out>/train; pass --checkpoint-dir to change)")
    ensure_writable_dir(path, flag="--checkpoint-dir")
    if ctx.cfg.train.resume and not checkpoint_path(path).is_file():
        ctx.note(f"--resume: no checkpoint in {path} yet (nothing to continue: none ran here, or it was "
                 "stopped before its first epoch ended), so training starts at epoch 1")
    return str(path)


def train_stage(ctx: Context, student: nn.Module, *, structured: bool = False) -> dict[str, Any]:
    """Train ``student`` in place per ``ctx.cfg.train``; checkpoints go to ``<out>/train/``.

    ``structured``: a ``--structure`` student, trained by :func:`~pela_export.structured.train.train_structured`
    (``--train-scope factors`` = the structured layers' own trainable parameters, an adapter's base stays frozen).
    """
    from ..data.spec import data_choices, parse_data_spec
    from ..train import accuracy_fn, load_train_data, train_pela
    from ..train.data import open_train_data
    from ..train.distributed import end_rank_unless_main, launch_env, per_rank_batch

    cfg, loaded = ctx.cfg, ctx.loaded
    launch = launch_env()
    per_rank_batch(cfg.train.batch_size, launch.world_size)  # before loading data: fail fast, on every rank
    if launch.distributed and cfg.output.device == "cpu" and torch.cuda.is_available():
        ctx.note("PELA training under torchrun on CPU processes (gloo) although CUDA is available: pass "
                 "--device cuda to train on GPU cuda:LOCAL_RANK of each process with NCCL")
    tc = dataclasses.replace(cfg.train, checkpoint_dir=checkpoint_dir(ctx), device=cfg.output.device, progress=cfg.output.progress)
    tc.check_resume()
    source = cfg.data.train_data or cfg.data.eval_data or loaded.default_dataset
    if source is None:
        raise OptionError(f"--train needs training data and {loaded.name!r} has no dataset",
                          fix=f"pass --train-data with one of: {', '.join(data_choices('train'))}")
    if cfg.data.train_data is None:
        ctx.note(f"PELA training data: {source} (train split; pass --train-data to change)")
    data = load_train_data(source, loaded, text_column=cfg.data.text_column, label_column=cfg.data.label_column)
    eval_fn = None
    eval_spec = cfg.data.eval_data or loaded.default_dataset
    kind = parse_data_spec(eval_spec, "--data").kind if eval_spec is not None else "random"
    if launch.main and kind != "random" and (len(loaded.input_shape) == 3 and kind != "text"
                             or kind == "text" and loaded.spec.outputs[0].role == "logits"):
        test = open_train_data(eval_spec, loaded, "test", flag="--data", text_column=cfg.data.text_column,
                               label_column=cfg.data.label_column)
        eval_fn = accuracy_fn(test) if test.labelled else None
    before = {"original": eval_fn(ctx.original()), "compressed": eval_fn(student)} if eval_fn else {}
    if before:
        log(f"accuracy before training: original {before['original']:.2%}, compressed {before['compressed']:.2%}")
    structured_scope = None
    if structured:
        from ..structured.train import train_structured

        structured_scope = "all" if tc.scope == "all" else "layers"
        tc = dataclasses.replace(tc, scope="trainable")
    log(f"{'structured' if structured else 'PELA'} training: {tc.epochs} epochs, "
        f"scope={structured_scope or tc.scope}, alpha={tc.alpha}, beta={tc.beta}, lambda={tc.lam}, eps={tc.eps}, "
        f"lr={tc.lr}")
    if structured_scope is not None:
        result = train_structured(student, ctx.original(), data, tc, scope=structured_scope, eval_fn=eval_fn)
    else:
        result = train_pela(student, ctx.original(), data, tc, eval_fn=eval_fn)
    end_rank_unless_main("PELA training done")
    if result.world_size > 1:
        ctx.note(f"PELA training on {result.world_size} torchrun processes ({result.backend}): each took "
                 f"{tc.batch_size // result.world_size} examples of every global batch of --batch-size {tc.batch_size}")
    if result.resumed_world_size not in (None, result.world_size):
        ctx.note(f"PELA training resumed from a checkpoint written by {result.resumed_world_size} process(es), "
                 f"continued on {result.world_size} (same global batches)")
    after = eval_fn(student) if eval_fn else None
    return {
        "config": dataclasses.asdict(tc),
        "structured_scope": structured_scope,
        "data": data.name if hasattr(data, "name") else str(source),
        "samples": len(data),
        "accuracy_before": before or None,
        "accuracy_after": after,
        "history": result.history,
        "seconds": round(result.seconds, 2),
        "resumed_from_epoch": result.resumed_from_epoch,
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
        "distributed": {"world_size": result.world_size, "backend": result.backend,
                        "per_process_batch": tc.batch_size // result.world_size,
                        "resumed_world_size": result.resumed_world_size},
    }
