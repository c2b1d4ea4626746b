"""Benchmark: ``--rank-policy latency`` vs uniform PELA ratio k (issue 15), ONNX Runtime CPU.

For each k: compress uniformly at k and time it against the original (interleaved rounds, as
bench/deit_lowrank.py); then run the latency policy (a) at the uniform model's measured latency ratio
(equal latency: compare parameters and the loss proxy, mean relative weight error) and (b) at
1.1 × k's FLOP ratio (the issue's target: within 1.1 × the FLOP floor), and time those too. One latency
table is measured once and copied into every latency run's output dir (reused, not re-measured).
Writes bench/results/latency_policy_<name>.json and .md.

    python bench/latency_policy.py                                   # deit_small, k = 2, 3, batch 1, 2 threads
    python bench/latency_policy.py --model default --ratios 2 --rounds 1 --runs 10 --results /tmp/r   # smoke
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from deit_lowrank import _interleaved  # noqa: E402  (the interleaved ORT timing of the existing deit bench)

from pela_export.errors import OptionError  # noqa: E402
from pela_export.measure import count_flops, count_params, environment_info  # noqa: E402
from pela_export.pipeline.compress import compress_stage  # noqa: E402
from pela_export.pipeline.config import RunConfig  # noqa: E402
from pela_export.pipeline.context import prepare  # noqa: E402
from pela_export.pipeline.export import export_stage  # noqa: E402
from pela_export.pipeline.latency import TABLE_FILE  # noqa: E402


def _mean_weight_error(compression: dict[str, Any]) -> float:
    """Mean ‖W−W_r‖/‖W‖ over the eligible layers (0 for a layer kept dense): the policy's loss proxy."""
    layers = compression["layers"]
    return sum(r["rel_error"] or 0.0 for r in layers) / max(1, len(layers))


def _variant(args: argparse.Namespace, work: Path, name: str, loaded: Any, table: Path | None,
             **options: Any) -> tuple[dict[str, Any], Any, Any]:
    cfg = RunConfig.of(model=args.model, out=str(work / name), threads=args.threads, batch_sizes=(1,),
                       progress=False, runs=args.runs, **options)
    ctx = prepare(cfg, loaded)
    if table is not None and table.is_file():
        shutil.copy(table, ctx.artifacts.root / TABLE_FILE)
    t0 = time.perf_counter()
    record = compress_stage(ctx)
    seconds = time.perf_counter() - t0
    exported = export_stage(ctx)
    x1 = ctx.loaded.dummy_input(1)
    row = {"variant": name, "options": options, "compress_seconds": seconds,
           "params": count_params(ctx.compressed()), "flops": count_flops(ctx.compressed(), x1).flops,
           "mean_weight_error": _mean_weight_error(record.compression),
           "layers_factorized": record.compression["totals"]["layers_factorized"],
           "latency_policy": record.compression["policy_inputs"].get("latency"),
           "onnx": exported.final_onnx["compressed"], "original_onnx": exported.final_onnx["original"]}
    return row, ctx, exported


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="timm:deit_small_patch16_224")
    ap.add_argument("--ratios", type=float, nargs="+", default=[2.0, 3.0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--work", default=None)
    ap.add_argument("--results", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--name", default=None)
    args = ap.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="pela-latbench-"))
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    loaded, table, rows = None, None, []
    for k in args.ratios:
        uniform, ctx, _ = _variant(args, work, f"uniform_k{k:g}", loaded, None, ratio=k)
        loaded = ctx.loaded
        x1 = loaded.dummy_input(1)
        flops_o = count_flops(ctx.original(), x1).flops
        params_o = count_params(ctx.original())
        lat = _interleaved({"original": uniform["original_onnx"], "uniform": uniform["onnx"]}, loaded.input_name,
                           x1.numpy(), args.rounds, args.runs, args.threads)
        base = lat["original"]["p50_ms_median_of_rounds"]
        uniform.update(latency_ratio=lat["uniform"]["p50_ms_median_of_rounds"] / base, flop_ratio=uniform["flops"] / flops_o)
        group = [uniform]
        for label, budget in (("equal-latency", min(1.0, uniform["latency_ratio"])),
                              ("1.1x-flop-floor", min(1.0, 1.1 * uniform["flop_ratio"]))):
            try:
                row, lctx, _ = _variant(args, work, f"latency_k{k:g}_{label}", loaded, table,
                                        rank_policy="latency", latency_budget=round(budget, 4))
            except OptionError as exc:
                group.append({"variant": f"latency_k{k:g}_{label}", "error": str(exc)})
                continue
            table = table or lctx.artifacts.root / TABLE_FILE
            t = _interleaved({"original": row["original_onnx"], "latency": row["onnx"]}, loaded.input_name,
                             x1.numpy(), args.rounds, args.runs, args.threads)
            row.update(budget=budget, latency_ratio=t["latency"]["p50_ms_median_of_rounds"] /
                       t["original"]["p50_ms_median_of_rounds"], flop_ratio=row["flops"] / flops_o)
            group.append(row)
        for r in group:
            r.update(k=k, params_original=params_o, flop_floor_k=uniform["flop_ratio"],
                     target=1.1 * uniform["flop_ratio"])
            if "latency_ratio" in r:
                r["meets_target"] = r["latency_ratio"] <= r["target"]
                print(f"k={k:g} {r['variant']}: latency ratio {r['latency_ratio']:.3f} (FLOP floor "
                      f"{uniform['flop_ratio']:.3f}, target {r['target']:.3f}), params {r['params']:,}, "
                      f"mean weight error {r['mean_weight_error']:.4f}", flush=True)
        rows += group
    name = args.name or args.model.split(":")[-1]
    result = {"benchmark": "latency_policy", "model": args.model, "threads": args.threads, "batch": 1,
              "rounds": args.rounds, "runs_per_round": args.runs, "started": started,
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
              "environment": environment_info(), "rows": rows}
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"latency_policy_{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    lines = [f"# {args.model}: --rank-policy latency vs uniform k (ONNX Runtime CPU, batch 1, {args.threads} threads)",
             "", f"`{result['command']}`, finished {result['finished']}; median of {args.rounds} interleaved rounds x "
             f"{args.runs} runs. Target: latency ratio <= 1.1 x the FLOP floor of uniform k.", "",
             "| k | variant | budget | latency ratio | FLOP ratio | target | met | params | mean weight error | "
             "layers factorized | predicted / measured ms (policy) |", "|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['k']:g} | {r['variant']} | | error: {r['error'].splitlines()[0]} | | | | | | | |")
            continue
        pol = r.get("latency_policy") or {}
        pm = (f"{pol['predicted_ms']:.2f} / {pol['measured_ms']:.2f} ({pol['corrections']} corr.)"
              if pol.get("measured_ms") is not None else "—")
        lines.append(f"| {r['k']:g} | {r['variant']} | {r.get('budget', '—') if 'budget' not in r else round(r['budget'], 3)} | "
                     f"{r['latency_ratio']:.3f} | {r['flop_ratio']:.3f} | {r['target']:.3f} | "
                     f"{'yes' if r['meets_target'] else 'no'} | {r['params']:,} | {r['mean_weight_error']:.4f} | "
                     f"{r['layers_factorized']} | {pm} |")
    (out / f"latency_policy_{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
