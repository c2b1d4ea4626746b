"""Benchmark: deit_small_patch16_224 (random weights, 224×224), original vs PELA low-rank at k = 2 and 3.

Measures ONNX Runtime CPU latency of the simplified, verified ONNX files at
batch 1 (and optionally more), interleaving original and compressed in rounds
so machine drift hits both alike, and reports the measured latency ratio next
to the FLOP ratio (its floor). Writes bench/results/<name>.json and .md.

    python bench/deit_lowrank.py                      # k = 2, 3; batch 1; 3 rounds x 30 runs
    python bench/deit_lowrank.py --ratios 2 3 4 --batch-sizes 1 8 --rounds 5
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pela_export.bench import bench_onnxruntime, count_flops, count_params, environment_info
from pela_export.pipeline.compress import compress_stage
from pela_export.pipeline.config import RunConfig
from pela_export.pipeline.context import prepare
from pela_export.pipeline.export import export_stage

TARGETS = {2.0: 0.65, 3.0: 0.50}  # compressed/original ONNX Runtime CPU latency, batch 1 (issue #2)


def _p50_rounds(paths: dict[str, str], input_name: str, x: np.ndarray, rounds: int, runs: int, threads: int) -> dict[str, Any]:
    """Alternate variants for ``rounds`` rounds; keep every round's stats, summarise by the median p50."""
    per: dict[str, list[dict[str, Any]]] = {k: [] for k in paths}
    for _ in range(rounds):
        for name, path in paths.items():
            per[name].append(bench_onnxruntime(path, input_name, x, warmup=5, runs=runs, threads=threads).to_dict())
    return {name: {"p50_ms_median_of_rounds": statistics.median(r["p50_ms"] for r in stats),
                   "p90_ms_median_of_rounds": statistics.median(r["p90_ms"] for r in stats),
                   "p99_ms_median_of_rounds": statistics.median(r["p99_ms"] for r in stats),
                   "throughput_median_of_rounds": statistics.median(r["throughput"] for r in stats),
                   "rounds": stats} for name, stats in per.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="timm:deit_small_patch16_224")
    ap.add_argument("--ratios", type=float, nargs="+", default=[2.0, 3.0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=None, help="where ONNX files go (default: a temp dir)")
    ap.add_argument("--results", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--name", default=None, help="results file stem (default: the model name)")
    args = ap.parse_args(argv)

    work = Path(args.work or tempfile.mkdtemp(prefix="pela-bench-"))
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    loaded = None
    rows: list[dict[str, Any]] = []
    original_onnx = None
    for k in args.ratios:
        cfg = RunConfig(model=args.model, ratio=k, out=str(work / f"k{k:g}"), threads=args.threads, progress=False)
        ctx = prepare(cfg, loaded)
        loaded = ctx.loaded
        compress_stage(ctx)
        record = export_stage(ctx)
        original_onnx = original_onnx or record["final_onnx"]["original"]
        x1 = loaded.dummy_input(1)
        fl_o, fl_c = count_flops(ctx.original(), x1).flops, count_flops(ctx.compressed(), x1).flops
        totals = ctx.load_record("compress", "bench")["compression"]["totals"]
        for b in args.batch_sizes:
            x = loaded.dummy_input(b).numpy()
            lat = _p50_rounds({"original": original_onnx, "compressed": record["final_onnx"]["compressed"]},
                              loaded.input_name, x, args.rounds, args.runs, args.threads)
            ratio = lat["compressed"]["p50_ms_median_of_rounds"] / lat["original"]["p50_ms_median_of_rounds"]
            target = TARGETS.get(float(k)) if b == 1 else None
            rows.append({
                "ratio_k": k, "batch": b,
                "params_original": count_params(ctx.original()), "params_compressed": count_params(ctx.compressed()),
                "reduction_in_factorized_layers": totals["reduction_in_factorized_layers"],
                "flops_original": fl_o, "flops_compressed": fl_c, "flop_ratio": fl_c / fl_o,
                "p50_ms_original": lat["original"]["p50_ms_median_of_rounds"],
                "p50_ms_compressed": lat["compressed"]["p50_ms_median_of_rounds"],
                "latency_ratio": ratio, "target_latency_ratio": target,
                "meets_target": (ratio <= target) if target is not None else None,
                "verified": record["verification"].get("ok", False), "latency": lat,
            })
            print(f"k={k:g} batch={b}: p50 {rows[-1]['p50_ms_original']:.1f} -> {rows[-1]['p50_ms_compressed']:.1f} ms "
                  f"(ratio {ratio:.3f}, FLOP ratio {fl_c / fl_o:.3f}, target {target})", flush=True)

    name = args.name or args.model.split(":")[-1]
    result = {
        "benchmark": "deit_lowrank", "model": args.model, "weights": "random (timm, pretrained=False)",
        "backend": "onnxruntime CPUExecutionProvider", "threads": args.threads, "rounds": args.rounds,
        "runs_per_round": args.runs, "started": started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "environment": environment_info(), "rows": rows,
    }
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# {args.model}: original vs PELA low-rank (ONNX Runtime CPU, {args.threads} threads)", "",
             f"Measured {result['finished']} with `{result['command']}`; median of {args.rounds} interleaved rounds "
             f"x {args.runs} runs. Random weights; both ONNX files verified against PyTorch.", "",
             "| k | batch | params orig → comp | p50 orig (ms) | p50 comp (ms) | latency ratio | FLOP ratio (floor) | target | met |",
             "|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['ratio_k']:g} | {r['batch']} | {r['params_original']:,} → {r['params_compressed']:,} | "
                     f"{r['p50_ms_original']:.1f} | {r['p50_ms_compressed']:.1f} | {r['latency_ratio']:.3f} | "
                     f"{r['flop_ratio']:.3f} | {r['target_latency_ratio'] if r['target_latency_ratio'] else '—'} | "
                     f"{'yes' if r['meets_target'] else 'no' if r['meets_target'] is False else '—'} |")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
