"""Observed activation ranges of an FP32 ONNX graph on calibration data.

FP16 uses them to find nodes whose activations overflow 65504; INT8 uses
:func:`observe_ranges` for scales. Stable API: ``observe_ranges`` returns one
:class:`TensorRange` per observed float tensor (graph inputs and node outputs),
keyed by tensor name. Every tensor is made a graph output of a temporary copy, so
ONNX Runtime reports it (and its dtype) without running shape inference.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnx

from ..errors import OptionError
from .registry import Feeds

#: Largest finite FP16 value.
FP16_MAX = 65504.0
#: ORT type strings counted as float activations.
FLOAT_TYPES = frozenset({"tensor(float)", "tensor(float16)", "tensor(double)", "tensor(bfloat16)"})
#: ORT type string → ONNX TensorProto elem type (for :func:`ort_tensor_types`).
_ORT_ELEM = {"tensor(float)": onnx.TensorProto.FLOAT, "tensor(float16)": onnx.TensorProto.FLOAT16,
             "tensor(double)": onnx.TensorProto.DOUBLE, "tensor(bfloat16)": onnx.TensorProto.BFLOAT16,
             "tensor(int64)": onnx.TensorProto.INT64, "tensor(int32)": onnx.TensorProto.INT32,
             "tensor(int8)": onnx.TensorProto.INT8, "tensor(uint8)": onnx.TensorProto.UINT8,
             "tensor(bool)": onnx.TensorProto.BOOL, "tensor(int16)": onnx.TensorProto.INT16}

NodeFilter = Callable[[onnx.NodeProto], bool]


@dataclass
class TensorRange:
    """Min/max of one tensor over all calibration batches (finite values only).

    ``nonfinite`` counts NaN/Inf elements seen in FP32 (they are left out of min/max);
    ``count`` is the number of elements observed; ``batches`` how many feeds produced it.
    """

    min: float
    max: float
    count: int = 0
    nonfinite: int = 0
    batches: int = 0

    @property
    def absmax(self) -> float:
        return max(abs(self.min), abs(self.max)) if self.count > self.nonfinite else 0.0

    def update(self, a: np.ndarray) -> None:
        finite = a[np.isfinite(a)] if a.dtype.kind == "f" else a
        self.count += int(a.size)
        self.nonfinite += int(a.size - finite.size)
        self.batches += 1
        if finite.size:
            self.min = min(self.min, float(finite.min()))
            self.max = max(self.max, float(finite.max()))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "absmax": self.absmax}


class OverflowNode(NamedTuple):
    """A node that reads or writes a tensor beyond the FP16 range on calibration data."""

    node: str
    op_type: str
    tensor: str
    absmax: float


def node_label(node: onnx.NodeProto, index: int) -> str:
    """The node's name, or ``<OpType#index>`` for unnamed nodes (ONNX allows empty names)."""
    return node.name or f"<{node.op_type}#{index}>"


def _temp_session(model: onnx.ModelProto, threads: int | None) -> Any:
    """An ORT CPU session for an in-memory model, via a temporary file (ort_session takes paths;
    ORT reads the whole file while building the session, so the file can go right after)."""
    from ..export.runtime import ort_session

    with tempfile.TemporaryDirectory(prefix="pela-ranges-") as tmp:
        path = Path(tmp) / "observe.onnx"
        onnx.save(model, str(path))
        return ort_session(path, threads=threads)


def _with_outputs(model: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """Copy of ``model`` with ``names`` appended as untyped graph outputs (ORT infers their types)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    have = {o.name for o in copy.graph.output}
    for name in names:
        if name and name not in have:
            copy.graph.output.append(onnx.ValueInfoProto(name=name))
            have.add(name)
    return copy


def ort_tensor_types(model: onnx.ModelProto, names: Iterable[str], *, threads: int | None = 1) -> dict[str, int]:
    """ONNX elem types of node outputs ``names`` as ONNX Runtime resolves them.

    The fallback when onnx shape inference leaves a tensor untyped (custom ops,
    some exporter patterns); types whose ORT string is not known map to UNDEFINED.
    """
    names = list(dict.fromkeys(n for n in names if n))
    if not names:
        return {}
    sess = _temp_session(_with_outputs(model, names), threads)
    wanted = set(names)
    return {o.name: _ORT_ELEM.get(o.type, onnx.TensorProto.UNDEFINED)
            for o in sess.get_outputs() if o.name in wanted}


def _check_feeds(feeds: Feeds, input_names: list[str]) -> None:
    if not feeds:
        raise OptionError("no calibration batches given", where="observe_ranges",
                          fix="pass at least one batch with --calib-data (or drop the range check)")
    for i, feed in enumerate(feeds):
        missing = [n for n in input_names if n not in feed]
        if missing:
            raise OptionError(
                f"calibration batch {i} lacks model input(s) {', '.join(map(repr, missing))} "
                f"(it has: {', '.join(map(repr, feed)) or 'nothing'})", where="observe_ranges",
                fix="calibration feeds must be dicts keyed by the ONNX input names")


def observe_ranges(model_path: str | os.PathLike[str], feeds: Feeds, *,
                   node_filter: NodeFilter | None = None, threads: int | None = None) -> dict[str, TensorRange]:
    """Run the FP32 model on ``feeds`` and record min/max of every float activation.

    Observed: float graph inputs, and float outputs of every node (of those
    ``node_filter`` accepts, if given). Initializers are not included (they are
    known without running). Batches are run one at a time, so memory holds one
    batch's activations; ``threads`` caps ONNX Runtime's intra-op threads.
    """
    from ..export.onnx_export import load_onnx

    model = load_onnx(model_path)
    init_names = {t.name for t in model.graph.initializer}
    graph_inputs = [i.name for i in model.graph.input if i.name not in init_names]
    _check_feeds(feeds, graph_inputs)
    outputs = [o for n in model.graph.node if node_filter is None or node_filter(n) for o in n.output if o]
    sess = _temp_session(_with_outputs(model, outputs), threads)
    observed = set(outputs)
    float_outs = [o.name for o in sess.get_outputs() if o.name in observed and o.type in FLOAT_TYPES]
    float_ins = [i.name for i in sess.get_inputs() if i.type in FLOAT_TYPES]
    ranges: dict[str, TensorRange] = {}

    def record(name: str, value: Any) -> None:
        a = np.asarray(value)
        if a.dtype.kind != "f":
            return
        r = ranges.setdefault(name, TensorRange(min=float("inf"), max=float("-inf")))
        r.update(a)

    for b, feed in enumerate(feeds):
        for name in float_ins:
            record(name, feed[name])
        if float_outs:
            try:
                values = sess.run(float_outs, {k: feed[k] for k in graph_inputs})
            except Exception as exc:  # ORT raises its own (Fail, InvalidArgument) types
                msg = str(exc).strip().splitlines()
                raise OptionError(f"calibration batch {b} does not fit the model: "
                                  f"{msg[0] if msg else type(exc).__name__}", where="observe_ranges",
                                  fix="calibration arrays must match the ONNX inputs' dtypes and shapes") from exc
            for name, value in zip(float_outs, values, strict=True):
                record(name, value)
    for r in ranges.values():  # all-NaN/empty tensors: report 0..0 rather than inf..-inf
        if r.count == r.nonfinite:
            r.min = r.max = 0.0
    return ranges


def fp16_overflow_nodes(model: onnx.ModelProto, ranges: Mapping[str, TensorRange], limit: float = FP16_MAX,
                        margin: float = 1.0) -> list[OverflowNode]:
    """Nodes with a float input or output whose observed absmax exceeds ``limit * margin``.

    Inputs count as well as outputs: keeping only the producer in FP32 would cast
    the overflowing tensor back to FP16 (inf) on its way to the consumer, so both
    ends must stay FP32. The reported tensor is the node's largest offender.
    Tiny magnitudes (below FP16's smallest normal) are ignored: they lose
    precision but do not break the graph, and all-zero tensors are common.
    """
    if not (0.0 < margin <= 1.0):
        raise OptionError(f"range margin must be in (0, 1], got {margin!r}", where="fp16 range check",
                          fix="pass a margin such as 0.5 to keep ops reaching half the FP16 range in FP32")
    threshold = limit * margin
    found: list[OverflowNode] = []
    for i, node in enumerate(model.graph.node):
        worst: tuple[float, str] | None = None
        for name in [*node.input, *node.output]:
            r = ranges.get(name) if name else None
            if r is not None and r.absmax > threshold and (worst is None or r.absmax > worst[0]):
                worst = (r.absmax, name)
        if worst is not None:
            found.append(OverflowNode(node_label(node, i), node.op_type, worst[1], worst[0]))
    return found
