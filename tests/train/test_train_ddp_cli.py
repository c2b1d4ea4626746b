"""The README's torchrun command end to end: `torchrun --nproc-per-node 2 -m pela_export run --train` trains on two
gloo processes, rank 0 alone writes the outputs, the factors match a one-process `compress --train`, and one process
resumes the checkpoint the two wrote."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_worker import clean_env

SAMPLES = 256  # real digits training images: 4 global batches of 64 an epoch
TRAIN = ["--ratio", "4", "--train", "--epochs", "2", "--batch-size", "64", "--calib-samples", "64", "--no-progress"]


def _digits_subset(path: Path) -> Path:
    import numpy as np

    from pela_export.data import load_dataset

    ds = load_dataset("digits")
    np.savez(path, x=ds.x_train[:SAMPLES], y=ds.y_train[:SAMPLES])
    return path


def _run(cmd: list[str], env: dict[str, str], log: Path) -> str:
    with open(log, "w") as f:
        code = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=900).returncode
    text = log.read_text(errors="replace")
    assert code == 0, text[-4000:]
    return text


def _training(out: Path) -> tuple[dict, list[str]]:
    rec = json.loads((out / "stages" / "compress.json").read_text())
    return rec["training"], rec["automatic_choices"]


def _max_diff_but_key_biases(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Max |a - b| over every tensor, leaving out the key third of each fused q/k/v bias: its gradient is zero in
    exact arithmetic (softmax ignores a constant per row), so AdamW moves it by float noise alone, which the two
    summation orders (one process, two) do not share."""
    assert a.keys() == b.keys()
    worst = 0.0
    for k, v in a.items():
        d = (v.float() - b[k].float()).abs()
        if k.endswith("attn.qkv.second.bias"):
            third = len(d) // 3
            d = torch.cat([d[:third], d[2 * third:]])
        worst = max(worst, float(d.max()))
    return worst


@pytest.mark.slow
def test_torchrun_run_trains_on_two_processes_and_rank_0_alone_writes(tmp_path, default_cache):
    from pela_export.models.default import load_default_model

    load_default_model("digits", cache_dir=default_cache, progress=False)  # train the cached default once, here
    env = clean_env() | {"PELA_EXPORT_CACHE": str(default_cache)}
    data = str(_digits_subset(tmp_path / "digits.npz"))

    two = tmp_path / "two"
    log = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "-m", "pela_export", "run", *TRAIN, "--train-data", data, "--eval-samples", "200",
                "--skip", "bench", "--skip", "report", "--out", str(two)], env, tmp_path / "two.log")
    assert "rank 1 of 2: PELA training done; rank 0 writes every output" in log
    assert log.count("exporting compressed to ONNX") == 1  # the later stages ran once, on rank 0
    training, choices = _training(two)
    assert training["distributed"] == {"world_size": 2, "backend": "gloo", "per_process_batch": 32,
                                       "resumed_world_size": None}
    assert any("PELA training on 2 torchrun processes (gloo)" in c for c in choices)
    assert (two / "bundle.tar.gz").is_file()
    leftovers = [str(p) for p in two.rglob(".*")]  # temp files of atomic writes, write probes
    assert not leftovers, leftovers

    one = tmp_path / "one"
    _run([sys.executable, "-m", "pela_export", "compress", *TRAIN, "--train-data", data, "--out", str(one)], env,
         tmp_path / "one.log")
    assert _training(one)[0]["distributed"]["world_size"] == 1
    trained = {name: torch.load(d / "compressed.pt", map_location="cpu", weights_only=True) for name, d in
               (("two", two), ("one", one))}
    assert _max_diff_but_key_biases(trained["two"], trained["one"]) < 1e-5
    assert [h["epoch"] for h in training["history"]] == [1, 2]

    # the checkpoint the two processes wrote, resumed by one (here: the finished run, so nothing changes)
    _run([sys.executable, "-m", "pela_export", "compress", *TRAIN, "--train-data", data, "--out", str(two),
          "--resume"], env, tmp_path / "resume.log")
    resumed, choices = _training(two)
    assert resumed["resumed_from_epoch"] == 2 and resumed["distributed"]["resumed_world_size"] == 2
    assert any("resumed from a checkpoint written by 2 process(es), continued on 1" in c for c in choices)
    again = torch.load(two / "compressed.pt", map_location="cpu", weights_only=True)
    assert all(torch.equal(again[k], v) for k, v in trained["two"].items())
