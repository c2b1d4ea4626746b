"""One-layer ONNX graphs and the functions that time them, for :mod:`.latency_table`.

The same graphs are timed on the workstation (ONNX Runtime CPU, :class:`OrtMeasure`) and on the device
(:class:`RunnerMeasure` over the device runners: ONNX Runtime with the CUDA or CPU provider, or one TensorRT
engine per graph), so a table measured on a Jetson answers the same questions as one measured here. Building
a graph needs the ``onnx`` package (imported when a graph is built); torch is never imported.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DependencyError
from .latency_table import RUNTIME, LayerOp, RuntimeEnv, cpu_model

OPSET = 17


def ort_env(threads: int) -> RuntimeEnv:
    """This machine's ONNX Runtime CPU environment at ``threads`` intra-op threads."""
    from ..export.runtime import _onnxruntime

    return RuntimeEnv(RUNTIME, str(_onnxruntime().__version__), cpu_model(), int(threads))


def _onnx() -> Any:
    """The ``onnx`` package, or the install fix (the device side needs it only for latency tables)."""
    try:
        import onnx
        import onnx.numpy_helper
    except ImportError:
        raise DependencyError("building the one-layer graphs of a latency table needs the onnx package, which is "
                              "not importable here",
                              fix="pip install onnx (wheels for x86-64 and aarch64/Jetson; verify and device-bench "
                                  "do not need it)") from None
    return onnx


def _weight(name: str, shape: tuple[int, ...], seed: int) -> Any:
    """A small random initializer (never uninitialised memory: denormals would distort the timing)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return _onnx().numpy_helper.from_array((rng.standard_normal(shape) * 0.02).astype(np.float32), name)


def _conv_node(x: str, w: str, b: str | None, y: str, kernel: tuple[int, int],
               stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int]) -> Any:
    helper = _onnx().helper
    inputs = [x, w] + ([b] if b else [])
    return helper.make_node("Conv", inputs, [y], kernel_shape=list(kernel), strides=list(stride),
                            pads=[padding[0], padding[1], padding[0], padding[1]], dilations=list(dilation))


def layer_graph(op: LayerOp, rank: int | None) -> Any:
    """A one-layer ONNX model: the dense layer (rank None) or its two factors at ``rank``.

    Linear: MatMul (+Add) vs MatMul→MatMul (+Add), as the exported models compute them. Conv: the layer
    vs its two convolutions (channel: kh×kw to r, then 1×1; spatial: kh×1 then 1×kw).
    """
    onnx = _onnx()
    helper, TensorProto = onnx.helper, onnx.TensorProto
    nodes: list[Any] = []
    inits: list[Any] = []
    k, n = op.in_features, op.out_features
    if op.kind == "linear":
        mats = [(k, n)] if rank is None else [(k, rank), (rank, n)]
        x = "x"
        for i, shape in enumerate(mats):
            inits.append(_weight(f"w{i}", shape, i))
            nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"h{i}"]))
            x = f"h{i}"
        if op.bias:
            inits.append(_weight("b", (n,), 9))
            nodes.append(helper.make_node("Add", [x, "b"], ["y"]))
        else:
            nodes[-1].output[0] = "y"
        out_shape: list[int] = [op.rows, n]
    else:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = op.kernel, op.stride, op.padding, op.dilation
        if op.bias:
            inits.append(_weight("b", (n,), 9))
        b = "b" if op.bias else None
        if rank is None:
            inits.append(_weight("w0", (n, k, kh, kw), 0))
            nodes.append(_conv_node("x", "w0", b, "y", op.kernel, op.stride, op.padding, op.dilation))
        elif op.decomposition == "channel":
            inits += [_weight("w0", (rank, k, kh, kw), 0), _weight("w1", (n, rank, 1, 1), 1)]
            nodes.append(_conv_node("x", "w0", None, "h0", op.kernel, op.stride, op.padding, op.dilation))
            nodes.append(_conv_node("h0", "w1", b, "y", (1, 1), (1, 1), (0, 0), (1, 1)))
        else:
            inits += [_weight("w0", (rank, k, kh, 1), 0), _weight("w1", (n, rank, 1, kw), 1)]
            nodes.append(_conv_node("x", "w0", None, "h0", (kh, 1), (sh, 1), (ph, 0), (dh, 1)))
            nodes.append(_conv_node("h0", "w1", b, "y", (1, kw), (1, sw), (0, pw), (1, dw)))
        out_shape = []  # left to shape inference
    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(op.feed_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape or None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # readable by every ONNX Runtime the project supports
    return model


@dataclass(frozen=True)
class OrtMeasure:
    """The workstation's ``measure``: :class:`RunnerMeasure` on an ONNX Runtime CPU session at the env's threads."""

    warmup: int = 5
    runs: int = 30

    def __call__(self, op: LayerOp, rank: int | None, env: RuntimeEnv) -> float:
        from .backends import OrtRunner

        def open_cpu(path: Path) -> Any:
            return OrtRunner(path, use_cuda=False, threads=env.threads)

        return RunnerMeasure(open_cpu, self.warmup, self.runs)(op, rank, env)


def layer_feeds(op: LayerOp) -> dict[str, Any]:
    """The layer graph's one input, random normal at the op's real shape (seeded: every runtime sees the same)."""
    import numpy as np

    return {"x": np.random.default_rng(0).standard_normal(op.feed_shape).astype(np.float32)}


def p50_ms(seconds: list[float], batch: int) -> float:
    """The median in ms, by the project's one percentile definition (:class:`..measure.stats.LatencyStats`)."""
    from ..measure.stats import LatencyStats

    return float(LatencyStats.from_seconds(seconds, batch=batch).p50_ms)


#: ``open(onnx_path) -> Runner`` (:mod:`.backends`): an ONNX Runtime session or a TensorRT engine.
OpenFn = Callable[[Path], Any]


@dataclass(frozen=True)
class RunnerMeasure:
    """``measure`` on a device runner: each one-layer graph written to a temporary file, opened with ``open``
    (for TensorRT: one engine per graph, built at the table's precision) and timed with the runner's own loop
    (for TensorRT: CUDA-synchronised ``execute`` calls), median of ``runs`` after ``warmup``."""

    open: OpenFn
    warmup: int = 10
    runs: int = 50

    def __call__(self, op: LayerOp, rank: int | None, env: RuntimeEnv) -> float:
        with tempfile.TemporaryDirectory(prefix="pela-layer-") as d:
            path = Path(d) / "layer.onnx"
            path.write_bytes(layer_graph(op, rank).SerializeToString())
            runner = self.open(path)
            return p50_ms(list(runner.time(layer_feeds(op), self.warmup, self.runs)), op.feed_shape[0])
