"""The README's resume story from the command line: `compress --train` killed with SIGKILL after its first
epoch's checkpoint, then the same command with `--resume`, gives the factors of a run never interrupted."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pela_export.train import checkpoint_path, load_checkpoint

EPOCHS = 3  # the kill lands in epoch 2 or 3: an epoch (6 steps) takes about a second or more, the poll 50 ms
SAMPLES = 384  # real digits training images; a subset keeps three runs of three epochs short
START_TIMEOUT_S = 300  # generous: imports, factorization and epoch 1 on a loaded 2-core CI machine


def _command(out: Path, data: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pela_export", "compress", "--ratio", "4", "--train", "--epochs", str(EPOCHS),
            "--batch-size", "64", "--train-data", str(data), "--calib-samples", "64", "--out", str(out),
            "--no-progress", *extra]


def _digits_subset(path: Path) -> Path:
    import numpy as np

    from pela_export.data import load_dataset

    ds = load_dataset("digits")
    np.savez(path, x=ds.x_train[:SAMPLES], y=ds.y_train[:SAMPLES])
    return path


def _run(cmd: list[str], env: dict[str, str], log: Path) -> None:
    with open(log, "wb") as f:
        code = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=600).returncode
    assert code == 0, log.read_text(errors="replace")[-3000:]


def _start_and_kill_after_first_epoch(cmd: list[str], env: dict[str, str], log: Path, ckpt: Path) -> None:
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not ckpt.is_file():  # written atomically (temp + rename): it exists only when complete
                assert proc.poll() is None, f"exited ({proc.returncode}) before a checkpoint:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, "no checkpoint after the first epoch in time"
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    epoch = load_checkpoint(ckpt)["epoch"]
    assert 1 <= epoch < EPOCHS, f"the kill came too late (after epoch {epoch} of {EPOCHS}): lengthen the run"


def _record(out: Path) -> dict:
    return json.loads((out / "stages" / "compress.json").read_text())["training"]


@pytest.mark.slow
def test_compress_train_killed_then_resumed_matches_an_uninterrupted_run(tmp_path, default_cache):
    from pela_export.models.default import load_default_model

    load_default_model("digits", cache_dir=default_cache, progress=False)  # train the cached default once, here
    env = {**os.environ, "PELA_EXPORT_CACHE": str(default_cache)}
    data = _digits_subset(tmp_path / "digits.npz")

    killed = tmp_path / "killed"
    _start_and_kill_after_first_epoch(_command(killed, data), env, tmp_path / "killed.log", checkpoint_path(killed / "train"))
    assert not (killed / "compressed.pt").exists()  # it died mid-training
    _run(_command(killed, data, "--resume"), env, tmp_path / "resumed.log")

    reference = tmp_path / "reference"
    _run(_command(reference, data), env, tmp_path / "reference.log")

    resumed_rec, reference_rec = _record(killed), _record(reference)
    assert resumed_rec["resumed_from_epoch"] >= 1 and reference_rec["resumed_from_epoch"] is None
    assert resumed_rec["checkpoint"] == str(checkpoint_path(killed / "train"))
    # Bitwise: the checkpoint restores weights, AdamW moments, the LR schedule and every RNG (torch, NumPy,
    # Python, data order), and both runs use the same device and thread count, so nothing may differ at all.
    resumed = torch.load(killed / "compressed.pt", map_location="cpu", weights_only=True)  # a state dict
    uninterrupted = torch.load(reference / "compressed.pt", map_location="cpu", weights_only=True)
    assert resumed.keys() == uninterrupted.keys()
    differing = [k for k, v in uninterrupted.items() if not torch.equal(resumed[k], v)]
    assert not differing, f"resumed factors differ from the uninterrupted run's: {differing[:5]}"
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in resumed_rec["history"]]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in reference_rec["history"]]
    # the automatic checkpoint directory is recorded among the run's choices
    choices = json.loads((reference / "stages" / "compress.json").read_text())["automatic_choices"]
    assert any("PELA training checkpoints" in c and "--checkpoint-dir" in c for c in choices)


def test_resume_and_checkpoint_dir_parse_without_an_output_directory(tmp_path):
    # regression: --resume used to fail while parsing, naming a --checkpoint-dir flag that did not exist
    from pela_export.cli.args import config_from_args
    from pela_export.cli.main import build_parser

    ns = build_parser().parse_args(["compress", "--train", "--resume", "--warmup-steps", "3"])
    cfg = config_from_args(ns)
    assert cfg.train.resume and cfg.train.checkpoint_dir is None and cfg.train.warmup_steps == 3
    ns = build_parser().parse_args(["compress", "--train", "--resume", "--checkpoint-dir", str(tmp_path / "ck")])
    assert config_from_args(ns).train.checkpoint_dir == str(tmp_path / "ck")

