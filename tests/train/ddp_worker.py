"""One torchrun worker for tests/train/test_train_ddp.py (not a test module): trains the tiny ViT pair of
train_helpers with train_pela, which finds torchrun's WORLD_SIZE/RANK/LOCAL_RANK and trains with DDP (gloo).

Two runs in one launch, to pay for process start-up once: ``full`` trains to the end, ``killed`` stops
every rank at ``--kill-at-step`` (in epoch 2) after the epoch-1 checkpoint was written. Rank 0 saves what
the test compares under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from train_helpers import random_data  # noqa: E402

from pela_export.lowrank import factorize_model  # noqa: E402
from pela_export.train import TrainConfig, train_pela  # noqa: E402


class Killed(Exception):
    pass


def model_pair(seed: int) -> tuple[nn.Module, nn.Module]:
    """(teacher, student at k = 4) from a tiny ViT without q/k/v biases: a key bias has a zero gradient in
    exact arithmetic, so AdamW moves it by float noise alone, which no two summation orders share."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    teacher = VisionTransformer(img_size=16, patch_size=4, in_chans=1, num_classes=10, embed_dim=32, depth=2,
                                num_heads=2, qkv_bias=False).eval()
    return teacher, factorize_model(teacher, ratio=4).model


def clean_env() -> dict[str, str]:
    """This process's environment for launching torchrun (no inherited rank variables; CPU only)."""
    drop = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    return {k: v for k, v in os.environ.items() if k not in drop} | {"CUDA_VISIBLE_DEVICES": ""}


def config(batch_size: int, epochs: int, checkpoint_dir: Path | None) -> TrainConfig:
    """Shared with the test, so the one-process reference trains with exactly these options."""
    return TrainConfig(epochs=epochs, batch_size=batch_size, lr=3e-3, warmup_steps=2, beta=0.5, progress=False,
                       checkpoint_dir=checkpoint_dir)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--samples", type=int, required=True)
    ap.add_argument("--batch-size", type=int, required=True)
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--kill-at-step", type=int, required=True)
    args = ap.parse_args()
    rank = int(os.environ["RANK"])
    data = random_data(args.samples)

    teacher, student = model_pair(seed=rank)  # different random init per rank: rank 0's must win
    result = train_pela(student, teacher, data, config(args.batch_size, args.epochs, args.out / "full"))
    if rank == 0:
        torch.save(result.student.state_dict(), args.out / "full.pt")
        meta = {"world_size": result.world_size, "backend": result.backend, "history": result.history}
        (args.out / "full.json").write_text(json.dumps(meta))

    def kill(epoch: int, step: int, terms: object) -> None:
        if step == args.kill_at_step:
            raise Killed

    teacher, student = model_pair(seed=rank)
    try:
        train_pela(student, teacher, data, config(args.batch_size, args.epochs, args.out / "killed"), on_step=kill)
    except Killed:
        pass
    else:
        sys.exit("the killed run was not killed")


if __name__ == "__main__":
    main()
