"""PELA training under torchrun: 2 gloo processes on CPU train the factors 1 process does (same global batch and
seed), their checkpoint resumes in 1 process, the global batch must split evenly, and ranks > 0 write nothing."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from ddp_worker import clean_env, config, model_pair
from train_helpers import random_data, vit_pair

from pela_export.errors import OptionError
from pela_export.train import TrainResult, checkpoint_path, load_checkpoint, train_pela
from pela_export.train.distributed import GlobalBatchSampler, RankDone, launch_env

WORKER = Path(__file__).with_name("ddp_worker.py")
SAMPLES, BATCH, EPOCHS = 45, 8, 2  # 6 steps an epoch; the last global batch (5) splits 3 + 2 across the ranks
KILL_AT_STEP = 8  # in epoch 2, after the epoch-1 checkpoint
ATOL = 1e-5


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One torchrun launch (2 processes, gloo, a free port): a full run and one killed in epoch 2."""
    out = tmp_path_factory.mktemp("ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(WORKER),
           "--out", str(out), "--samples", str(SAMPLES), "--batch-size", str(BATCH), "--epochs", str(EPOCHS),
           "--kill-at-step", str(KILL_AT_STEP)]
    proc = subprocess.run(cmd, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return out


@pytest.fixture(scope="module")
def one_process() -> TrainResult:
    """The reference: the same training in this process, no torchrun."""
    teacher, student = model_pair(seed=0)
    return train_pela(student, teacher, random_data(SAMPLES), config(BATCH, EPOCHS, None))


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_two_processes_train_the_factors_one_process_does(two_processes, one_process):
    ddp = torch.load(two_processes / "full.pt", weights_only=True)
    reference = one_process.student.state_dict()
    _, untrained = model_pair(seed=0)
    assert _max_diff(reference, untrained.state_dict()) > 100 * ATOL  # training moved the factors
    diff = _max_diff(ddp, reference)
    print(f"2 processes vs 1: max |difference| of the trained student {diff:.2e}")
    assert diff < ATOL
    meta = json.loads((two_processes / "full.json").read_text())
    assert meta["world_size"] == 2 and meta["backend"] == "gloo"
    # rank 0 logs each epoch's means over both ranks' examples: the numbers one process logs
    for got, want in zip(meta["history"], one_process.history, strict=True):
        assert {k: got[k] for k in ("total", "task", "feat", "logit", "wp")} == pytest.approx(
            {k: want[k] for k in ("total", "task", "feat", "logit", "wp")}, rel=1e-4)


def test_checkpoint_of_two_processes_resumes_in_one(two_processes, one_process, tmp_path):
    ckpt_dir = tmp_path / "ckpt"
    shutil.copytree(two_processes / "killed", ckpt_dir)
    blob = load_checkpoint(checkpoint_path(ckpt_dir))
    assert blob["epoch"] == 1 and blob["world_size"] == 2 and blob["backend"] == "gloo"
    assert len(blob["rng_ranks"]) == 2
    assert sorted(p.name for p in ckpt_dir.iterdir()) == [checkpoint_path(ckpt_dir).name]  # no temp file left

    teacher, student = model_pair(seed=0)
    cfg = config(BATCH, EPOCHS, ckpt_dir)
    cfg.resume = True
    resumed = train_pela(student, teacher, random_data(SAMPLES), cfg)
    assert resumed.resumed_from_epoch == 1 and resumed.resumed_world_size == 2 and resumed.world_size == 1
    assert _max_diff(resumed.student.state_dict(), one_process.student.state_dict()) < ATOL
    assert load_checkpoint(checkpoint_path(ckpt_dir))["world_size"] == 1


def test_global_batch_must_split_evenly_across_processes(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    teacher, student = vit_pair(ratio=4)
    with pytest.raises(OptionError) as err:
        train_pela(student, teacher, random_data(16), config(7, 1, None))
    msg = str(err.value)
    assert "--batch-size 7" in msg and "world size 2" in msg and "--batch-size 6 or 8" in msg
    assert not dist.is_initialized()  # refused before joining the process group: no rank waits for another


@pytest.mark.parametrize("n", [45, 48, 3])
def test_two_ranks_see_the_global_batches_of_one_process(n):
    one = GlobalBatchSampler(n, 8, seed=3)
    ranks = [GlobalBatchSampler(n, 8, world_size=2, rank=r, seed=3) for r in range(2)]
    for epoch in (0, 1, 0, 2):  # also going back: the order is replayed from the seed
        for s in (one, *ranks):
            s.set_epoch(epoch)
        for whole, *parts in zip(one, *ranks, strict=True):
            counted = [p for p in parts if p.weight > 0]
            assert torch.equal(torch.cat([p.indices for p in counted]), whole.indices)
            assert all(torch.equal(p.batch, whole.batch) for p in parts)
            assert sum(p.weight for p in parts) == pytest.approx(2.0)  # DDP's mean of weighted means = global mean
            assert sum(p.examples for p in parts) == len(whole.indices)


def test_one_process_order_is_the_seeded_generator_it_always_used():
    data = random_data(20)
    gen = torch.Generator().manual_seed(5)
    legacy = [torch.cat([y for _, y in data.batches(6, gen)]) for _ in range(3)]  # one draw per epoch
    sampler = GlobalBatchSampler(20, 6, seed=5)
    for epoch in (2, 0, 1):
        sampler.set_epoch(epoch)
        assert torch.equal(torch.cat([data.y[s.indices] for s in sampler]), legacy[epoch])


def test_malformed_launch_environment_is_an_option_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "two")
    with pytest.raises(OptionError, match="torchrun"):
        launch_env()
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(OptionError, match="RANK=2"):
        launch_env()


def test_ranks_above_zero_write_nothing_without_training(monkeypatch, tmp_path):
    from pela_export.cli.main import main
    from pela_export.pipeline.config import RunConfig
    from pela_export.pipeline.run import run_pipeline

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    for command in ("compress", "export", "run"):
        assert main([command, "--out", str(tmp_path / command), "--no-progress"]) == 0
        assert not (tmp_path / command).exists()
    with pytest.raises(RankDone, match="rank 1 of 2"):
        run_pipeline(RunConfig.of(out=str(tmp_path / "api")))
    assert not (tmp_path / "api").exists()


def test_a_ranks_share_of_text_has_the_global_batchs_sequence_length():
    from pela_export.train import TrainData

    lengths = torch.tensor([3, 8, 2, 5])  # tokens per row, padded to 10 columns
    mask = (torch.arange(10)[None] < lengths[:, None]).long()
    data = TrainData(name="text", x={"input_ids": mask * 7, "attention_mask": mask})
    whole, _ = data.take(torch.arange(4))
    assert whole["input_ids"].shape == (4, 8)  # one process: cut to the batch's longest row
    part, _ = data.take(torch.tensor([2, 3]), like=torch.arange(4))
    assert part["input_ids"].shape == (2, 8) and torch.equal(part["attention_mask"], whole["attention_mask"][2:])
    alone, _ = data.take(torch.tensor([2, 3]))
    assert alone["input_ids"].shape == (2, 5)  # without the global batch it would run shorter rows
