"""GPU latency of original vs PELA-compressed models: torch (CUDA, FP16) and ONNX Runtime's CUDA EP.

For each model the original is timed once per batch size and the compressed model once per rank alignment
(unaligned, ``--align 8``, ``--align 64``: tensor cores want multiples of 8, and 64 rounds ranks further),
with CUDA events around each forward on one stream after warm-up. ONNX Runtime's CUDA execution provider
is timed on the exported ONNX files where it is installed; otherwise the part is skipped and the reason
recorded. Writes ``gpu_latency.json`` and ``gpu_latency.md`` into ``--out``. Part of bench/device_smoke.sh.

    python bench/gpu_latency.py --model default --model timm:deit_small_patch16_224 --out DIR
    python bench/gpu_latency.py --model tiny_timm:deit_tiny_64 --device cpu --dtype fp32 --batch-sizes 1 --runs 3
    python bench/gpu_latency.py --dry-run          # the plan, nothing loaded
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

DEFAULT_MODELS = ("default", "timm:deit_small_patch16_224")
DEFAULT_ALIGNS = ("none", "8", "64")
DEFAULT_BATCHES = (1, 8, 32)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help=f"repeatable (default: {', '.join(DEFAULT_MODELS)})")
    ap.add_argument("--aligns", default=",".join(DEFAULT_ALIGNS), help="comma list: none or an integer")
    ap.add_argument("--batch-sizes", default=",".join(map(str, DEFAULT_BATCHES)))
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--dtype", choices=("fp16", "fp32"), default="fp16")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--ort", choices=("auto", "off"), default="auto", help="ONNX Runtime CUDA EP where installed")
    ap.add_argument("--out", default=None, help="results folder (default: a temp dir)")
    ap.add_argument("--work", default=None, help="compressed models and ONNX files (default: a temp dir)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    ap.add_argument("--versions", metavar="FILE", default=None,
                    help="only write the software versions (driver, CUDA, TensorRT, cuda-python, ONNX Runtime) to FILE")
    args = ap.parse_args(argv)
    args.model = args.model or list(DEFAULT_MODELS)
    args.aligns = [None if a.strip() == "none" else int(a) for a in args.aligns.split(",") if a.strip()]
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    if args.runs < 1 or args.warmup < 0 or not args.batch_sizes or not args.aligns:
        ap.error("--runs >= 1, --warmup >= 0, and at least one batch size and alignment are needed")
    return args


def summarize(seconds: Sequence[float], batch: int) -> dict[str, float]:
    """p50/p90/mean in ms and samples/s at the median."""
    ms = sorted(s * 1e3 for s in seconds)
    p50 = statistics.median(ms)
    return {"p50_ms": round(p50, 4), "p90_ms": round(ms[min(len(ms) - 1, int(0.9 * len(ms)))], 4),
            "mean_ms": round(statistics.fmean(ms), 4), "throughput": round(batch / (p50 / 1e3), 1), "runs": len(ms)}


def time_torch(module: Any, x: Any, warmup: int, runs: int) -> list[float]:
    """Per-forward seconds: CUDA events on the current stream on a GPU, perf_counter on the CPU."""
    import torch

    with torch.inference_mode():
        for _ in range(warmup):
            module(x)
        if x.is_cuda:
            torch.cuda.synchronize()
            out = []
            for _ in range(runs):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                module(x)
                end.record()
                end.synchronize()
                out.append(start.elapsed_time(end) / 1e3)
            return out
        out = []
        for _ in range(runs):
            t0 = time.perf_counter()
            module(x)
            out.append(time.perf_counter() - t0)
        return out


def ort_cuda_problem() -> str | None:
    """Why ONNX Runtime's CUDA EP cannot be timed here (None: it can)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed"
    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        return f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (providers: {', '.join(providers)})"
    return None


def time_ort(path: str, input_name: str, x: Any, warmup: int, runs: int) -> tuple[list[float], list[str]]:
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    feeds = {input_name: x}
    for _ in range(warmup):
        sess.run(None, feeds)
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        out.append(time.perf_counter() - t0)
    return out, list(sess.get_providers())


def versions() -> dict[str, Any]:
    """What the smoke test ran on: NVIDIA driver and CUDA (driver, toolkit, cuda-python's runtime), torch and
    its CUDA, TensorRT where importable, ONNX Runtime with its providers, and the device report's facts."""
    from pela_export.runtime.device import device_facts, run_command

    facts = device_facts()
    smi = run_command(("nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"))
    out: dict[str, Any] = {"nvidia_smi": smi.strip() if smi else None, "device_facts": facts}
    try:
        import torch

        out["torch"] = {"version": torch.__version__, "cuda": torch.version.cuda,
                        "cuda_available": bool(torch.cuda.is_available()),
                        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    except ImportError:
        out["torch"] = None
    try:
        import onnxruntime as ort

        out["onnxruntime"] = {"version": ort.__version__, "providers": list(ort.get_available_providers())}
    except ImportError:
        out["onnxruntime"] = None
    return out


def measure_model(spec: str, args: argparse.Namespace, work: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Compress ``spec`` once per alignment and time original and compressed at every batch size."""
    import torch

    from pela_export.errors import PelaExportError
    from pela_export.measure import count_params
    from pela_export.pipeline.compress import compress_stage
    from pela_export.pipeline.config import RunConfig
    from pela_export.pipeline.context import prepare

    dtype = torch.float16 if args.dtype == "fp16" else torch.float32
    device = torch.device(args.device)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    loaded = None
    timed_original = False
    ort_why = ort_cuda_problem() if args.ort == "auto" else "--ort off"
    for align in args.aligns:
        tag = "unaligned" if align is None else f"align{align}"
        cfg = RunConfig.of(model=None if spec == "default" else spec, out=str(work / f"{_slug(spec)}-{tag}"),
                           align=align, progress=False)
        ctx = prepare(cfg, loaded)
        loaded = ctx.loaded
        try:
            compress_stage(ctx)
        except PelaExportError as exc:  # e.g. --align 64 on a 64-wide model: no layer would shrink
            notes.append(f"{spec} {tag}: not compressed ({exc.problem.splitlines()[0]})")
            say(notes[-1])
            continue
        models = {"compressed": ctx.compressed()} if timed_original else {"original": ctx.original(),
                                                                          "compressed": ctx.compressed()}
        onnx: dict[str, str] = {}
        if ort_why is None and args.device == "cuda":
            from pela_export.pipeline.export import export_stage

            onnx = dict(export_stage(ctx, simplify=False, verify=False).final_onnx)
        for kind, source in models.items():
            module = copy.deepcopy(source).eval().to(device=device, dtype=dtype)  # the run's model stays FP32 on CPU
            params = count_params(module)
            for b in args.batch_sizes:
                x = loaded.dummy_input(b).to(device=device, dtype=dtype)
                stats = summarize(time_torch(module, x, args.warmup, args.runs), b)
                rows.append({"model": spec, "variant": kind, "align": None if kind == "original" else align,
                             "batch": b, "backend": f"torch-{args.device}-{args.dtype}", "params": params, **stats})
                say(f"{spec} {kind} {'' if kind == 'original' else tag} batch {b}: p50 {stats['p50_ms']:.3f} ms")
                if kind in onnx:
                    xs = loaded.dummy_input(b).numpy()
                    sec, providers = time_ort(onnx[kind], loaded.input_name, xs, args.warmup, args.runs)
                    rows.append({"model": spec, "variant": kind, "align": None if kind == "original" else align,
                                 "batch": b, "backend": "onnxruntime-cuda-fp32", "providers": providers,
                                 "params": params, **summarize(sec, b)})
            del module
        timed_original = True
    if ort_why is not None or args.device != "cuda":
        notes.append(f"ONNX Runtime CUDA EP skipped: {ort_why or 'not on a CUDA device'}")
    return {"rows": rows, "notes": notes}


def _slug(spec: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in spec)


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# GPU latency: original vs compressed ({result['device']['name']})", "",
             f"Command: `{result['command']}`; {result['settings']['runs']} runs after {result['settings']['warmup']} "
             "warm-up per row; p50 of per-forward CUDA-event times (torch) or wall time (ONNX Runtime).", "",
             "| model | backend | variant | align | batch | params | p50 ms | p90 ms | samples/s | vs original |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    base = {(r["model"], r["backend"], r["batch"]): r["p50_ms"] for r in result["rows"] if r["variant"] == "original"}
    for r in result["rows"]:
        ref = base.get((r["model"], r["backend"], r["batch"]))
        ratio = f"{r['p50_ms'] / ref:.3f}" if ref and r["variant"] != "original" else "–"
        lines.append(f"| {r['model']} | {r['backend']} | {r['variant']} | {r['align'] or '–'} | {r['batch']} | "
                     f"{r['params']:,} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | {r['throughput']:,.0f} | {ratio} |")
    lines += ["", *[f"- {n}" for n in result["notes"]]]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.versions:
        found = versions()
        Path(args.versions).parent.mkdir(parents=True, exist_ok=True)
        Path(args.versions).write_text(json.dumps(found, indent=2) + "\n")
        print(json.dumps(found, indent=2))
        return 0
    plan = [f"{m}: original + compressed ({', '.join('unaligned' if a is None else f'--align {a}' for a in args.aligns)})"
            f" at batch {', '.join(map(str, args.batch_sizes))}, torch {args.device} {args.dtype}" for m in args.model]
    if args.dry_run:
        print("gpu_latency plan:\n  " + "\n  ".join(plan))
        return 0
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_latency: skipped, torch sees no CUDA GPU (pass --device cpu --dtype fp32 to check the plumbing)")
        return 3
    say = lambda m: print(f"gpu_latency: {m}", flush=True)  # noqa: E731
    out = Path(args.out or tempfile.mkdtemp(prefix="gpu-latency-"))
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu-latency-work-"))
    for spec in args.model:
        part = measure_model(spec, args, work, say)
        rows += part["rows"]
        notes += [n for n in part["notes"] if n not in notes]
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    result = {"benchmark": "gpu_latency", "device": {"name": name, "torch": torch.__version__,
                                                     "torch_cuda": torch.version.cuda},
              "settings": {"aligns": args.aligns, "batch_sizes": args.batch_sizes, "dtype": args.dtype,
                           "runs": args.runs, "warmup": args.warmup},
              "command": " ".join(["python", "bench/gpu_latency.py", *(argv if argv is not None else sys.argv[1:])]),
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows, "notes": notes}
    (out / "gpu_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "gpu_latency.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
