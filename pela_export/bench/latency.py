"""Wall-clock latency of the original and compressed model on CPU backends.

Timings use ``time.perf_counter`` around single synchronous calls after a
warm-up (first calls pay for allocation, lazy init and graph optimisation).
At least 30 timed runs are required so p90/p99 are not just the max.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .._threads import torch_threads
from ..errors import OptionError
from ._ort import check_input_name, make_session
from .stats import LatencyStats

MIN_RUNS = 30


def check_run_counts(warmup: int, runs: int, allow_few_runs: bool = False) -> None:
    """Reject counts that give meaningless percentiles (tests may opt out)."""
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise OptionError(f"--warmup must be an integer >= 0, got {warmup!r}",
                          fix="pass --warmup 5 (or any count >= 0)")
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise OptionError(f"--runs must be an integer >= 1, got {runs!r}", fix=f"pass --runs {MIN_RUNS} or more")
    if runs < MIN_RUNS and not allow_few_runs:
        raise OptionError(f"--runs must be >= {MIN_RUNS} for stable percentiles, got {runs}",
                          fix=f"pass --runs {MIN_RUNS} or more")


def time_callable(fn: Callable[[], Any], warmup: int, runs: int, batch: int,
                  *, threads: int | None = None, allow_few_runs: bool = False) -> LatencyStats:
    """Call ``fn()`` ``warmup`` times untimed, then ``runs`` times timed individually."""
    check_run_counts(warmup, runs, allow_few_runs)
    for _ in range(warmup):
        fn()
    times: list[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return LatencyStats.from_seconds(times, batch=batch, threads=threads)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run in eval mode (dropout/BN frozen) and restore the caller's mode after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def bench_torch_eager(model: nn.Module, example: torch.Tensor, warmup: int = 5, runs: int = 30,
                      threads: int | None = None, *, allow_few_runs: bool = False) -> LatencyStats:
    """Latency of eager PyTorch on ``example`` (batch = its first dimension)."""
    check_run_counts(warmup, runs, allow_few_runs)
    if not isinstance(example, torch.Tensor) or example.dim() < 1:
        raise OptionError("the benchmark input must be a tensor with a batch dimension",
                          fix="pass an example input shaped (batch, *input_shape)")
    batch = int(example.shape[0])
    def call() -> Any:
        out = model(example)
        if example.is_cuda:  # CUDA launches are asynchronous: time the finished work
            torch.cuda.synchronize(example.device)
        return out

    with torch_threads(threads) as used, eval_mode(model), torch.inference_mode():
        return time_callable(call, warmup, runs, batch, threads=used, allow_few_runs=allow_few_runs)


def bench_onnxruntime(onnx_path: str | os.PathLike[str], input_name: str, example: np.ndarray,
                      warmup: int = 5, runs: int = 30, threads: int | None = None,
                      *, allow_few_runs: bool = False) -> LatencyStats:
    """Latency of onnxruntime's CPU provider with all graph optimisations on."""
    check_run_counts(warmup, runs, allow_few_runs)
    arr = np.ascontiguousarray(example)
    if arr.ndim < 1:
        raise OptionError("the benchmark input must have a batch dimension",
                          fix="pass an example input shaped (batch, *input_shape)")
    sess, used = make_session(onnx_path, threads)
    check_input_name(sess, input_name, onnx_path)
    feeds = {input_name: arr}
    return time_callable(lambda: sess.run(None, feeds), warmup, runs, int(arr.shape[0]),
                         threads=used, allow_few_runs=allow_few_runs)


def bench_latency_grid(model: nn.Module, onnx_path: str | os.PathLike[str] | None, input_name: str,
                       make_input: Callable[[int], torch.Tensor], batch_sizes: Sequence[int] = (1, 8),
                       warmup: int = 5, runs: int = 30, threads: int | None = None,
                       *, allow_few_runs: bool = False) -> dict[str, Any]:
    """Benchmark every backend at every batch size, shaped for the report.

    Returns ``{"latency": {backend: {str(batch): stats}}, "threads": {backend: n}}``;
    onnxruntime is skipped when ``onnx_path`` is None.
    """
    check_run_counts(warmup, runs, allow_few_runs)
    latency: dict[str, dict[str, dict[str, Any]]] = {"onnxruntime": {}, "torch_eager": {}}
    used: dict[str, int | None] = {"onnxruntime": None, "torch_eager": None}
    for b in batch_sizes:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise OptionError(f"batch sizes must be integers >= 1, got {b!r}", fix="pass --batch-sizes 1,8")
        x = make_input(b)
        if onnx_path is not None:
            s = bench_onnxruntime(onnx_path, input_name, x.detach().cpu().numpy(), warmup, runs, threads,
                                  allow_few_runs=allow_few_runs)
            latency["onnxruntime"][str(b)] = s.to_dict()
            used["onnxruntime"] = s.threads
        s = bench_torch_eager(model, x, warmup, runs, threads, allow_few_runs=allow_few_runs)
        latency["torch_eager"][str(b)] = s.to_dict()
        used["torch_eager"] = s.threads
    if onnx_path is None:
        del latency["onnxruntime"], used["onnxruntime"]
    return {"latency": latency, "threads": used}
