"""Benchmarking models with several inputs: stated shapes, dict feeds for ONNX Runtime, tuple
inputs for PyTorch and FLOPs, embedding comparisons, and report.json schema 2 (with the
version-1 reader). A hand-built two-input ONNX graph keeps these tests exporter-free."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pela_export.measure import bench_latency_grid, bench_onnxruntime, bench_torch_eager, count_flops
from pela_export.report.markdown import render_markdown
from pela_export.measure.outputs import compare_embeddings, evaluate_outputs
from pela_export.report.document import REPORT_SCHEMA_VERSION, load_report, upgrade_report, validate_report, write_report
from pela_export.measure.shapes import bench_shapes, shape_label
from pela_export.errors import ArtifactError, OptionError
from pela_export.models.io import BATCH, SEQUENCE, AxisRange, InputSpec, IOSpec, OutputSpec, single_input

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from text_specs import VOCAB, text_spec  # noqa: E402  (tests/fixtures)

DIM, CLASSES = 4, 3



class MaskedMeanClassifier(nn.Module):
    """Embedding → masked mean over the sequence → linear: the torch twin of :func:`two_input_onnx`."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(VOCAB, DIM)
        self.head = nn.Linear(DIM, CLASSES)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        m = attention_mask.unsqueeze(-1).float()
        return self.head((self.emb(input_ids) * m).sum(1) / m.sum(1).clamp_min(1e-9))


@pytest.fixture(scope="module")
def model() -> MaskedMeanClassifier:
    return MaskedMeanClassifier().eval()


@pytest.fixture(scope="module")
def two_input_onnx(tmp_path_factory: pytest.TempPathFactory, model: MaskedMeanClassifier) -> Path:
    """The same function as ``model`` in ONNX: Gather, masked mean, MatMul + Add; int64 inputs."""
    table = numpy_helper.from_array(model.emb.weight.detach().numpy().copy(), "table")
    w = numpy_helper.from_array(model.head.weight.detach().numpy().T.copy(), "w")
    b = numpy_helper.from_array(model.head.bias.detach().numpy().copy(), "b")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    last = numpy_helper.from_array(np.array([-1], dtype=np.int64), "last")
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["e"]),
             helper.make_node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["mf", "last"], ["m3"]),
             helper.make_node("Mul", ["e", "m3"], ["em"]),
             helper.make_node("ReduceSum", ["em", "axes"], ["s"], keepdims=0),
             helper.make_node("ReduceSum", ["m3", "axes"], ["n"], keepdims=0),
             helper.make_node("Div", ["s", "n"], ["mean"]),
             helper.make_node("MatMul", ["mean", "w"], ["mm"]),
             helper.make_node("Add", ["mm", "b"], ["logits"])]
    graph = helper.make_graph(
        nodes, "two_input",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        initializer=[table, w, b, axes, last])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    path = tmp_path_factory.mktemp("onnx") / "two_input.onnx"
    onnx.save(proto, str(path))
    return path


# -- stated shapes ----------------------------------------------------------------------------------
def test_text_model_is_timed_at_batch_times_sequence_opt() -> None:
    shapes = bench_shapes(text_spec(), (1, 8))
    assert shapes.sequence == 128 and shapes.describe(1) == "batch 1 × sequence 128"
    assert shapes.input_shapes(8) == {"input_ids": [8, 128], "attention_mask": [8, 128]}
    d = shapes.to_dict()
    assert d["latency"] == {"batch": 1, "description": "batch 1 × sequence 128"}
    assert d["throughput"] == {"batch": 8, "description": "batch 8 × sequence 128"}
    assert d["flops"]["inputs"] == {"input_ids": [1, 128], "attention_mask": [1, 128]}
    assert "opt" in d["axes_origin"]["sequence"]
    json.dumps(d)


def test_sequence_is_clamped_to_the_axis_max_and_checked_when_given() -> None:
    assert bench_shapes(text_spec(AxisRange(1, 64, 64)), (1,)).sequence == 64
    assert bench_shapes(text_spec(), (1,), sequence=32).to_dict()["axes_origin"] == {"sequence": "given"}
    with pytest.raises(OptionError, match="outside the model's sequence range 1..512"):
        bench_shapes(text_spec(), (1,), sequence=1000)
    with pytest.raises(OptionError, match="sequence axis"):
        bench_shapes(single_input("input", (3, 8, 8)), (1,), sequence=16)


def test_image_model_shapes_stay_batch_only() -> None:
    shapes = bench_shapes(single_input("input", (3, 8, 8)), (1, 8))
    assert shapes.sizes == {} and shapes.describe(8) == "batch 8"
    assert shapes.input_shapes(8) == {"input": [8, 3, 8, 8]}
    assert shape_label(shapes.to_dict(), 8) == "b=8" and shape_label(None, 1) == "b=1"
    assert shape_label(bench_shapes(text_spec(), (1, 8)).to_dict(), 8) == "batch 8 × sequence 128"


# -- timing and FLOPs with several inputs ----------------------------------------------------------
def test_onnxruntime_latency_from_a_feeds_dict(two_input_onnx: Path) -> None:
    feeds = text_spec().dummy(3, seed=0, sizes={SEQUENCE: 16})
    s = bench_onnxruntime(two_input_onnx, None, feeds, warmup=1, runs=3, threads=1, allow_few_runs=True)
    assert s.batch == 3 and s.n_runs == 3
    with pytest.raises(OptionError, match="missing \\['attention_mask'\\]"):
        bench_onnxruntime(two_input_onnx, None, {"input_ids": feeds["input_ids"]}, runs=2, allow_few_runs=True)
    with pytest.raises(OptionError, match="one array was given"):
        bench_onnxruntime(two_input_onnx, None, feeds["input_ids"], runs=2, allow_few_runs=True)


def test_torch_eager_and_grid_take_one_tensor_per_input(model: MaskedMeanClassifier, two_input_onnx: Path) -> None:
    spec = text_spec()
    make = lambda b: tuple(torch.from_numpy(spec.dummy(b, 0, {SEQUENCE: 16})[n]) for n in spec.input_names)  # noqa: E731
    s = bench_torch_eager(model, make(2), warmup=1, runs=3, threads=1, allow_few_runs=True)
    assert s.batch == 2
    grid = bench_latency_grid(model, two_input_onnx, spec.input_names, make, batch_sizes=(1, 4), warmup=1, runs=3,
                              threads=1, allow_few_runs=True)
    assert set(grid["latency"]["onnxruntime"]) == set(grid["latency"]["torch_eager"]) == {"1", "4"}
    assert grid["latency"]["onnxruntime"]["4"]["batch"] == 4
    with pytest.raises(OptionError, match="one tensor per ONNX input"):
        bench_latency_grid(model, two_input_onnx, ["input_ids"], make, batch_sizes=(1,), warmup=0, runs=1,
                           allow_few_runs=True)


def test_flops_are_counted_at_the_stated_sequence_length(model: MaskedMeanClassifier) -> None:
    spec = text_spec()
    args = lambda seq: tuple(torch.from_numpy(spec.dummy(1, 0, {SEQUENCE: seq})[n]) for n in spec.input_names)  # noqa: E731
    fc = count_flops(model, args(16))
    assert fc.batch == 1 and fc.flops == 2 * DIM * CLASSES  # the head; the embedding lookup costs no FLOPs
    bert_like = nn.Sequential(nn.Linear(DIM, DIM))
    per_token = lambda seq: count_flops(bert_like, (torch.randn(1, seq, DIM),)).flops  # noqa: E731
    assert per_token(128) == 8 * per_token(16)


# -- outputs over a dataset, compared by role ---------------------------------------------------------
def test_embeddings_are_compared_by_cosine_and_nearest_neighbours() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((20, 8))
    same = compare_embeddings(ref, ref * 3.0)  # scale does not change an embedding's direction
    assert same["cosine_mean"] == pytest.approx(1.0) and same["neighbour_agreement"] == 1.0
    assert same["top1_agreement"] is None and same["comparison"] == "embedding" and same["dim"] == 8
    noisy = compare_embeddings(ref, ref + rng.standard_normal((20, 8)) * 2.0)
    assert noisy["cosine_mean"] < 0.9 and noisy["neighbour_agreement"] < 1.0
    assert compare_embeddings(ref[:2], ref[:2])["neighbour_agreement"] is None  # needs 3 samples
    assert evaluate_outputs(ref, ref, "embedding")["comparison"] == "embedding"
    logits = evaluate_outputs(ref, ref, "logits", labels=ref.argmax(1))
    assert logits["comparison"] == "logits" and logits["top1_agreement"] == 1.0 and logits["top1_candidate"] == 1.0
