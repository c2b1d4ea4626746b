"""FP16 in the graph: float tensors become FP16, sensitive nodes stay FP32 behind Casts.

The converter of ``--precision fp16`` (spec in :mod:`.specs.fp16`). Op types in :data:`DEFAULT_FP32_OPS` (or the
user's list), named nodes, and - given calibration feeds - every node reading or
writing an activation beyond 65504 stay FP32, each with its reason in the result.

Not built on ``onnxruntime.transformers.float16``: that converter appends Casts
out of topological order (fails ``onnx.checker``), keeps stale value_info, rounds
weights shared with blocked nodes to FP16, and casts a blocked node's output back
to FP16 before its (also blocked) consumer, so an overflowing activation still
becomes inf. The rewrite (:mod:`.fp16_graph`) avoids all four; the result is
re-inferred in strict mode, checked, loaded in ONNX Runtime and only then renamed
into place.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from .._io import atomic_path, ensure_writable_dir, sha256_file
from ..errors import OnnxCheckError, OptionError, OutputDirError
from .fp16_graph import FLOAT, HALF, elem_types, plan_fp16, rewrite_fp16
from .ranges import FP16_MAX, TensorRange, fp16_overflow_nodes, node_label, observe_ranges
from .registry import Feeds, PrecisionResult

#: Adds derived entries to observed ranges before the overflow check (``int8fp16``: Q/DQ outputs).
RangeHook = Callable[[dict[str, TensorRange]], None]

#: Op types kept FP32 by default. Normalisations, Softmax and sum-type reductions
#: accumulate over many elements (FP16 loses the small terms or overflows the sum);
#: Pow/Sqrt/Exp/Log overflow or underflow FP16 at modest inputs (x**2 > 65504 for
#: |x| > 256, exp(x) for x > 11) and form the variance/softmax parts of decomposed
#: LayerNorm/Softmax. ReduceMax/Min are exact in FP16 and Erf (GELU) is bounded in
#: [-1, 1], so they convert. MatMul/Gemm/Conv, the bulk of the time, run FP16.
DEFAULT_FP32_OPS: tuple[str, ...] = (
    "LayerNormalization", "GroupNormalization", "InstanceNormalization", "LpNormalization",
    "MeanVarianceNormalization", "Softmax", "LogSoftmax", "ReduceMean", "ReduceSum", "ReduceSumSquare",
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceProd", "CumSum",
    "Pow", "Sqrt", "Exp", "Log",
)

#: Option key → CLI flag named in error messages.
FLAGS: dict[str, str] = {"keep_io_fp32": "--fp16-io", "block_ops": "--fp16-keep-ops",
                         "extra_block_ops": "--fp16-keep-ops", "block_nodes": "--fp16-keep-nodes",
                         "range_margin": "--fp16-range-margin", "threads": "--threads"}


@dataclass(frozen=True)
class Fp16Options:
    """Validated converter options (see :data:`FLAGS` for the CLI spelling)."""

    keep_io_fp32: bool = True
    block_ops: tuple[str, ...] = DEFAULT_FP32_OPS
    user_block_ops: bool = False
    extra_block_ops: tuple[str, ...] = ()
    block_nodes: tuple[str, ...] = ()
    range_margin: float = 1.0
    threads: int | None = None


def _names(key: str, value: Any) -> tuple[str, ...]:
    """A comma-separated string or a sequence of strings (the CLI passes either)."""
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return tuple(v.strip() for v in value if v.strip())
    raise OptionError(f"option {key!r} must be a list of names, got {value!r}",
                      fix=f"pass {FLAGS[key]} with comma-separated names")


def parse_options(options: Mapping[str, Any] | None) -> Fp16Options:
    """Check option keys and types up front, naming the flag to fix."""
    opts = dict(options or {})
    unknown = sorted(set(opts) - set(FLAGS))
    if unknown:
        raise OptionError(f"unknown fp16 option(s) {', '.join(map(repr, unknown))}",
                          fix=f"use only: {', '.join(FLAGS)}")
    keep_io = opts.get("keep_io_fp32", True)
    if not isinstance(keep_io, bool):
        raise OptionError(f"option 'keep_io_fp32' must be true or false, got {keep_io!r}",
                          fix="pass --fp16-io fp32 (default) or --fp16-io fp16")
    margin = opts.get("range_margin", 1.0)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0.0 < float(margin) <= 1.0:
        raise OptionError(f"option 'range_margin' must be a number in (0, 1], got {margin!r}",
                          fix="pass --fp16-range-margin 0.5 to keep ops reaching half the FP16 range in FP32")
    threads = opts.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise OptionError(f"option 'threads' must be a positive integer, got {threads!r}",
                          fix="pass --threads with a positive integer")
    user_ops = "block_ops" in opts
    return Fp16Options(
        keep_io_fp32=keep_io,
        block_ops=_names("block_ops", opts["block_ops"]) if user_ops else DEFAULT_FP32_OPS,
        user_block_ops=user_ops,
        extra_block_ops=_names("extra_block_ops", opts.get("extra_block_ops", ())),
        block_nodes=_names("block_nodes", opts.get("block_nodes", ())),
        range_margin=float(margin), threads=threads)


def _check_names_in_graph(model: onnx.ModelProto, opts: Fp16Options) -> list[str]:
    """User-named op types must be ONNX ops or in the graph (typos fail); node names must exist."""
    ops = sorted({n.op_type for n in model.graph.node})
    user_ops = (opts.block_ops if opts.user_block_ops else ()) + opts.extra_block_ops
    bad_ops = [o for o in user_ops if o not in ops and not onnx.defs.has(o)]
    if bad_ops:
        raise OptionError(f"unknown op type(s) {', '.join(map(repr, bad_ops))} in --fp16-keep-ops",
                          fix=f"op types in this graph: {', '.join(ops)}")
    names = {n.name for n in model.graph.node if n.name}
    bad_nodes = [n for n in opts.block_nodes if n not in names]
    if bad_nodes:
        shown = sorted(names)
        more = f" … ({len(shown) - 40} more)" if len(shown) > 40 else ""
        raise OptionError(f"node name(s) {', '.join(map(repr, bad_nodes))} in --fp16-keep-nodes not in the graph",
                          fix=f"node names in this graph: {', '.join(shown[:40])}{more}")
    return [o for o in user_ops if o not in ops]


def _infer_strict(model: onnx.ModelProto, src_model: onnx.ModelProto) -> onnx.ModelProto:
    """Strict type inference catches a dtype clash at the node that has it."""
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except onnx.shape_inference.InferenceError as exc:
        try:  # the source itself may not infer strictly (exporter quirks): then it is not our clash
            onnx.shape_inference.infer_shapes(src_model, check_type=True, strict_mode=True)
        except onnx.shape_inference.InferenceError:
            return onnx.shape_inference.infer_shapes(model)
        raise OnnxCheckError(f"FP16 graph has a type clash: {_first_line(exc)}", where=_node_in(exc) or "fp16",
                             fix="keep that node FP32 with --fp16-keep-nodes (or its op with --fp16-keep-ops)") from exc


def _first_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def _node_in(exc: BaseException) -> str | None:
    """Node name from an onnx/ORT message ("... in node (ln_1) ..." / "Node (ln_1) Op ...")."""
    m = re.search(r"[Nn]ode \(([^)]+)\)", str(exc)) or re.search(r"[Nn]ode:\s*(\S+)", str(exc))
    return f"node {m.group(1)!r}" if m else None


def _check_written(tmp: Path, dst: Path, threads: int | None) -> list[str]:
    """The file as written must pass onnx.checker and load in ONNX Runtime (CPU); returns warnings.

    A graph that only fails under ORT_ENABLE_ALL but loads with basic optimisations is
    valid ONNX hit by an ORT fusion bug (SimplifiedLayerNormFusion around its own
    ``InsertedPrecisionFreeCast`` nodes, ORT 1.24-1.28): kept, with a warning.
    """
    from ..export.runtime import _onnxruntime, ort_session

    try:
        onnx.checker.check_model(str(tmp))
    except onnx.checker.ValidationError as exc:
        raise OnnxCheckError(f"FP16 graph fails onnx.checker: {_first_line(exc)}", where=str(dst),
                             fix="keep the named node FP32 with --fp16-keep-nodes / --fp16-keep-ops") from exc
    try:
        ort_session(tmp, threads=threads)
        return []
    except OnnxCheckError as exc:
        cause = exc.__cause__ or exc
        ort = _onnxruntime()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        try:
            ort.InferenceSession(str(tmp), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001 - any failure here means the graph itself is at fault
            where = _node_in(cause)
            raise OnnxCheckError(f"ONNX Runtime cannot load the FP16 graph: {_first_line(cause)}",
                                 where=f"{dst} ({where})" if where else str(dst),
                                 fix="keep the named node FP32 with --fp16-keep-nodes / --fp16-keep-ops") from exc
        return [(f"ONNX Runtime {ort.__version__} loads the FP16 graph only with basic optimisations "
                 f"({_first_line(cause)}); run it with ORT_ENABLE_EXTENDED or a newer onnxruntime")]


def _user_blocks(model: onnx.ModelProto, opts: Fp16Options) -> dict[int, list[str]]:
    """Node index → reasons from the op list and ``--fp16-keep-nodes``."""
    op_reason = "named by --fp16-keep-ops" if opts.user_block_ops else "in the FP32 list"
    blocked: dict[int, list[str]] = {}
    for idx, node in enumerate(model.graph.node):
        reasons = []
        if node.op_type in opts.block_ops:
            reasons.append(f"op type {node.op_type} {op_reason}")
        elif node.op_type in opts.extra_block_ops:
            reasons.append(f"op type {node.op_type} named by --fp16-keep-ops")
        if node.name and node.name in opts.block_nodes:
            reasons.append("named by --fp16-keep-nodes")
        if reasons:
            blocked[idx] = reasons
    return blocked


def _range_blocks(src: Path, model: onnx.ModelProto, calib: Feeds, opts: Fp16Options,
                  blocked: dict[int, list[str]], derive: RangeHook | None = None) -> dict[str, Any]:
    """Add nodes touching activations beyond the FP16 range to ``blocked``; returns the record.

    ``derive`` adds ranges of tensors ``model`` has and ``src`` lacks (the outputs of inserted Q/DQ nodes)."""
    ranges = observe_ranges(src, calib, threads=opts.threads)
    if derive is not None:
        derive(ranges)
    nodes = model.graph.node
    index = {node_label(n, i): i for i, n in enumerate(nodes)}
    over = fp16_overflow_nodes(model, ranges, margin=opts.range_margin)
    limit = FP16_MAX * opts.range_margin
    for o in over:
        role = "output" if o.tensor in nodes[index[o.node]].output else "input"
        blocked.setdefault(index[o.node], []).append(
            f"{role} {o.tensor!r} reached {o.absmax:.3g} > {limit:g} on calibration data")
    return {"checked": True, "batches": len(calib), "tensors_observed": len(ranges), "limit": limit,
            "overflow_nodes": [o.node for o in over]}


def find_blocks(src: Path, model: onnx.ModelProto, calib: Feeds | None, opts: Fp16Options,
                derive: RangeHook | None = None) -> tuple[dict[int, list[str]], dict[str, Any], list[str]]:
    """Nodes of ``model`` kept FP32 by op list, name and (given ``calib``) range on ``src``, with reasons.

    Returns (node index → reasons, range-check record, user op types absent from the graph)."""
    absent_ops = _check_names_in_graph(model, opts)
    blocked = _user_blocks(model, opts)
    ranges = _range_blocks(src, model, calib, opts, blocked, derive) if calib else {"checked": False, "batches": 0}
    return blocked, ranges, absent_ops


def apply_fp16(model: onnx.ModelProto, blocked: dict[int, list[str]], opts: Fp16Options, *,
               uncounted: frozenset[str] = frozenset()) -> tuple[onnx.ModelProto, list[dict[str, str]], dict[str, int]]:
    """Rewrite ``model`` (in place, then re-inferred strictly): returns it, the kept nodes and node counts.

    ``blocked`` gains the schema/weight reasons :func:`plan_fp16` finds; op types in ``uncounted``
    (``int8fp16``: Q/DQ, recorded apart) are left out of the counts but not out of the kept list."""
    src_model = onnx.ModelProto()
    src_model.CopyFrom(model)
    types = elem_types(model)
    plan = plan_fp16(model, types, blocked, opts.keep_io_fp32)
    kept = [{"node": node_label(model.graph.node[i], i), "op": model.graph.node[i].op_type,
             "reason": "; ".join(r)} for i, r in sorted(blocked.items()) if plan.mode[i] == "fp32"]
    modes = [m for n, m in zip(model.graph.node, plan.mode, strict=True) if n.op_type not in uncounted]
    n_fp16, n_fp32 = modes.count("fp16"), modes.count("fp32")
    n_casts = rewrite_fp16(model, plan, types, opts.keep_io_fp32)
    counts = {"nodes": len(modes), "nodes_fp16": n_fp16, "nodes_fp32": n_fp32,
              "nodes_other": len(modes) - n_fp16 - n_fp32, "casts_added": n_casts}
    return _infer_strict(model, src_model), kept, counts


def options_record(opts: Fp16Options, absent_ops: list[str]) -> dict[str, Any]:
    """What the options made FP32 (for the conversion details)."""
    return {"block_ops": sorted({*opts.block_ops, *opts.extra_block_ops}),
            "block_ops_source": "user" if opts.user_block_ops else "default",
            "block_ops_not_in_graph": absent_ops, "block_nodes": list(opts.block_nodes),
            "keep_io_fp32": opts.keep_io_fp32}


def initializer_counts(model: onnx.ModelProto) -> dict[str, int]:
    """How many weights the rewrite stored FP16 and how many stayed FP32 (shared with kept nodes)."""
    inits = [t.data_type for t in model.graph.initializer]
    return {"initializers_fp16": inits.count(HALF), "initializers_fp32": inits.count(FLOAT)}


def write_fp16(model: onnx.ModelProto, dst: Path, threads: int | None) -> list[str]:
    """Save atomically; the file is renamed into place only after it checks and loads."""
    try:
        with atomic_path(dst) as tmp:
            onnx.save(model, str(tmp))
            return _check_written(tmp, dst, threads)
    except OSError as exc:
        raise OutputDirError(f"cannot write the FP16 model ({exc.strerror or exc})", where=str(dst),
                             fix="pass --out with a directory you can write to") from exc


class Fp16Converter:
    """FP32 ONNX → FP16 ONNX with sensitive and overflowing nodes kept FP32 (see module doc)."""

    needs_calibration: bool = False  # calibration feeds only enable the overflow check

    def __call__(self, src: Path, dst: Path, *, calib: Feeds | None = None,
                 options: Mapping[str, Any] | None = None) -> PrecisionResult:
        from ..export.onnx_export import load_onnx

        opts = parse_options(options)
        src, dst = Path(src), Path(dst)
        model = load_onnx(src)
        src_sha = sha256_file(src)
        if dst.is_dir():
            raise OutputDirError("FP16 output path is a directory", where=str(dst),
                                 fix="pass a file path ending in .onnx")
        ensure_writable_dir(dst.parent, flag="--out")
        blocked, ranges, absent_ops = find_blocks(src, model, calib, opts)
        model, kept, counts = apply_fp16(model, blocked, opts)
        warnings = write_fp16(model, dst, opts.threads)
        details = {**counts, **options_record(opts, absent_ops), "range_check": ranges, **initializer_counts(model),
                   "src": str(src), "src_sha256": src_sha, "warnings": warnings}
        return PrecisionResult(precision="fp16", path=dst, kept_fp32=kept, details=details)


#: The converter the ``fp16`` spec names (:mod:`.specs.fp16`).
convert_fp16: Fp16Converter = Fp16Converter()


__all__ = ["DEFAULT_FP32_OPS", "FLAGS", "Fp16Converter", "Fp16Options", "RangeHook", "apply_fp16", "convert_fp16",
           "elem_types", "find_blocks", "initializer_counts", "options_record", "parse_options", "write_fp16"]
