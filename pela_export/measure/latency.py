"""Wall-clock latency of the original and compressed model on CPU backends.

Timings use ``time.perf_counter`` around single synchronous calls after a
warm-up (first calls pay for allocation, lazy init and graph optimisation).
At least 30 timed runs are required so p90/p99 are not just the max.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
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


def _example_args(example: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """One tensor, or one per model input in ``forward`` order; each with a batch dimension first."""
    args = (example,) if isinstance(example, torch.Tensor) else tuple(example) if isinstance(example, (tuple, list)) else ()
    if not args or not all(isinstance(a, torch.Tensor) and a.dim() >= 1 for a in args):
        raise OptionError("the benchmark input must be a tensor (or one tensor per model input) with a batch dimension",
                          fix="pass an example input shaped (batch, *input_shape), or a tuple of them")
    return args


def bench_torch_eager(model: nn.Module, example: torch.Tensor | Sequence[torch.Tensor], warmup: int = 5,
                      runs: int = 30, threads: int | None = None, *, allow_few_runs: bool = False) -> LatencyStats:
    """Latency of eager PyTorch on ``example`` (batch = the first tensor's first dimension).

    ``example`` is one tensor, or a tuple with one tensor per model input (called ``model(*example)``).
    """
    check_run_counts(warmup, runs, allow_few_runs)
    args = _example_args(example)
    batch = int(args[0].shape[0])
    cuda = next((a.device for a in args if a.is_cuda), None)

    def call() -> Any:
        out = model(*args)
        if cuda is not None:  # CUDA launches are asynchronous: time the finished work
            torch.cuda.synchronize(cuda)
        return out

    with torch_threads(threads) as used, eval_mode(model), torch.inference_mode():
        return time_callable(call, warmup, runs, batch, threads=used, allow_few_runs=allow_few_runs)


def ort_feeds(sess: Any, input_name: str | Sequence[str] | None, example: np.ndarray | Mapping[str, np.ndarray],
              onnx_path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Feeds for every graph input: one array for ``input_name``, or ``{input: array}`` for all of them."""
    graph = [i.name for i in sess.get_inputs()]
    if isinstance(example, Mapping):
        feeds = {k: np.ascontiguousarray(v) for k, v in example.items()}
        missing = [n for n in graph if n not in feeds]
        extra = [n for n in feeds if n not in graph]
        if missing or extra:
            raise OptionError(f"ONNX model {str(onnx_path)!r} takes inputs {graph}; the benchmark feeds "
                              f"{sorted(feeds)}" + (f" (missing {missing})" if missing else "")
                              + (f" (unknown {extra})" if extra else ""),
                              fix="pass one array per model input, keyed by the ONNX input names")
    else:
        name = input_name if isinstance(input_name, str) else graph[0] if len(graph) == 1 else None
        if name is None:
            raise OptionError(f"ONNX model {str(onnx_path)!r} takes inputs {graph}, but one array was given",
                              fix="pass a dict {input name: array} with every input")
        check_input_name(sess, name, onnx_path)
        feeds = {name: np.ascontiguousarray(example)}
    first = next(iter(feeds.values()))
    if first.ndim < 1:
        raise OptionError("the benchmark input must have a batch dimension",
                          fix="pass an example input shaped (batch, *input_shape)")
    return feeds


def bench_onnxruntime(onnx_path: str | os.PathLike[str], input_name: str | Sequence[str] | None,
                      example: np.ndarray | Mapping[str, np.ndarray], warmup: int = 5, runs: int = 30,
                      threads: int | None = None, *, allow_few_runs: bool = False,
                      optimization: str = "all") -> LatencyStats:
    """Latency of onnxruntime's CPU provider with all graph optimisations on.

    ``example``: one array fed to ``input_name``, or ``{input name: array}`` with every graph
    input (multi-input models); the batch is the first array's first dimension.
    """
    check_run_counts(warmup, runs, allow_few_runs)
    sess, used = make_session(onnx_path, threads, optimization)
    feeds = ort_feeds(sess, input_name, example, onnx_path)
    batch = int(next(iter(feeds.values())).shape[0])
    return time_callable(lambda: sess.run(None, feeds), warmup, runs, batch,
                         threads=used, allow_few_runs=allow_few_runs)


Example = torch.Tensor | tuple[torch.Tensor, ...]


def bench_latency_grid(model: nn.Module, onnx_path: str | os.PathLike[str] | None, input_name: str | Sequence[str],
                       make_input: Callable[[int], Example], batch_sizes: Sequence[int] = (1, 8),
                       warmup: int = 5, runs: int = 30, threads: int | None = None,
                       *, allow_few_runs: bool = False) -> dict[str, Any]:
    """Benchmark every backend at every batch size, shaped for the report.

    ``make_input(b)`` gives one tensor, or a tuple with one tensor per model input
    (``input_name`` then lists the ONNX input names in the same order).
    Returns ``{"latency": {backend: {str(batch): stats}}, "threads": {backend: n}}``;
    onnxruntime is skipped when ``onnx_path`` is None.
    """
    check_run_counts(warmup, runs, allow_few_runs)
    names = [input_name] if isinstance(input_name, str) else list(input_name)
    latency: dict[str, dict[str, dict[str, Any]]] = {"onnxruntime": {}, "torch_eager": {}}
    used: dict[str, int | None] = {"onnxruntime": None, "torch_eager": None}
    for b in batch_sizes:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise OptionError(f"batch sizes must be integers >= 1, got {b!r}", fix="pass --batch-sizes 1,8")
        x = make_input(b)
        args = _example_args(x)
        if onnx_path is not None:
            if len(args) != len(names):
                raise OptionError(f"the benchmark input has {len(args)} tensor(s) for inputs {names}",
                                  fix="make_input must return one tensor per ONNX input name, in order")
            feeds = {n: a.detach().cpu().numpy() for n, a in zip(names, args, strict=True)}
            s = bench_onnxruntime(onnx_path, names[0] if len(names) == 1 else None,
                                  feeds[names[0]] if len(names) == 1 else feeds, warmup, runs, threads,
                                  allow_few_runs=allow_few_runs)
            latency["onnxruntime"][str(b)] = s.to_dict()
            used["onnxruntime"] = s.threads
        s = bench_torch_eager(model, args if len(args) > 1 else args[0], warmup, runs, threads,
                              allow_few_runs=allow_few_runs)
        latency["torch_eager"][str(b)] = s.to_dict()
        used["torch_eager"] = s.threads
    if onnx_path is None:
        del latency["onnxruntime"], used["onnxruntime"]
    return {"latency": latency, "threads": used}


def interleaved_p50_ms(onnx_paths: Mapping[str, str | os.PathLike[str]], example: Mapping[str, np.ndarray],
                       warmup: int = 5, runs: int = 30, threads: int | None = None,
                       rounds: int = 3) -> dict[str, list[float]]:
    """Per round, the p50 (ms) of every ONNX model when all are called in turn, one call each per step.

    Why: timed minutes apart on a shared machine, two models' absolute times drift by more than the
    differences worth reporting; called in alternation they see the same machine, so their ratios hold.
    ``example`` feeds every model (same graph inputs); returns ``{key: [p50 of round 1, ...]}``.
    """
    check_run_counts(warmup, runs)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise OptionError(f"timing rounds must be an integer >= 1, got {rounds!r}", fix="pass --timing-rounds 3")
    calls = {}
    for key, path in onnx_paths.items():
        sess, _ = make_session(path, threads)
        feeds = ort_feeds(sess, None, example, path)
        calls[key] = (lambda s=sess, f=feeds: s.run(None, f))
    for call in calls.values():
        for _ in range(warmup):
            call()
    out: dict[str, list[float]] = {key: [] for key in calls}
    for _ in range(rounds):
        times: dict[str, list[float]] = {key: [] for key in calls}
        for _ in range(runs):
            for key, call in calls.items():
                t0 = time.perf_counter()
                call()
                times[key].append(time.perf_counter() - t0)
        for key, seconds in times.items():
            out[key].append(1e3 * float(np.median(seconds)))
    return out
