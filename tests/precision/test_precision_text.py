"""FP16 and INT8 variants of an exported Hugging Face text classifier (three int64 inputs):
integer inputs stay int64, only float tensors convert, Q/DQ sits only on the float
activations and weights of MatMul/Gemm (the embedding Gather stays), and every variant
matches its FP32 graph within the golden tolerance of its precision. Calibration feeds are
valid random dicts from the model's I/O description (ids in the vocabulary, padded masks)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from pela_export.calibration import calibration_set, collect_statistics
from pela_export.export.onnx_export import export_example, export_onnx
from pela_export.export.runtime import ort_run, ort_session
from pela_export.lowrank import factorize_model
from pela_export.models.base import Tolerance
from pela_export.models.io import SEQUENCE
from pela_export.models.sources import resolve_model
from pela_export.precision import PRECISIONS
from pela_export.precision.check import compare_precision
from pela_export.precision.ranges import observe_ranges

pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")
import tiny_hf_text as tiny  # noqa: E402  (tests/fixtures)

#: (atol as a fraction of max|FP32 output|, rtol): the bundle's golden tolerance per precision.
TOLERANCE = {"fp16": (1e-2, 1e-2), "int8": (5e-2, 5e-2)}
INT64 = onnx.TensorProto.INT64


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory):
    """The loaded BERT classifier and its exported original and compressed ONNX files.

    The TorchScript exporter keeps this module fast (seconds, not a minute); the dynamo
    exporter's graphs go through the same converters in tests/pipeline/test_pipeline_text.py.
    """
    root = tmp_path_factory.mktemp("bert")
    loaded = resolve_model(f"hf:{tiny.bert_classifier(root / 'hf')}")

    def export(name: str) -> Path:
        return export_onnx(loaded.model, export_example(loaded), root / f"{name}.onnx", io=loaded.spec,
                           exporter="legacy").path

    files = {"original": export("original")}
    factorize_model(loaded.model, ratio=2)
    files["compressed"] = export("compressed")
    return loaded, files


def _calib(loaded, n: int = 4) -> list[dict[str, np.ndarray]]:
    return [loaded.spec.dummy(8, seed=10 + i, sizes={SEQUENCE: 24 + 8 * i}) for i in range(n)]


def _eval(loaded) -> list[dict[str, np.ndarray]]:
    return [loaded.spec.dummy(4, seed=100 + i, sizes={SEQUENCE: s}) for i, s in enumerate((64, 17))]


def _input_types(path: Path) -> dict[str, int]:
    return {i.name: i.type.tensor_type.elem_type for i in onnx.load(str(path)).graph.input}


def _tolerance(fp32: Path, feeds: list[dict[str, np.ndarray]], precision: str) -> Tolerance:
    sess = ort_session(fp32)
    scale = max(float(np.abs(v).max()) for f in feeds for v in ort_run(sess, f).values())
    frac, rtol = TOLERANCE[precision]
    return Tolerance(atol=frac * scale, rtol=rtol)


def test_calibration_feeds_are_valid_for_every_input(bert) -> None:
    loaded, _ = bert
    for feed in _calib(loaded):
        assert list(feed) == ["input_ids", "attention_mask", "token_type_ids"]
        assert all(v.dtype == np.int64 for v in feed.values())
        mask = feed["attention_mask"]
        assert mask[0].all() and not mask.all(), "row 0 full, later rows right-padded"
        assert feed["input_ids"].max() < loaded.spec.input("input_ids").high
        assert (feed["input_ids"][mask == 0] == 0).all() and (feed["token_type_ids"][mask == 0] == 0).all()


@pytest.mark.parametrize("model", ["original", "compressed"])
@pytest.mark.parametrize("io_fp32", [True, False])
def test_fp16_keeps_integer_inputs_and_matches_fp32(bert, tmp_path: Path, model: str, io_fp32: bool) -> None:
    loaded, files = bert
    dst = tmp_path / f"{model}.fp16.onnx"
    res = PRECISIONS.get("fp16")(files[model], dst, calib=_calib(loaded), options={"keep_io_fp32": io_fp32})
    assert _input_types(dst) == dict.fromkeys(loaded.spec.input_names, INT64)  # never cast to half
    out_type = onnx.load(str(dst)).graph.output[0].type.tensor_type.elem_type
    assert out_type == (onnx.TensorProto.FLOAT if io_fp32 else onnx.TensorProto.FLOAT16)
    check = res.details["range_check"]
    assert check["checked"] and check["batches"] == 4 and check["tensors_observed"] > 0
    assert res.details["nodes_fp16"] > 0
    feeds = _eval(loaded)
    cmp = compare_precision(files[model], dst, feeds, _tolerance(files[model], feeds, "fp16"))
    assert cmp.ok, cmp.failures()


@pytest.mark.parametrize("model", ["original", "compressed"])
def test_int8_quantizes_only_float_matmul_and_gemm(bert, tmp_path: Path, model: str) -> None:
    loaded, files = bert
    dst = tmp_path / f"{model}.int8.onnx"
    res = PRECISIONS.get("int8")(files[model], dst, calib=_calib(loaded), options={"threads": 1, "bins": 512})
    assert _input_types(dst) == dict.fromkeys(loaded.spec.input_names, INT64)
    graph = onnx.load(str(dst)).graph
    dq_out = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    consumers = {n.op_type for n in graph.node if any(t in dq_out for t in n.input)}
    assert consumers and consumers <= {"MatMul", "Gemm"}
    gathers = [n for n in graph.node if n.op_type == "Gather"]
    assert gathers and not any(t in dq_out for n in gathers for t in n.input), "embedding lookups stay FP32"
    quantized = {o for n in graph.node if n.op_type == "QuantizeLinear" for o in n.input[:1]}
    assert not quantized & set(loaded.spec.input_names), "integer inputs are never quantized"
    assert res.details["quantized_nodes"] >= 12  # at least every factorized or dense encoder linear
    feeds = _eval(loaded)
    tol = _tolerance(files[model], feeds, "int8")
    cmp = compare_precision(files[model], dst, feeds, tol)
    assert cmp.ok, cmp.failures()


def test_statistics_and_ranges_observe_float_tensors_only(bert) -> None:
    loaded, files = bert
    cset = calibration_set(loaded.spec.dummy(20, seed=3, sizes={SEQUENCE: 24}), samples=16, batch_size=8)
    assert cset.manifest.inputs == {n: [16, 24] for n in loaded.spec.input_names}
    stats = collect_statistics(files["original"], cset, bins=256, threads=1)
    assert stats.samples == 16 and stats.tensors
    assert not set(loaded.spec.input_names) & set(stats.tensors)
    ranges = observe_ranges(files["original"], _calib(loaded, 2), threads=1)
    assert not set(loaded.spec.input_names) & set(ranges) and ranges
