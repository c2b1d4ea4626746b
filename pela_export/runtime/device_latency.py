"""``pela-export device-latency``: measure a bundle's per-layer latency table on the device itself.

The workstation's table (ONNX Runtime CPU) ranks layers by what they cost *there*; a Jetson's TensorRT
engines disagree (tensor cores like ranks aligned to 8/16, skinny GEMMs lose less). A bundle built with
``--rank-policy latency`` carries the workstation's table; this command times the same one-layer graphs at
the same shapes and ranks with the device's runtime (TensorRT at a precision, or ONNX Runtime with the CUDA
or CPU provider) and the bundle's original model whole, and writes a table the workstation reads back with
``pela-export run MODEL --rank-policy latency --latency-table latency_table.json``.

Torch-free; building the one-layer graphs needs the ``onnx`` package (the install fix is said if missing).
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

from .._io import ensure_writable_dir, write_text_atomic
from ..errors import ArtifactError, OptionError
from .backends import CUDA_EP, BackendChoice, OrtRunner, build_options, check_backend, open_variant
from .bundle import Bundle
from .devicebench import batch_feeds, check_counts, default_out_dir, resolve_axis_sizes, resolve_backend
from .latency_table import LatencyTable, RuntimeEnv, cpu_model
from .layer_graphs import RunnerMeasure, p50_ms

TABLE_NAME = "latency_table.json"
SUMMARY_NAME = "latency_table.md"
TRT_PRECISIONS = ("fp16", "fp32")
DEFAULT_TRT_PRECISION = "fp16"
DEFAULT_RUNS = 50
DEFAULT_WARMUP = 10
NO_TABLE_FIX = ("on the workstation, run with the latency policy so the bundle carries the layer shapes: "
                "`pela-export run MODEL --rank-policy latency --latency-budget 0.7` (then copy the new bundle.tar.gz)")
LogFn = Callable[[str], None]


def host_table(bundle: Bundle) -> LatencyTable:
    """The workstation table the bundle carries (ArtifactError with the fix when it carries none)."""
    rel = bundle.deploy.get("latency_table")
    if not rel:
        raise ArtifactError("the bundle carries no latency table (it was built without --rank-policy latency), so "
                            "there are no layer shapes to time", fix=NO_TABLE_FIX, where=str(bundle.source))
    return LatencyTable.load(bundle.path(str(rel)))


def model_batch(model_key: str) -> int:
    """The batch a workstation model key was timed at (``...|batch=1|...``)."""
    m = re.search(r"\|batch=(\d+)\|", f"|{model_key}|")
    if m is None:
        raise ArtifactError(f"latency table model key {model_key!r} names no batch",
                            fix="re-create the bundle with this version of pela-export")
    return int(m.group(1))


def _check_precision(precision: str | None, choice: BackendChoice) -> str | None:
    if choice.kind == "tensorrt":
        precision = precision or DEFAULT_TRT_PRECISION
        if precision not in TRT_PRECISIONS:
            raise OptionError(f"--precision {precision!r} is not one a layer table is timed at",
                              fix=f"pass --precision one of: {', '.join(TRT_PRECISIONS)}")
        return precision
    if precision not in (None, "fp32"):
        raise OptionError(f"--precision {precision} applies to TensorRT layer engines; ONNX Runtime tables are fp32",
                          fix="drop --precision, or pass --backend tensorrt on a machine with TensorRT")
    return None


def _runtime(choice: BackendChoice, precision: str | None, threads: int | None,
             kw: dict[str, Any], bundle: Bundle) -> tuple[RuntimeEnv, Callable[[Path], Any]]:
    """The environment this table is measured in and how a one-layer graph is opened on it."""
    if choice.kind == "tensorrt":
        from .backends import TrtEngineRunner
        from .device import tensorrt_version

        options = replace(build_options(bundle), profiles={}, axes={})  # the layer graphs have static shapes
        env = RuntimeEnv(f"tensorrt-{precision}", str(tensorrt_version(choice.trt)), str(choice.gpu.name), 0)
        return env, lambda path: TrtEngineRunner(path, str(precision), options, trt=choice.trt,
                                                 device_backend=kw["device_backend"], gpu=choice.gpu,
                                                 cache_dir=kw["cache_dir"])
    from ..export.runtime import _onnxruntime

    ort = _onnxruntime()
    cuda = CUDA_EP in ort.get_available_providers()
    device = cpu_model()
    if cuda:  # the CUDA provider's tables belong to the GPU (--backend onnxruntime resolves no GPU itself)
        from .device import local_gpu

        device = str((choice.gpu if choice.gpu is not None else local_gpu()).name)
    env = RuntimeEnv("onnxruntime-cuda" if cuda else "onnxruntime-cpu", str(ort.__version__), device,
                     int(threads or 0))
    return env, lambda path: OrtRunner(path, use_cuda=cuda, threads=threads)


def device_latency(bundle: Bundle | str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None, *,
                   backend: str = "auto", precision: str | None = None, threads: int | None = None,
                   warmup: int = DEFAULT_WARMUP, runs: int = DEFAULT_RUNS, trt: ModuleType | None = None,
                   device_backend: Any = None, gpu: Any = None, engine_cache: str | os.PathLike[str] | None = None,
                   log_fn: LogFn | None = None) -> Path:
    """Time the bundle's layer shapes and its original model here; writes ``latency_table.json`` (+ .md).

    ``trt``/``device_backend``/``gpu`` are injection points for tests (fake TensorRT, host memory).
    """
    say = log_fn or print
    check_counts(warmup, runs)
    check_backend(backend)
    b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    host = host_table(b)
    out = ensure_writable_dir(out_dir if out_dir is not None else default_out_dir(b), "--out")
    choice, device_backend = resolve_backend(backend, trt=trt, gpu=gpu, device_backend=device_backend, say=say)
    precision = _check_precision(precision, choice)
    variant = f"original.{precision or 'fp32'}"
    if variant not in b.variants():  # before any timing: the whole model is timed at the table's precision
        raise OptionError(f"the bundle has no {variant} variant to time the whole original model at "
                          f"{precision or 'fp32'}", where=str(b.source),
                          fix=f"pass --precision {'fp32' if precision != 'fp32' else 'fp16'} if the bundle has that "
                              f"variant (it has: {', '.join(b.variants())}), or re-package with that precision")
    kw = {"device_backend": device_backend, "cache_dir": engine_cache, "threads": threads}
    env, opener = _runtime(choice, precision, threads, kw, b)
    measure = RunnerMeasure(opener, warmup, runs)
    table = LatencyTable()
    layers = host.layers()
    say(f"device latency table: {len(layers)} layer shapes on {env.key}, {warmup} warm-up + {runs} runs each")
    for i, (key, (op, ranks, batch)) in enumerate(layers.items(), 1):
        say(f"  [{i}/{len(layers)}] {key}: dense + {len(ranks)} ranks")
        table.ensure([op], env, measure, batch, grids={key: ranks})
    sizes = resolve_axis_sizes(b, None)
    model_keys = sorted({k for e in host.envs() for k in host.models_of(e)})
    if model_keys:  # one runner (one engine) for every batch the workstation timed the model at
        runner = open_variant(b, variant, choice, **kw)
        inputs, _ = b.golden(variant)
        for model_key in model_keys:
            batch = model_batch(model_key)
            ms = p50_ms(list(runner.time(batch_feeds(inputs, batch, sizes, b), warmup, runs)), batch)
            table.set_model_ms(env, model_key, ms)
            say(f"  whole model ({variant}, batch {batch}): {ms:.4f} ms")
    path = table.save(out / TABLE_NAME)
    write_text_atomic(out / SUMMARY_NAME, render_table_markdown(table, env, b.model_name))
    say(f"device latency table written: {path}\n  on the workstation: pela-export run MODEL --rank-policy latency "
        f"--latency-budget F --latency-table {path.name}")
    return path


def render_table_markdown(table: LatencyTable, env: RuntimeEnv, model: str) -> str:
    """Per shape: dense ms, the fastest factorized rank, and the largest rank that still beats dense."""
    lines = [f"# Latency table: {model} on {env.runtime} {env.version} ({env.device}, threads {env.threads})", "",
             "| layer shape | dense ms | fastest rank (ms) | largest rank faster than dense |", "|---|---:|---:|---:|"]
    for e in table.entries.values():
        if e.env != env:
            continue
        fastest = min(e.ranks, key=lambda r: e.ranks[r]) if e.ranks else None
        faster = [r for r, ms in e.ranks.items() if ms < e.dense_ms]
        best = f"{fastest} ({e.ranks[fastest]:.4f})" if fastest is not None else "—"
        lines.append(f"| `{e.op.key}` | {e.dense_ms:.4f} | {best} | {max(faster) if faster else 'none: keep dense'} |")
    for key, ms in table.models_of(env).items():
        lines.append(f"\nWhole original model `{key}`: {ms:.4f} ms")
    return "\n".join(lines) + "\n"
