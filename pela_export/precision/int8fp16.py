"""INT8 over FP16: Q/DQ on the FP16 graph, the INT8 variant TensorRT targets should build.

Why: ``int8`` (:mod:`.int8`) quantizes the MatMul/Gemm/Conv inputs of the FP32 graph, so every other
op (LayerNorm, Softmax, GELU, residual adds, attention MatMuls) runs FP32 on TensorRT 11 and strongly
typed 10.x, and a ViT can come out slower than the FP16 engine (NVIDIA/Model-Optimizer#167). Here
the same calibration and Q/DQ placement as ``int8`` are followed by the FP16 rewrite (:mod:`.fp16`):
unquantized ops FP16, the ops the FP16 converter keeps FP32 stay FP32, each with its reason.

The Q/DQ dtype follows the opset, because ONNX allows float16 in QuantizeLinear/DequantizeLinear
(input and scale; DQ outputs the scale's type) only from opset 19:

* opset >= 19: Q and DQ run in float16 with float16 scales (rounded *up* from float32, never 0) and
  int8 zero points - the layout ModelOpt's ONNX PTQ writes with ``high_precision_dtype="fp16"``
  (its AutoCast raises the opset to 19+ for it). TensorRT 10+ parses it; 8.6 parses up to opset 17.
* opset 13..18 (the default 17, which TensorRT 8.6 / JetPack 6.0 needs): Q/DQ stay float32 with
  float32 scales between Casts (fp16 -> Cast -> Q -> DQ -> Cast -> fp16 op), as the schema requires;
  TensorRT 8.6 reads Q/DQ scales as float32 only.

Which form each node gets is decided by the FP16 rewrite from the ONNX schema at the graph's opset,
not by a list here. Q/DQ pairs feeding only nodes kept FP32 stay FP32 with them, and DQ outputs are
range-checked with their bound 128 x scale, so a quantized input beyond the FP16 range keeps its
consumer FP32 exactly as in the ``fp16`` variant.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from pela_export.calibration import graph as g

from .._io import ensure_writable_dir, sha256_file
from ..errors import OptionError, OutputDirError
from .fp16 import FLAGS as FP16_KEYS
from .fp16 import Fp16Options, RangeHook, apply_fp16, find_blocks, initializer_counts, options_record, write_fp16
from .fp16 import parse_options as parse_fp16
from .fp16_graph import HALF
from .int8 import (Int8Options, calib_set_of, check_against_fp32, load_checked, modelopt_quantize, quantize,
                   quantized_details, write_side_files)
from .ranges import TensorRange
from .registry import Feeds, PrecisionResult

__all__ = ["FP16_QDQ_OPSET", "Int8Fp16Converter", "convert_int8fp16", "dq_bounds", "keep_with_consumers",
           "parse_options"]

#: First opset whose QuantizeLinear/DequantizeLinear take float16 inputs and scales.
FP16_QDQ_OPSET = 19
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
QMAX = 128  # |int8| bound of a DequantizeLinear input (-128 included)


def parse_options(options: Mapping[str, Any] | None) -> tuple[Int8Options, Fp16Options]:
    """Split the converter options into the int8 and fp16 ones (``threads`` goes to both)."""
    opts = dict(options or {})
    int8_keys = set(Int8Options.__dataclass_fields__)
    unknown = sorted(set(opts) - int8_keys - set(FP16_KEYS))
    if unknown:
        raise OptionError(f"unknown int8fp16 option(s): {', '.join(unknown)}",
                          fix=f"use: {', '.join(sorted(int8_keys | set(FP16_KEYS)))}")
    return (Int8Options.parse({k: v for k, v in opts.items() if k in int8_keys}),
            parse_fp16({k: v for k, v in opts.items() if k in FP16_KEYS}))


def dq_bounds(model: onnx.ModelProto) -> RangeHook:
    """A range hook giving every DequantizeLinear output its exact bound, 128 x max(scale).

    The FP32 source has no such tensors, so without this a quantized input beyond 65504 would reach
    an FP16 consumer through the DQ unchecked."""
    inits = {t.name: t for t in model.graph.initializer}
    bounds = {n.output[0]: QMAX * float(np.abs(numpy_helper.to_array(inits[n.input[1]])).max())
              for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[1] in inits}

    def add(ranges: dict[str, TensorRange]) -> None:
        for name, b in bounds.items():
            ranges[name] = TensorRange(min=-b, max=b, count=1, batches=1)

    return add


def keep_with_consumers(model: onnx.ModelProto, blocked: dict[int, list[str]]) -> list[str]:
    """Keep FP32 each Q/DQ pair whose every consumer is kept FP32 (in place); returns their names.

    The kept node then reads its dequantized input in FP32 straight from the DQ, with no Cast
    between them (what TensorRT fuses), instead of an FP16 DQ output cast back up."""
    nodes = model.graph.node
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for t in n.input:
            consumers.setdefault(t, []).append(i)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    followed: list[str] = []
    for i, n in enumerate(nodes):
        users = consumers.get(n.output[0], []) if n.op_type == "DequantizeLinear" else []
        if not users or not all(u in blocked and blocked[u] for u in users):
            continue
        why = f"Q/DQ of node(s) kept FP32: {', '.join(nodes[u].name for u in users)}"
        blocked.setdefault(i, []).append(why)
        followed.append(n.name)
        q = producer.get(n.input[0])
        if q is not None and nodes[q].op_type == "QuantizeLinear" and consumers.get(nodes[q].output[0]) == [i]:
            blocked.setdefault(q, []).append(why)
            followed.append(nodes[q].name)
    return followed


def _qdq_record(model: onnx.ModelProto, opset: int, kept: list[dict[str, str]], followed: list[str]) -> dict[str, Any]:
    """How the Q/DQ nodes came out: their scale dtypes, the form, and those kept FP32 with reasons."""
    types = {t.name: t.data_type for t in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in QDQ_OPS]
    half = sum(types.get(n.input[1]) == HALF for n in qdq)
    native = opset >= FP16_QDQ_OPSET
    return {
        "form": "float16 Q/DQ, float16 scales" if native else "float32 Q/DQ between Casts",
        "why": (f"opset {opset} >= {FP16_QDQ_OPSET}: QuantizeLinear/DequantizeLinear take float16 (ModelOpt's "
                "high_precision_dtype='fp16' layout)") if native else
               (f"opset {opset} < {FP16_QDQ_OPSET}: ONNX QuantizeLinear/DequantizeLinear take float32 only; "
                f"export with --opset {FP16_QDQ_OPSET} or newer for float16 Q/DQ on TensorRT >= 10"),
        "opset": opset, "nodes": len(qdq), "fp16_scales": half, "fp32_scales": len(qdq) - half,
        "kept_fp32": [k for k in kept if k["op"] in QDQ_OPS], "kept_with_consumer": followed,
    }


class Int8Fp16Converter:
    """``PRECISIONS["int8fp16"]``: FP32 ONNX + calibration -> Q/DQ INT8 on the FP16 graph, plus int8's side files."""

    needs_calibration = True

    def __call__(self, src: Path, dst: Path, *, calib: Feeds | None = None,
                 options: Mapping[str, Any] | None = None) -> PrecisionResult:
        o8, o16 = parse_options(options)
        calib_set = calib_set_of(calib, "int8fp16")
        src, dst = Path(src), Path(dst)
        if dst.is_dir():
            raise OutputDirError("int8fp16 output path is a directory", where=str(dst),
                                 fix="pass a file path ending in .onnx")
        model = load_checked(src, o8)
        if o8.backend == "modelopt":
            return modelopt_quantize(src, dst, calib_set, o8, "int8fp16", fp16={"block_ops": o16.block_ops})
        opset = g.default_opset(model)
        q = quantize(model, calib_set, o8, fp16_scales=opset >= FP16_QDQ_OPSET)
        graph = g.copy_model(q.qmodel)
        blocked, ranges, absent = find_blocks(src, graph, calib_set, o16, derive=dq_bounds(graph))
        followed = keep_with_consumers(graph, blocked)
        graph, kept, counts = apply_fp16(graph, blocked, o16, uncounted=QDQ_OPS)
        check = check_against_fp32(model, graph, calib_set, o8.threads)
        ensure_writable_dir(dst.parent, flag="--out")
        warnings = write_fp16(graph, dst, o8.threads)
        details = quantized_details(q, o8, check, write_side_files(q, dst, o8))
        scales = "float16 scales" if opset >= FP16_QDQ_OPSET else "float32 scales, DQ output cast to float16"
        stored = "stored int8" if o8.fold_weights else "stored float behind Q->DQ"
        details["weights"] = f"int8 symmetric per-channel (output axis), zero point 0, {scales}, {stored}"
        details["unquantized"] = "FP16, except the nodes listed as kept FP32 (the fp16 variant's rules)"
        details["qdq"] = _qdq_record(graph, opset, kept, followed)
        details.update(counts, **options_record(o16, absent), range_check=ranges, **initializer_counts(graph),
                       warnings=warnings, src=str(src), src_sha256=sha256_file(src))  # the fp16 variant's keys
        return PrecisionResult("int8fp16", dst, kept_fp32=[k for k in kept if k["op"] not in QDQ_OPS],
                               details=details)


#: The converter the ``int8fp16`` spec names (:mod:`.specs.int8fp16`).
convert_int8fp16: Int8Fp16Converter = Int8Fp16Converter()
