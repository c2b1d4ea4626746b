"""A sentence encoder through ``api.run`` on labelled text files: whitening statistics from the
training file (--calib-data), PELA training on it (--train-data), accuracy on the test file (--data)
scored by the linear probe, and what report.json records about the data and the scoring."""
from __future__ import annotations

import json

import pytest

from pela_export import api
from pela_export.pipeline.config import RunConfig

pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")
import tiny_hf_text as tiny  # noqa: E402  (tests/fixtures)
from test_pipeline_evaldata import _docs, _tsv  # noqa: E402  (same directory)

from pela_export.train import TrainConfig  # noqa: E402


@pytest.mark.slow
def test_encoder_run_on_text_files(tmp_path):
    model = tiny.with_tokenizer(tiny.sentence_encoder(tmp_path / "enc"))
    train = _tsv(tmp_path / "topics-train.tsv", _docs(60, 0))
    test = _tsv(tmp_path / "topics-test.tsv", _docs(30, 1))
    out = tmp_path / "out"
    api.run(RunConfig.of(model=f"hf:{model}", out=str(out), data=f"{train},{test}", calib_data=f"text:{train}",
                      train_data=str(train), train=TrainConfig(epochs=1, batch_size=16, progress=False),
                      method="whiten", max_length=16, exporter="legacy", precisions=("fp32",), calib_samples=32,
                      batch_sizes=(1,), runs=30, warmup=1, skip=("build", "package"), progress=False))
    compress = json.loads((out / "stages" / "compress.json").read_text())
    assert compress["calibration"]["source"].startswith(f"text:{train} train split (32 seeded samples)")
    assert compress["training"]["data"] == "topics-train.tsv,topics-test.tsv:train" and compress["training"]["samples"] == 60
    acc = json.loads((out / "report.json").read_text())["accuracy"]
    assert acc["scoring"] == "embedding_probe" and acc["output"] == "sentence_embedding"
    assert acc["label_names"] == ["crude", "earn", "grain"] and acc["n_samples"] == 30
    assert acc["probe"]["train_samples"] == 60 and acc["dataset"]["pairing"] == "train,test files"
    assert acc["dataset"]["max_length"] == 16
    assert 0 <= acc["top1_candidate"] <= 1 and acc["top1_reference"] > 1 / 3 and 0 < acc["cosine_mean"] <= 1
