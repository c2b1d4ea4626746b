"""Hugging Face text models through ``api.run`` up to bench and report: a three-input BERT
classifier (dynamo exporter, the default), a two-input DistilBERT classifier and a bare BERT
encoder with mean pooling and a second output (TorchScript exporter, to keep the module short).

Checked on what the run wrote: the ONNX signature is exactly the model's with batch and
sequence dynamic; every stage between verification and the report takes all inputs (precision
variants keep int64 inputs and match their FP32 graph within their golden tolerance, the bench
times stated shapes, report.json schema 2 records io and shapes); token ids at masked
positions change no output of any exported graph; both outputs of the encoder are exported
and verified. The DistilBERT run goes on through build and package (the deployment stages,
tested in their own modules); the other two stop after the report.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from pela_export import api
from pela_export.export.runtime import ort_run, ort_session
from pela_export.models.io import SEQUENCE, io_from_dict
from pela_export.pipeline.config import RunConfig
from pela_export.precision.check import compare_precision
from pela_export.precision.spec import precision_spec
from pela_export.tolerance import Tolerance

pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")
import tiny_hf_text as tiny  # noqa: E402  (tests/fixtures)

#: Short settings: 32 calibration samples, latency at batch 1, throughput at batch 4.
FAST = {"calib_samples": 32, "batch_sizes": (1, 4), "runs": 30, "warmup": 1, "progress": False}
TO_REPORT = ("build", "package")
INPUTS = {"bert": ["input_ids", "attention_mask", "token_type_ids"], "distil": ["input_ids", "attention_mask"],
          "encoder": ["input_ids", "attention_mask", "token_type_ids"]}


def _run(root: Path, model_dir: Path, skip: tuple[str, ...] = TO_REPORT, **kw: Any) -> Path:
    out = root / "out"
    result = api.run(RunConfig.of(model=f"hf:{model_dir}", out=str(out), skip=skip, **FAST, **kw))
    assert Path(result["report_json"]).is_file() and "bench" in result["timings_s"]
    assert ("bundle" in result) == ("package" not in skip)
    return out


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bert")
    return _run(root, tiny.bert_classifier(root / "hf"))


@pytest.fixture(scope="module")
def distil_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("distil")
    return _run(root, tiny.distilbert_classifier(root / "hf"), skip=(), exporter="legacy")


@pytest.fixture(scope="module")
def encoder_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("encoder")
    return _run(root, tiny.sentence_encoder(root / "hf", pooling="mean_tokens"), exporter="legacy", hidden_state=True)


@pytest.fixture(params=["bert", "distil", "encoder"])
def text_run(request: pytest.FixtureRequest) -> tuple[str, Path]:
    return request.param, request.getfixturevalue(f"{request.param}_run")


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _signature(path: Path) -> tuple[dict[str, tuple[int, list[Any]]], list[str]]:
    graph = onnx.load(str(path)).graph
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    return {v.name: (v.type.tensor_type.elem_type, dims(v)) for v in graph.input}, [o.name for o in graph.output]


def _graphs(out: Path) -> dict[str, Path]:
    """Every graph the run wrote for deployment: the final FP32 files and the precision variants."""
    final = {k: Path(v) for k, v in _json(out / "stages" / "export.json")["final_onnx"].items()}
    variants = {k: Path(v["onnx"]) for k, v in _json(out / "stages" / "precision.json")["variants"].items()}
    return {**final, **variants}


def test_report_records_io_and_the_stated_bench_shapes(text_run: tuple[str, Path]) -> None:
    name, out = text_run
    report = _json(out / "report.json")
    assert report["schema_version"] == 2
    spec = io_from_dict(report["model"]["io"])
    assert spec.input_names == INPUTS[name] and spec.axes[SEQUENCE].max == 64
    shapes = report["shapes"]
    assert shapes["axes"] == {"sequence": 64}  # the sequence axis' opt, clamped to the model's 64 positions
    assert shapes["latency"]["description"] == "batch 1 × sequence 64"
    assert shapes["throughput"]["description"] == "batch 4 × sequence 64"
    assert shapes["flops"]["inputs"] == dict.fromkeys(INPUTS[name], [1, 64])
    for variant in ("original", "compressed"):
        bench = report["benchmarks"][variant]
        assert set(bench["latency"]["onnxruntime"]) == set(bench["latency"]["torch_eager"]) == {"1", "4"}
        assert bench["flops"]["batch"] == 1 and bench["flops"]["flops"] > 0
    assert report["benchmarks"]["compressed"]["flops"]["flops"] < report["benchmarks"]["original"]["flops"]["flops"]
    precision_latency = report["precision"]["variants"]["compressed.int8fp16"]["latency"]
    assert set(precision_latency) == {"1", "4"} and precision_latency["4"]["batch"] == 4
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "Measured at: latency batch 1 × sequence 64, throughput batch 4 × sequence 64" in md
    assert "onnxruntime batch 1 × sequence 64 p50 (ms)" in md and "FLOPs / sample (sequence 64)" in md
    assert "input_ids int64 [batch, sequence]" in md


def test_every_graph_takes_exactly_the_models_int64_inputs(text_run: tuple[str, Path]) -> None:
    name, out = text_run
    graphs = _graphs(out)
    assert set(graphs) == {"original", "compressed", "original.fp16", "original.int8fp16", "compressed.fp16",
                           "compressed.int8fp16"}  # the default --precision fp16,int8fp16
    for label, path in graphs.items():
        inputs, _ = _signature(path)
        assert list(inputs) == INPUTS[name], label
        assert all(t == onnx.TensorProto.INT64 and dims == ["batch", "sequence"] for t, dims in inputs.values()), \
            (label, inputs)
    assert _json(out / "stages" / "export.json")["verification"]["ok"]


def test_precision_variants_match_fp32_within_their_tolerance(text_run: tuple[str, Path]) -> None:
    name, out = text_run
    spec = io_from_dict(_json(out / "report.json")["model"]["io"])
    record = _json(out / "stages" / "precision.json")
    assert record["calibration"]["source"] == "random" and record["calibration"]["samples"] == 32
    feeds = [spec.dummy(4, seed=50 + i, sizes={SEQUENCE: s}) for i, s in enumerate((64, 19))]
    for label, v in record["variants"].items():
        fp32 = Path(record["fp32"][v["model"]])
        sess = ort_session(fp32)
        scale = max(float(np.abs(a).max()) for f in feeds for a in ort_run(sess, f).values())
        frac, rtol = precision_spec(v["precision"]).golden_tolerance  # the bundle's check: fraction of max|FP32|
        cmp = compare_precision(fp32, v["onnx"], feeds, Tolerance(atol=frac * scale, rtol=rtol))
        assert cmp.ok, (label, cmp.failures())
        assert v["accuracy"]["output"] == spec.output_names[0]


def _mask_invariant(path: Path, spec: Any, seed: int) -> None:
    """Changing token ids where attention_mask is 0 changes no output (hidden states: at real tokens)."""
    sess = ort_session(path)
    feeds = spec.dummy(4, seed=seed, sizes={SEQUENCE: 21})
    mask = feeds["attention_mask"]
    assert not mask.all(), "the batch must have padding"
    other = np.random.default_rng(seed).integers(1, spec.input("input_ids").high, size=mask.shape)
    changed = dict(feeds, input_ids=np.where(mask == 1, feeds["input_ids"], other))
    a, b = ort_run(sess, feeds), ort_run(sess, changed)
    for o in spec.outputs:
        x, y = np.asarray(a[o.name], np.float32), np.asarray(b[o.name], np.float32)
        if o.role == "hidden_state":  # a padded position's own state is not an output anyone reads
            x, y = x[mask == 1], y[mask == 1]
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=1e-4, err_msg=f"{path.name}: {o.name}")


def test_token_ids_at_masked_positions_change_no_output(text_run: tuple[str, Path]) -> None:
    _, out = text_run
    spec = io_from_dict(_json(out / "report.json")["model"]["io"])
    for i, path in enumerate(_graphs(out).values()):
        _mask_invariant(path, spec, seed=7 + i)


def test_encoder_exports_and_verifies_both_outputs(encoder_run: Path) -> None:
    report = _json(encoder_run / "report.json")
    assert [o["name"] for o in report["model"]["io"]["outputs"]] == ["sentence_embedding", "last_hidden_state"]
    verification = _json(encoder_run / "stages" / "export.json")["verification"]
    assert verification["ok"] and len(verification["files"]) == 4
    lengths = {shape["input_ids"][1] for shape in verification["inputs"]}
    assert len(lengths) >= 2, "padded batches of two sequence lengths"
    for path, entry in verification["files"].items():
        outputs = entry["outputs"]["outputs"]
        assert set(outputs) == {"sentence_embedding", "last_hidden_state"}, path
        assert all(o["ok"] and o["inputs"] == len(verification["inputs"]) for o in outputs.values()), path
    for label, path in _graphs(encoder_run).items():
        assert _signature(path)[1] == ["sentence_embedding", "last_hidden_state"], label


def test_embedding_outputs_are_compared_by_cosine(encoder_run: Path) -> None:
    report = _json(encoder_run / "report.json")
    acc = report["accuracy"]
    assert acc["output"] == "sentence_embedding" and acc["top1_agreement"] is None
    assert acc["cosine_mean"] > 0.9
    for label, v in report["precision"]["variants"].items():
        a = v["accuracy"]
        assert a["comparison"] == "embedding" and a["cosine_mean"] > 0.99, label
        assert a["neighbour_agreement"] is not None and a["top1_agreement"] is None, label
    md = (encoder_run / "report.md").read_text(encoding="utf-8")
    assert "Mean embedding cosine vs original" in md and "Mean cosine vs FP32" in md


def test_distilbert_goes_on_to_the_bundle(distil_run: Path) -> None:
    deploy = _json(distil_run / "bundle" / "deploy.json")
    assert [t["name"] for t in deploy["io"]["inputs"]] == INPUTS["distil"]
    assert (distil_run / "stages" / "build.json").is_file() and (distil_run / "bundle.tar.gz").is_file()
