"""The int8 precision converter on tiny exported models: a valid, close Q/DQ graph whose
scales equal the calibration cache's, exclusions, keep-worst and clear errors."""
from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from pela_export.calibration import CalibrationManifest, ModelInput, calibration_set, read_cache
from pela_export.calibration.graph import session
from pela_export.calibration.qdq import quantized_nodes
from pela_export.errors import DatasetError, DependencyError, OnnxCheckError, OptionError
from pela_export.export.runtime import ort_session
from pela_export.precision import PRECISIONS
from pela_export.precision.int8 import int8_sensitivity, side_paths

FAST = {"threads": 1, "bins": 512}


class TinyAttention(nn.Module):
    """Attention-like block + a low-rank MLP pair + a 2-D head (MatMul [in,out] and Gemm transB)."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(16, 16) for _ in range(4))
        self.down, self.up = nn.Linear(16, 4, bias=False), nn.Linear(4, 24)
        self.head = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        att = torch.softmax(self.q(x) @ self.k(x).transpose(1, 2) / 4.0, dim=-1) @ self.v(x)
        x = x + self.o(att)
        return self.head(torch.relu(self.up(torch.relu(self.down(x)))).mean(dim=1))


def _export(model: nn.Module, example: torch.Tensor, path: Path, opset: int = 17) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example, str(path), input_names=["x"], output_names=["y"], opset_version=opset,
                          dynamo=False, dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return path


@pytest.fixture(scope="module")
def att(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    model = TinyAttention().eval()
    return model, _export(model, torch.randn(2, 6, 16), tmp_path_factory.mktemp("att") / "att.onnx")


@pytest.fixture(scope="module")
def calib() -> object:
    x = np.random.default_rng(0).standard_normal((96, 6, 16)).astype(np.float32)
    return calibration_set(x, ModelInput("x", (6, 16)), samples=48, batch_size=16)


@pytest.fixture(scope="module")
def converted(att, calib, tmp_path_factory):
    dst = tmp_path_factory.mktemp("int8") / "att.int8.onnx"
    return PRECISIONS.get("int8")(att[1], dst, calib=calib, options={"method": "entropy", **FAST})


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_registered_and_needs_calibration() -> None:
    assert "int8" in PRECISIONS.names() and PRECISIONS.get("int8").needs_calibration is True


def test_qdq_model_is_valid_int8_and_close(att, converted) -> None:
    model, src = att
    q = onnx.load(str(converted.path))
    onnx.checker.check_model(q, full_check=True)
    inits = _inits(q)
    qdq = [n for n in q.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq and all(inits[n.input[2]].dtype == np.int8 and not inits[n.input[2]].any() for n in qdq)
    qn = quantized_nodes(q)
    assert set(qn) == {"/q/MatMul", "/k/MatMul", "/v/MatMul", "/o/MatMul", "/down/MatMul", "/up/MatMul", "/head/Gemm"}
    assert converted.details["quantized_nodes"] == 7
    # weight scales are per output channel: [in, out] MatMul weights and the transB Gemm alike
    producer = {o: n for n in q.graph.node for o in n.output}
    for name, layer in (("/q/MatMul", model.q), ("/down/MatMul", model.down), ("/head/Gemm", model.head)):
        node = next(n for n in q.graph.node if n.name == name)
        dq = producer[node.input[1]]
        assert inits[dq.input[1]].shape == (layer.out_features,)
        assert next(a.i for a in dq.attribute if a.name == "axis") == (0 if name == "/head/Gemm" else 1)
    x = np.random.default_rng(5).standard_normal((8, 6, 16)).astype(np.float32)
    assert _rel_error(src, converted.path, x) < 0.05
    assert converted.details["check"]["error"] < 0.1  # on calibration batches, entropy clipping included


def _rel_error(src: Path, qpath: Path, x: np.ndarray) -> float:
    """Relative L2 error of the Q/DQ model vs FP32.

    The Q/DQ model is run as simulated quantization (ORT basic level), the
    arithmetic TensorRT's INT8 kernels implement. With all optimisations ORT
    fuses Q/DQ into its own x86 int8 kernels, which on AVX2 CPUs without VNNI
    saturate int16 pair sums (u8s8 VPMADDUBSW) and add error TensorRT does not
    have, so that run is only required to load and give finite outputs.
    """
    ref = ort_session(src, threads=1).run(None, {"x": x})[0]
    fused = ort_session(qpath, threads=1).run(None, {"x": x})[0]
    assert fused.shape == ref.shape and np.isfinite(fused).all()
    out = session(onnx.load(str(qpath)), threads=1).run(None, {"x": x})[0]
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def test_graph_scales_equal_cache_scales(converted) -> None:
    q = onnx.load(str(converted.path))
    inits = _inits(q)
    cache = read_cache(converted.details["calibration_cache"])
    assert cache.header == converted.details["cache_header"] == "TRT-8602-EntropyCalibration2"
    act_q = [n for n in q.graph.node if n.op_type == "QuantizeLinear" and inits[n.input[1]].ndim == 0]
    assert len(act_q) == 5  # x (one pair shared by q/k/v), attention output, residual sum, relu, mean
    for n in act_q:
        assert float(inits[n.input[1]]) == cache.scales[n.input[0]]
        assert converted.details["activation_scales"][n.input[0]] == cache.scales[n.input[0]]
    stats = json.loads(Path(converted.details["statistics"]).read_text())
    assert stats["method"] == "entropy" and stats["scales"] == cache.scales
    manifest = CalibrationManifest.read(converted.details["manifest"])
    assert manifest.to_dict() == converted.details["calibration"] and manifest.samples == converted.details["samples"]
    assert side_paths(converted.path)["cache"].name == "att.int8.calib.cache"


def test_percentile_and_max_methods(att, calib, tmp_path) -> None:
    res = {m: PRECISIONS.get("int8")(att[1], tmp_path / f"{m}.onnx", calib=calib,
                                     options={"method": m, "percentile": 99.9, **FAST}) for m in ("max", "percentile")}
    mx, pc = (read_cache(res[m].details["calibration_cache"]) for m in ("max", "percentile"))
    assert mx.calibrator == pc.calibrator == "EntropyCalibration2"  # the calibrator that reads the cache
    assert all(pc.scales[t] <= mx.scales[t] for t in mx.scales)
    assert any(pc.scales[t] < mx.scales[t] for t in mx.scales)
    assert res["percentile"].details["percentile"] == 99.9


def test_exclude_by_name_and_op_type(att, calib, tmp_path) -> None:
    r = PRECISIONS.get("int8")(att[1], tmp_path / "ex.onnx", calib=calib,
                               options={"method": "max", "exclude_nodes": ["/q/MatMul"], "exclude_ops": ["Gemm"],
                                        **FAST})
    qn = quantized_nodes(onnx.load(str(r.path)))
    assert "/q/MatMul" not in qn and "/head/Gemm" not in qn and "/k/MatMul" in qn
    reasons = {e["node"]: e["reason"] for e in r.kept_fp32}
    assert "exclude_nodes" in reasons["/q/MatMul"] and "exclude_ops" in reasons["/head/Gemm"]
    assert "activation" in reasons["/MatMul"]  # activation x activation MatMul is listed as not quantized


def test_keep_worst_moves_the_most_sensitive_node_out(att, calib, tmp_path) -> None:
    report = int8_sensitivity(att[1], calib[:2], method="max", threads=1, bins=512)
    worst = report[0]
    assert worst["rank"] == 1 and {"node", "op", "error"} <= set(worst)
    r = PRECISIONS.get("int8")(att[1], tmp_path / "kw.onnx", calib=calib,
                               options={"method": "max", "keep_worst": 1, "sensitivity_batches": 2, **FAST})
    assert worst["node"] not in quantized_nodes(onnx.load(str(r.path)))
    kept = [e for e in r.details["excluded"] if e["node"] == worst["node"]]
    assert kept and kept[0]["reason"].startswith("kept in higher precision: sensitivity rank 1, error")
    assert r.details["sensitivity"][0]["node"] == worst["node"] and r.details["quantized_nodes"] == 6


def test_conv_model_on_digits_with_folded_weights_and_trt10_header(tmp_path) -> None:
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)).eval()
    src = _export(cnn, torch.randn(1, 1, 8, 8), tmp_path / "cnn.onnx")
    cs = calibration_set("digits", ModelInput.from_onnx(src), samples=32, batch_size=16)
    r = PRECISIONS.get("int8")(src, tmp_path / "cnn.int8.onnx", calib=cs,
                               options={"fold_weights": True, "trt_version": "10.3.0", **FAST})
    q = onnx.load(str(r.path))
    onnx.checker.check_model(q)
    inits = _inits(q)
    producer = {o: n for n in q.graph.node for o in n.output}
    conv = next(n for n in q.graph.node if n.op_type == "Conv")
    dq = producer[conv.input[1]]
    assert dq.op_type == "DequantizeLinear" and inits[dq.input[0]].dtype == np.int8
    assert inits[dq.input[1]].shape == (4,) and np.abs(inits[dq.input[0]]).max() == 127
    assert not any(i.dtype == np.float32 and i.shape == (4, 1, 3, 3) for i in inits.values())  # fp32 weight dropped
    assert read_cache(r.details["calibration_cache"]).version_number == 100300
    assert r.details["calibration"]["source"] == "digits (train split)"
    assert _rel_error(src, r.path, cs[0]["x"]) < 0.05
    r11 = PRECISIONS.get("int8")(src, tmp_path / "cnn11.onnx", calib=cs, options={"trt_version": "11.0", **FAST})
    assert r11.details["calibration_cache"] is None and "no implicit INT8" in r11.details["cache_note"]
    assert not side_paths(r11.path)["cache"].exists()


@pytest.mark.parametrize(("calib_arg", "options", "error", "text"), [
    (None, {}, OptionError, "--calib-data"),
    ("ok", {"method": "mse"}, OptionError, "--calib-method"),
    ("ok", {"exclude_nodes": ["/nope/MatMul"]}, OptionError, "unknown node"),
    ("ok", {"exclude_ops": ["Matmul"]}, OptionError, "not in the graph"),
    ("ok", {"methd": "max"}, OptionError, "unknown int8 option"),
    ("ok", {"percentile": 120}, OptionError, "percentile"),
    ("ok", {"backend": "modelopt"}, DependencyError, "nvidia-modelopt"),  # not installed here
    ([], {}, DatasetError, "empty"),
])
def test_bad_inputs_leave_no_files(att, calib, tmp_path, calib_arg, options, error, text) -> None:
    if options.get("backend") == "modelopt" and importlib.util.find_spec("modelopt") is not None:
        pytest.skip("ModelOpt is installed")
    dst = tmp_path / "out" / "bad.int8.onnx"
    with pytest.raises(error, match=text):
        PRECISIONS.get("int8")(att[1], dst, calib=calib if calib_arg == "ok" else calib_arg, options=options)
    assert not dst.parent.exists() or not any(dst.parent.iterdir())


def test_old_opset_is_refused(tmp_path, calib) -> None:
    torch.manual_seed(0)
    src = _export(nn.Sequential(nn.Linear(16, 4)).eval(), torch.randn(2, 6, 16), tmp_path / "old.onnx", opset=11)
    with pytest.raises(OnnxCheckError, match="opset 11"):
        PRECISIONS.get("int8")(src, tmp_path / "old.int8.onnx", calib=calib, options=FAST)
