"""INT8 precision: a Q/DQ ONNX model plus a TensorRT calibration cache, from one calibration.

The graph carries symmetric INT8 Q/DQ pairs (zero point 0): per-channel on
weights (output-channel axis), per-tensor on activations, on the inputs of
MatMul/Gemm/Conv only, outputs and biases FP32 — the explicit-quantization
pattern TensorRT 8.6/10/11 fuses into INT8 kernels. Next to it go
``<stem>.calib.cache`` (TensorRT <= 10 implicit INT8), ``<stem>.calib.json``
(statistics, method, every scale) and ``<stem>.calib.manifest.json``.

Why our own Q/DQ inserter (:mod:`calibration.qdq`) rather than
``onnxruntime.quantization.quantize_static``: the activation scales must be
*identical* in the graph and in the cache, and come from one statistics pass
that also serves the cache; quantize_static re-calibrates on its own
augmented copy (a second pass) and needs overrides to take our scales. It
also quantizes Conv/Gemm biases to INT32, may rename tensors during its
pre-processing (breaking the name mapping to the FP32 graph that the cache
relies on) and places pairs by its own per-op rules. The inserter is ~150
lines of onnx.helper, keeps every FP32 tensor name, and is checked here by
onnx.checker and an ONNX Runtime run before anything is written.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pela_export.calibration import graph as g
from pela_export.calibration.cache import CALIBRATOR_BY_METHOD, CALIBRATORS, make_cache, trt_version_number
from pela_export.calibration.calibset import CalibrationSet, from_feeds
from pela_export.calibration.methods import DEFAULT_PERCENTILE, SCALE_METHODS, ScaleParams
from pela_export.calibration.qdq import QUANTIZABLE_OPS, QuantTarget, find_targets, fp16_ceil, insert_qdq
from pela_export.calibration.sensitivity import DEFAULT_SENSITIVITY_BATCHES, int8_sensitivity, node_sensitivity, output_error
from pela_export.calibration.statistics import DEFAULT_BINS, collect_statistics

from .._io import atomic_path, write_text_atomic
from ..errors import DependencyError, OnnxCheckError, OptionError
from .registry import Feeds, PrecisionResult

__all__ = ["Int8Options", "Quantized", "calib_set_of", "check_against_fp32", "convert_int8", "int8_sensitivity",
           "load_checked", "modelopt_quantize", "quantize", "quantized_details", "side_paths", "write_side_files"]

BACKENDS = ("pela", "modelopt")
CALIB_FIX = "pass --calib-data digits|fashion-mnist|idx:DIR|images:DIR|FILE.npz (API: calib=calibration_set(...))"
MIN_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear
CHECK_BATCHES = 2
_NP = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def _names(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise OptionError(f"int8 option {key!r} must be a list of names, got {value!r}", fix=f"pass {key}=['name', ...]")


@dataclass(frozen=True)
class Int8Options:
    """Validated ``options`` of the int8 converter (unknown keys are an error: typos must not pass)."""

    # percentile by default: on the digits ViT (precision stage of `pela-export run`), entropy
    # clipped the network input to a third of its range (relative output error 0.43, top-1
    # 99.8% -> 89.6%) while max and percentile kept 99.8%; on Fashion-MNIST entropy was also
    # the weakest (bench/results/precision_fashion-mnist-vit.md). Entropy stays one flag away.
    method: str = "percentile"
    percentile: float = DEFAULT_PERCENTILE
    exclude_nodes: tuple[str, ...] = ()
    exclude_ops: tuple[str, ...] = ()
    keep_worst: int = 0
    ops: tuple[str, ...] = QUANTIZABLE_OPS
    activation_matmul: bool = False
    fold_weights: bool = False
    bins: int = DEFAULT_BINS
    sensitivity_batches: int = DEFAULT_SENSITIVITY_BATCHES
    trt_version: str | None = None
    calibrator: str | None = None
    threads: int | None = None
    backend: str = "pela"

    @classmethod
    def parse(cls, options: Mapping[str, Any] | None) -> Int8Options:
        opts = dict(options or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(opts) - known)
        if unknown:
            raise OptionError(f"unknown int8 option(s): {', '.join(unknown)}", fix=f"use: {', '.join(sorted(known))}")
        for key in ("exclude_nodes", "exclude_ops", "ops"):
            if key in opts:
                opts[key] = _names(opts[key], key)
        o = cls(**opts)
        SCALE_METHODS.get(o.method)
        ScaleParams(percentile=o.percentile)
        bad_ops = [op for op in o.ops if op not in QUANTIZABLE_OPS]
        if bad_ops or not o.ops:
            raise OptionError(f"int8 cannot quantize op type(s) {bad_ops or '(none)'}",
                              fix=f"choose ops from: {', '.join(QUANTIZABLE_OPS)}")
        if int(o.keep_worst) < 0 or int(o.sensitivity_batches) < 1:
            raise OptionError(f"keep_worst must be >= 0 and sensitivity_batches >= 1, got {o.keep_worst}, "
                              f"{o.sensitivity_batches}", fix="pass --int8-keep-worst N (N >= 0)")
        if o.backend not in BACKENDS:
            raise OptionError(f"unknown int8 backend {o.backend!r}", fix=f"choose one of: {', '.join(BACKENDS)}")
        if o.calibrator is not None and o.calibrator not in CALIBRATORS:
            raise OptionError(f"unknown TensorRT calibrator {o.calibrator!r}",
                              fix=f"choose one of: {', '.join(CALIBRATORS)}")
        if not _no_implicit_int8(o.trt_version) and o.trt_version is not None:
            trt_version_number(o.trt_version)  # a malformed version fails before any work
        return o


def side_paths(dst: str | Path) -> dict[str, Path]:
    """Files written beside the INT8 model ``dst``."""
    d = Path(dst)
    return {"cache": d.with_name(f"{d.stem}.calib.cache"), "statistics": d.with_name(f"{d.stem}.calib.json"),
            "manifest": d.with_name(f"{d.stem}.calib.manifest.json")}


def _check_exclusions(model: Any, o: Int8Options) -> None:
    nodes = [n.name for n in model.graph.node]
    missing = [n for n in o.exclude_nodes if n not in set(nodes)]
    if missing:
        shown = ", ".join(nodes[:12]) + (" ..." if len(nodes) > 12 else "")
        raise OptionError(f"int8 exclude_nodes names unknown node(s) {missing}",
                          fix=f"use node names of the FP32 ONNX graph, e.g.: {shown}")
    types = sorted({n.op_type for n in model.graph.node})
    bad = [t for t in o.exclude_ops if t not in types]
    if bad:
        raise OptionError(f"int8 exclude_ops names op type(s) {bad} that are not in the graph",
                          fix=f"op types present: {', '.join(types)}")


def _no_implicit_int8(version: str | None) -> bool:
    """TensorRT >= 11 dropped implicit INT8: no cache is written for it (the Q/DQ model is what it builds)."""
    major = (version or "").split(".")[0]
    return major.isdigit() and int(major) >= 11


def _select(model: Any, calib_set: CalibrationSet, scales: Mapping[str, float], o: Int8Options
            ) -> tuple[list[QuantTarget], list[dict[str, str]], list[dict[str, str]], list[dict[str, Any]] | None]:
    """Nodes to quantize, nodes excluded (name, op type, keep_worst) and not quantizable, with reasons."""
    targets, skipped = find_targets(model, ops=o.ops, activation_matmul=o.activation_matmul)
    excluded: list[dict[str, str]] = []
    kept: list[QuantTarget] = []
    for t in targets:
        if t.node in o.exclude_nodes:
            excluded.append({"node": t.node, "op": t.op, "reason": "excluded by name (exclude_nodes)"})
        elif t.op in o.exclude_ops:
            excluded.append({"node": t.node, "op": t.op, "reason": f"excluded by op type {t.op} (exclude_ops)"})
        elif not all(a in scales for a in t.activations):
            skipped.append({"node": t.node, "op": t.op, "reason": "no calibration statistics for its input"})
        else:
            kept.append(t)
    ops = {n.name: n.op_type for n in model.graph.node}
    for name in o.exclude_nodes:  # named nodes that were not quantizable anyway
        if not any(e["node"] == name for e in excluded):
            excluded.append({"node": name, "op": ops[name],
                             "reason": "excluded by name (exclude_nodes; not quantizable anyway)"})
    sensitivity = None
    if o.keep_worst and kept:
        sensitivity = node_sensitivity(model, calib_set[:o.sensitivity_batches], kept, scales, threads=o.threads)
        worst = {r["node"]: r for r in sensitivity[:o.keep_worst]}
        for t in kept:
            if t.node in worst:
                r = worst[t.node]
                excluded.append({"node": t.node, "op": t.op, "reason": "kept in higher precision: sensitivity "
                                 f"rank {r['rank']}, error {r['error']:.3g}"})
        kept = [t for t in kept if t.node not in worst]
    return kept, excluded, skipped, sensitivity


@dataclass
class Quantized:
    """One calibration and Q/DQ placement in memory (nothing written): shared by ``int8`` and ``int8fp16``."""

    model: Any  # the FP32 graph, nodes named
    qmodel: Any  # the FP32 graph with Q/DQ pairs
    calib_set: CalibrationSet
    stats: Any  # ActivationStatistics
    scales: dict[str, float]  # activation tensor -> scale, exactly as in the graph
    kept: list[QuantTarget]
    excluded: list[dict[str, str]]
    skipped: list[dict[str, str]]
    sensitivity: list[dict[str, Any]] | None


def load_checked(src: Path, o: Int8Options) -> Any:
    """The FP32 graph with named nodes, refused early when Q/DQ cannot be placed in it."""
    model = g.name_nodes(g.load_model(src))
    opset = g.default_opset(model)
    if opset < MIN_OPSET:
        raise OnnxCheckError(f"opset {opset} has no per-channel Q/DQ (needs >= {MIN_OPSET})", where=str(src),
                             fix="re-export with --opset 17")
    if model.ByteSize() >= g.PROTO_LIMIT:
        raise OptionError("models over 2 GiB are not supported by the int8 converter", where=str(src),
                          fix="use the int8 option backend='modelopt' or a smaller model")
    _check_exclusions(model, o)
    return model


def quantize(model: Any, calib_set: CalibrationSet, o: Int8Options, *, fp16_scales: bool = False) -> Quantized:
    """Statistics, scales, placement and the Q/DQ copy (checked by onnx.checker) of ``model``."""
    stats = collect_statistics(model, calib_set, bins=o.bins, threads=o.threads)
    scales = stats.scales(o.method, percentile=o.percentile)
    if fp16_scales:  # the graph's float16 scales, so the cache and statistics record what the graph holds
        scales = {k: float(fp16_ceil(v)) for k, v in scales.items()}
    kept, excluded, skipped, sensitivity = _select(model, calib_set, scales, o)
    qmodel = insert_qdq(model, kept, scales, fold_weights=o.fold_weights, fp16_scales=fp16_scales)
    try:
        g.onnx_module().checker.check_model(qmodel)
    except Exception as exc:
        raise OnnxCheckError(f"the Q/DQ model fails onnx.checker ({exc})", where="int8",
                             fix="exclude the offending node (exclude_nodes) and report the model") from exc
    return Quantized(model, qmodel, calib_set, stats, scales, kept, excluded, skipped, sensitivity)


def calib_set_of(calib: Feeds | None, precision: str) -> CalibrationSet:
    """The calibration batches as a :class:`CalibrationSet` (an OptionError naming --calib-data when absent)."""
    if calib is None:
        raise OptionError("INT8 needs calibration data and none was given", where=f"--precision {precision}",
                          fix=CALIB_FIX)
    return calib if isinstance(calib, CalibrationSet) else from_feeds(calib)


def write_side_files(q: Quantized, dst: Path, o: Int8Options) -> dict[str, Any]:
    """Statistics, manifest and (TensorRT <= 10) the calibration cache beside ``dst``; returns their record."""
    paths = side_paths(dst)
    calibrator = o.calibrator or CALIBRATOR_BY_METHOD.get(o.method, "EntropyCalibration2")
    cache = None if _no_implicit_int8(o.trt_version) else make_cache(q.scales, trt_version=o.trt_version,
                                                                     calibrator=calibrator)
    q.stats.extra.update(method=o.method, percentile=o.percentile, scales=q.scales)
    q.stats.write(paths["statistics"])
    q.calib_set.manifest.write(paths["manifest"])
    if cache is not None:
        write_text_atomic(paths["cache"], cache.to_text())
    return {"calibration_cache": str(paths["cache"]) if cache else None,
            "cache_header": cache.header if cache else None,
            "cache_note": None if cache else f"TensorRT {o.trt_version} has no implicit INT8: no cache written",
            "statistics": str(paths["statistics"]), "manifest": str(paths["manifest"])}


def quantized_details(q: Quantized, o: Int8Options, check: dict[str, Any], side: Mapping[str, Any]) -> dict[str, Any]:
    """The conversion record of a Q/DQ variant: calibration, placement, scales, check and side files."""
    cs = q.calib_set
    quantized_acts = sorted({a for t in q.kept for a in t.activations})
    details = {
        "backend": "pela", "method": o.method, "samples": cs.num_samples, "batches": len(cs),
        "batch_size": cs.batch_size, "calibration": cs.manifest.to_dict(),
        "quantized_nodes": len(q.kept), "quantized": [t.node for t in q.kept], "excluded": q.excluded,
        "not_quantizable": q.skipped, "sensitivity": q.sensitivity,
        "weights": "int8 symmetric per-channel (output axis), zero point 0"
                   + (", stored int8" if o.fold_weights else ", stored fp32 behind Q->DQ"),
        "activations": "int8 symmetric per-tensor, zero point 0",
        "activation_scales": {a: q.scales[a] for a in quantized_acts},
        "check": check, **side,
    }
    if o.method == "percentile":
        details["percentile"] = o.percentile
    if q.stats.extra.get("dropped_samples"):
        details["dropped_samples"] = q.stats.extra["dropped_samples"]  # static-batch model: short remainder
    return details


def check_against_fp32(model: Any, variant: Any, calib_set: CalibrationSet, threads: int | None) -> dict[str, Any]:
    """Output error of ``variant`` vs the FP32 ``model`` on the first calibration batches (ORT basic level).

    Float feeds are cast to the dtypes the variant declares (FP16 I/O), outputs compared in float64.
    """
    ref_sess, sess = g.session(model, threads=threads), g.session(variant, threads=threads)
    batches = list(g.micro_batches(calib_set[:CHECK_BATCHES], fixed=g.fixed_batch(ref_sess)))
    dtypes = {i.name: _NP.get(i.type) for i in sess.get_inputs()}
    cast = [{k: v.astype(dtypes[k]) if dtypes.get(k) and v.dtype.kind == "f" else v for k, v in b.items()}
            for b in batches]
    err = output_error([g.run(ref_sess, b) for b in batches], [g.run(sess, b) for b in cast])
    return {**err, "batches": len(batches), "reference": "fp32 onnxruntime"}


class Int8Converter:
    """``PRECISIONS["int8"]``: FP32 ONNX + calibration batches -> Q/DQ INT8 ONNX and its side files."""

    needs_calibration = True

    def __call__(self, src: Path, dst: Path, *, calib: Feeds | None = None,
                 options: Mapping[str, Any] | None = None) -> PrecisionResult:
        o = Int8Options.parse(options)
        calib_set = calib_set_of(calib, "int8")
        src, dst = Path(src), Path(dst)
        model = load_checked(src, o)
        if o.backend == "modelopt":
            return modelopt_quantize(src, dst, calib_set, o, "int8")
        q = quantize(model, calib_set, o)
        check = check_against_fp32(model, q.qmodel, calib_set, o.threads)
        side = write_side_files(q, dst, o)
        with atomic_path(dst) as tmp:
            g.onnx_module().save_model(q.qmodel, str(tmp))
        return PrecisionResult("int8", dst, kept_fp32=q.excluded + q.skipped,
                               details=quantized_details(q, o, check, side))


def modelopt_quantize(src: Path, dst: Path, calib_set: CalibrationSet, o: Int8Options, precision: str,
              fp16: Mapping[str, Any] | None = None) -> PrecisionResult:
    """Optional backend: NVIDIA ModelOpt's ONNX PTQ (its own placement and scales; no cache from us).

    ``high_precision_dtype`` is passed explicitly: ModelOpt's default became "fp16" (its AutoCast then
    raises the opset to 19+), which would turn the FP32-graph ``int8`` into an FP16 graph.
    """
    try:
        from modelopt.onnx.quantization import quantize  # type: ignore[import-not-found]
    except ImportError:
        raise DependencyError(f"the {precision} backend 'modelopt' needs NVIDIA ModelOpt, which is not installed",
                              fix="pip install 'nvidia-modelopt[onnx]', or use the default backend 'pela'") from None
    if o.method not in ("entropy", "max"):
        raise OptionError(f"ModelOpt calibrates with entropy or max, not {o.method!r}", fix="pass method entropy|max")
    extra: dict[str, Any] = {"high_precision_dtype": "fp16" if fp16 is not None else "fp32"}
    if fp16 is not None:
        extra["op_types_to_exclude_fp16"] = list(fp16.get("block_ops") or ())
    with atomic_path(dst) as tmp:
        out = tmp.with_name(tmp.stem + ".onnx")  # ModelOpt derives file names from an .onnx output path
        try:
            quantize(onnx_path=str(src), quantize_mode="int8", calibration_data=dict(calib_set.arrays),
                     calibration_method=o.method, calibration_eps=["cpu"],
                     nodes_to_exclude=list(o.exclude_nodes) or None, op_types_to_exclude=list(o.exclude_ops) or None,
                     output_path=str(out), **extra)
            out.replace(tmp)
        finally:
            out.unlink(missing_ok=True)
    calib_set.manifest.write(side_paths(dst)["manifest"])
    return PrecisionResult(precision, dst, details={
        "backend": "modelopt", "method": o.method, "samples": calib_set.num_samples,
        "high_precision_dtype": extra["high_precision_dtype"],
        "calibration": calib_set.manifest.to_dict(), "manifest": str(side_paths(dst)["manifest"]),
        "calibration_cache": None, "cache_note": "ModelOpt chooses its own scales; no TensorRT cache written"})


#: The converter the ``int8`` spec names (:mod:`.specs.int8`).
convert_int8 = Int8Converter()
