"""``pela-export device-bench``: verify every variant against its golden outputs and time it on this device.

For each variant the device first reproduces the workstation's golden outputs
within the variant's stated tolerance (the same comparator the export stage
uses), then times ``runs`` inferences per batch size of the bundle's profile at stated sizes of the
other dynamic axes (text models: batch × sequence, the sequence length from ``--sequence-length``,
default the profile's optimum), and checks every output of the golden file.
Where TensorRT cannot run, ``--backend auto`` measures with ONNX Runtime and
says so in the log, in ``device.fallback_reason`` and at the top of the report.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .._io import ensure_writable_dir, write_json_atomic, write_text_atomic
from ..errors import OptionError, PelaExportError
from .backends import BackendChoice, OrtRunner, Runner, check_backend, choose_backend, open_variant
from .bundle import Bundle
from .report_md import render_device_markdown
from .schema import DEVICE_REPORT_KIND, DEVICE_REPORT_SCHEMA_VERSION, validate_device_report

MIN_RUNS = 30
DEFAULT_RUNS = 100
DEFAULT_WARMUP = 10
REPORT_JSON = "device-report.json"
REPORT_MD = "device-report.md"
LogFn = Callable[[str], None]


def log(msg: str) -> None:
    """Progress line on stderr (no rich/torch on the device path)."""
    print(f"pela-export {msg}", file=sys.stderr, flush=True)


def default_out_dir(bundle: Bundle) -> Path:
    """``./pela-device/<model-name>``, next to where the workstation writes ``./pela-out/<model-name>``."""
    import re

    return Path("pela-device") / re.sub(r"[^A-Za-z0-9._-]+", "_", bundle.model_name)


def check_counts(warmup: int, runs: int) -> None:
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise OptionError(f"--warmup must be an integer >= 0, got {warmup!r}", fix=f"pass --warmup {DEFAULT_WARMUP}")
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < MIN_RUNS:
        raise OptionError(f"--runs must be an integer >= {MIN_RUNS} for stable p90/p99, got {runs!r}",
                          fix=f"pass --runs {DEFAULT_RUNS} (or any count >= {MIN_RUNS})")


def resolve_batch_sizes(bundle: Bundle, batch_sizes: Sequence[int] | None) -> list[int]:
    """The requested batch sizes (checked against the bundle's profile), or the profile's min/opt/max."""
    if batch_sizes is None:
        return bundle.profile_batches()
    lo, hi = bundle.batch_range()
    sizes = list(dict.fromkeys(int(b) for b in batch_sizes))
    bad = [b for b in sizes if not lo <= b <= hi]
    if not sizes or bad:
        raise OptionError(f"--batch-sizes {sizes or list(batch_sizes)}: {bad or 'none given'} outside the bundle's "
                          f"input profile (batch {lo}..{hi})",
                          fix=f"pass batch sizes within {lo}..{hi}, or re-package with a wider --max-batch/--profile")
    return sizes


def resolve_axis_sizes(bundle: Bundle, sequence_length: int | None) -> dict[str, int]:
    """Sizes of the dynamic axes other than the batch to time at: each axis's profile optimum, the
    ``sequence`` axis from ``--sequence-length`` when given (checked against the profile)."""
    axes = {k: v for k, v in bundle.axes().items() if k != "batch"}
    sizes = {k: int(v["opt"]) for k, v in axes.items()}
    if sequence_length is None:
        return sizes
    if "sequence" not in axes:
        shapes = ", ".join(f"{t['name']} {t['shape']}" for t in bundle.inputs)
        raise OptionError(f"--sequence-length {sequence_length}: this bundle's inputs have no sequence axis "
                          f"(inputs: {shapes})",
                          fix="leave --sequence-length out for this model")
    lo, hi = axes["sequence"]["min"], axes["sequence"]["max"]
    if isinstance(sequence_length, bool) or not isinstance(sequence_length, int) or not lo <= sequence_length <= hi:
        raise OptionError(f"--sequence-length {sequence_length} is outside the bundle's sequence profile ({lo}..{hi})",
                          fix=f"pass a length within {lo}..{hi}, or re-package with a wider --profile/--max-length")
    return {**sizes, "sequence": int(sequence_length)}


def _target_shape(t: Mapping[str, Any], batch: int, sizes: Mapping[str, int], golden: np.ndarray) -> tuple[int, ...]:
    dims = []
    for i, d in enumerate(t["shape"]):
        if i == 0:
            dims.append(batch)
        elif isinstance(d, str):
            dims.append(int(sizes.get(d, golden.shape[i])))
        else:
            dims.append(int(d))
    return tuple(dims)


def batch_feeds(inputs: Mapping[str, np.ndarray], batch: int, sizes: Mapping[str, int] | None = None,
                bundle: Bundle | None = None) -> dict[str, np.ndarray]:
    """Golden inputs repeated/cut to ``batch`` rows (real data, so timings see realistic values); where another
    axis (e.g. ``sequence``) must have a size the goldens lack, valid feeds from the bundle's I/O description
    (ids within the vocabulary, right-padded masks) in the goldens' dtypes."""
    if bundle is not None and sizes:
        spec = {t["name"]: t for t in bundle.inputs}
        want = {n: _target_shape(spec[n], batch, sizes, np.asarray(a)) for n, a in inputs.items() if n in spec}
        if any(np.asarray(inputs[n]).shape[1:] != shape[1:] for n, shape in want.items()):
            made = bundle.io_spec().dummy(batch, seed=0, sizes=dict(sizes))
            return {n: np.ascontiguousarray(made[n].astype(np.asarray(a).dtype)) for n, a in inputs.items()}
    out = {}
    for name, arr in inputs.items():
        a = np.asarray(arr)
        out[name] = a if a.shape[0] == batch else np.ascontiguousarray(a[np.arange(batch) % a.shape[0]])
    return out


def golden_check(runner: Runner, bundle: Bundle, name: str) -> dict[str, Any]:
    """Device outputs on the golden inputs vs the workstation's golden outputs (stated tolerance)."""
    from ..export.compare import compare_outputs

    inputs, expected = bundle.golden(name)
    tol = bundle.tolerance(name)
    cmp = compare_outputs(expected, runner.run(inputs), tol, ref_name="golden outputs (workstation ONNX Runtime CPU)",
                          cand_name=f"{runner.backend} on this device")
    outputs = {o.name: {"max_abs_err": o.max_abs_err, "mean_abs_err": o.mean_abs_err, "max_rel_err": o.max_rel_err,
                        "num_out_of_tol": o.num_out_of_tol, "ok": o.ok, "problem": o.problem} for o in cmp.outputs}
    batch = int(next(iter(inputs.values())).shape[0]) if inputs else 0
    return {"ok": cmp.ok, "tolerance": {"atol": tol.atol, "rtol": tol.rtol}, "batch": batch, "outputs": outputs}


def time_batches(runner: Runner, inputs: Mapping[str, np.ndarray], batches: Sequence[int], warmup: int,
                 runs: int, threads: int | None, sizes: Mapping[str, int] | None = None,
                 bundle: Bundle | None = None) -> dict[str, Any]:
    """Latency per batch size (keys: batch sizes) at ``sizes`` of the other axes; each entry states the
    shape of every input it timed (``input_shapes``) and the axis sizes (``axes``)."""
    from ..measure.stats import LatencyStats

    out: dict[str, Any] = {}
    for b in batches:
        feeds = batch_feeds(inputs, b, sizes, bundle)
        seconds = runner.time(feeds, warmup, runs)
        stats = LatencyStats.from_seconds(seconds, batch=b, threads=threads if runner.backend == "onnxruntime" else None)
        out[str(b)] = stats.to_dict() | {"samples_ms": [round(s * 1e3, 5) for s in seconds],
                                         "input_shapes": {n: list(a.shape) for n, a in feeds.items()},
                                         "axes": {"batch": b, **dict(sizes or {})}}
    return out


def _open(bundle: Bundle, name: str, choice: BackendChoice, requested: str, kw: dict[str, Any],
          say: LogFn) -> tuple[Runner, str | None]:
    """The variant's runner; under ``auto`` a failed engine build falls back to ONNX Runtime, said out loud."""
    try:
        return open_variant(bundle, name, choice, log=say, **kw), None
    except PelaExportError as exc:
        if choice.kind != "tensorrt" or requested != "auto":
            raise
        reason = f"TensorRT could not build/run this variant ({exc.problem.splitlines()[0]}); measured with ONNX Runtime"
        say(f"note: {name}: {reason}")
        return OrtRunner(bundle.onnx_path(name), optimization=bundle.ort_optimization(name),
                         threads=kw.get("threads")), reason


def _cuda_memory(choice: BackendChoice, requested: str) -> tuple[BackendChoice, Any]:
    """One CUDA memory/stream provider for every engine (cuda-python, else torch); under ``auto`` its
    absence is a stated fallback to ONNX Runtime, under ``tensorrt`` an error."""
    from .backends import default_device_backend

    try:
        return choice, default_device_backend()
    except PelaExportError as exc:
        if requested != "auto":
            raise
        fix = f"; fix: {exc.fix}" if exc.fix else ""  # e.g. the cuda-python pin for this JetPack
        reason = f"TensorRT is installed but CUDA memory is not available ({exc.problem.splitlines()[0]}{fix})"
        return BackendChoice("onnxruntime", fallback_reason=f"{reason}: measured with ONNX Runtime instead of "
                                                            "TensorRT", gpu=choice.gpu), None


def resolve_backend(backend: str, *, trt: ModuleType | None, gpu: Any, device_backend: Any,
                    say: LogFn) -> tuple[BackendChoice, Any]:
    """What will run and, for TensorRT, its CUDA memory provider; an automatic fallback is said once."""
    choice = choose_backend(backend, trt=trt, gpu=gpu)
    if choice.kind == "tensorrt" and device_backend is None:
        choice, device_backend = _cuda_memory(choice, backend)
    if choice.fallback_reason:
        say(f"note: {choice.fallback_reason}")
    return choice, device_backend


def _variant_entry(bundle: Bundle, name: str, runner: Runner, golden: dict[str, Any], latency: dict[str, Any],
                   fallback: str | None) -> dict[str, Any]:
    v = bundle.variant(name)
    params = (bundle.deploy.get("compression") or {}).get("params") or {}
    entry = {"model": v["model"], "precision": v["precision"], "backend": runner.backend, "engine": runner.describe(),
             "golden": golden, "latency": latency, "params": params.get(v["model"]), "onnx_bytes": v["bytes"],
             "cpu_accuracy": v.get("cpu_accuracy")}
    if isinstance(runner, OrtRunner):
        entry["onnxruntime"] = {"providers": runner.providers, "optimization": runner.optimization}
    if fallback:
        entry["fallback_reason"] = fallback
    return entry


def device_bench(bundle: Bundle | str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None,
                 batch_sizes: Sequence[int] | None = None, warmup: int = DEFAULT_WARMUP, runs: int = DEFAULT_RUNS,
                 backend: str = "auto", *, variants: Sequence[str] | None = None, threads: int | None = None,
                 trt: ModuleType | None = None, device_backend: Any = None, gpu: Any = None,
                 engine_cache: str | os.PathLike[str] | None = None, facts: dict[str, Any] | None = None,
                 log_fn: LogFn | None = None, sequence_length: int | None = None) -> tuple[Path, Path]:
    """Check and time every variant of ``bundle`` here; writes device-report.json + .md into ``out_dir``.

    ``sequence_length`` (text models) is the sequence axis size every batch is timed at (default: the
    profile's optimum). ``trt``/``device_backend``/``gpu``/``facts`` are injection points for tests (fake
    TensorRT, host memory).
    """
    from .device import device_facts

    say = log_fn or log
    check_counts(warmup, runs)  # option errors before any unpacking or hashing
    check_backend(backend)
    b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    batches = resolve_batch_sizes(b, batch_sizes)
    sizes = resolve_axis_sizes(b, sequence_length)
    shape_text = "".join(f" x {k} {v}" for k, v in sizes.items())
    names = list(variants) if variants else b.variants()
    for n in names:
        b.variant(n)  # unknown names fail before any work
    out = ensure_writable_dir(out_dir if out_dir is not None else default_out_dir(b), "--out")
    choice, device_backend = resolve_backend(backend, trt=trt, gpu=gpu, device_backend=device_backend, say=say)
    device = dict(facts) if facts is not None else device_facts(trt=choice.trt, gpu=choice.gpu)
    device.update(backend=choice.kind, fallback_reason=choice.fallback_reason)
    kw = {"device_backend": device_backend, "cache_dir": engine_cache, "threads": threads}
    results: dict[str, Any] = {}
    for name in names:
        runner, fallback = _open(b, name, choice, backend, kw, say)
        golden = golden_check(runner, b, name)
        verdict = "matches" if golden["ok"] else "DOES NOT match"
        say(f"{name}: {runner.backend} {verdict} the golden outputs (atol {golden['tolerance']['atol']:g}, "
            f"rtol {golden['tolerance']['rtol']:g}) on {len(golden['outputs'])} output(s); timing batch "
            f"{', '.join(map(str, batches))}{shape_text}, {runs} runs")
        inputs, _ = b.golden(name)
        latency = time_batches(runner, inputs, batches, warmup, runs, threads, sizes, b)
        results[name] = _variant_entry(b, name, runner, golden, latency, fallback)
    from .. import __version__

    report = {
        "schema_version": DEVICE_REPORT_SCHEMA_VERSION, "kind": DEVICE_REPORT_KIND,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tool": {"name": "pela-export", "version": __version__},
        "bundle": {"path": str(b.source.resolve()), "model": b.model_name, "deploy_sha256": b.deploy_sha256},
        "device": device,
        "settings": {"batch_sizes": batches, "axes": sizes, "warmup": warmup, "runs": runs,
                     "backend_requested": backend, "threads": threads},
        "variants": results,
    }
    validate_device_report(report, where="device-bench (internal)")
    json_path = write_json_atomic(out / REPORT_JSON, report)
    md_path = write_text_atomic(out / REPORT_MD, render_device_markdown(report))
    failed = [n for n, r in results.items() if not r["golden"]["ok"]]
    say(f"device report written: {md_path} and {json_path}"
        + (f"; golden check FAILED for {', '.join(failed)}" if failed else "; every variant matches its golden outputs"))
    return json_path, md_path
