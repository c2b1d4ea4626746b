"""Benchmark: FP32 vs FP16 vs INT8 (max, percentile, entropy) in the graph, for the
original and the compressed model, all run with ONNX Runtime on CPU.

Accuracy on the model's test split when it has one (Fashion-MNIST: all 10,000
images), else agreement / output error against FP32 on seeded random inputs
(random-weight timm models). INT8 runs at ORT's basic optimisation level
(simulated quantization: ORT's fused INT8 CPU kernels saturate on AVX2 hosts
without VNNI). Writes bench/results/<name>.json and .md.

    python bench/precision_variants.py default:fashion-mnist --eval-samples 0
    python bench/precision_variants.py timm:deit_small_patch16_224 --calib-samples 64
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pela_export.measure import environment_info, evaluate_logits
from pela_export.pipeline.bench import deployed_onnx
from pela_export.pipeline.compress import compress_stage
from pela_export.pipeline.config import RunConfig
from pela_export.pipeline.context import prepare
from pela_export.pipeline.evaldata import evaluation_data
from pela_export.pipeline.export import export_stage
from pela_export.pipeline.precision import calibration_feeds, fp32_logits, measure_variant

VARIANTS = [("fp16", "fp16", {}), ("int8-max", "int8", {"method": "max"}),
            ("int8-percentile", "int8", {"method": "percentile"}), ("int8-entropy", "int8", {"method": "entropy"})]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--ratio", type=float, default=2.0)
    ap.add_argument("--calib-samples", type=int, default=256)
    ap.add_argument("--eval-samples", type=int, default=2000, help="0 = the whole test split")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--name", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with tempfile.TemporaryDirectory(prefix="pela-prec-") as tmp:
        cfg = RunConfig.of(model=args.model, ratio=args.ratio, out=tmp, precisions=("fp32",), threads=args.threads,
                        calib_samples=args.calib_samples, eval_samples=args.eval_samples or None, progress=False)
        ctx = prepare(cfg)
        compress_stage(ctx)
        export_stage(ctx)
        feeds, calib = calibration_feeds(ctx)
        data = evaluation_data(ctx)
        rows: list[dict[str, Any]] = []
        for model, src in deployed_onnx(ctx).items():
            ref = fp32_logits(ctx, src, data)
            base = evaluate_logits(ref, ref, data.labels, num_classes=data.num_classes)
            rows.append({"model": model, "variant": "fp32", "top1": base["top1_candidate"], "agreement": 1.0,
                         "cosine_mean": 1.0, "max_abs_diff": 0.0, "rel_l2": 0.0, "seconds": 0.0})
            for label, precision, options in VARIANTS:
                dst = Path(tmp) / f"{model}.{label}.onnx"
                t0 = time.perf_counter()
                res, out, acc = measure_variant(ctx, src, dst, precision, {**options, "threads": args.threads},
                                                feeds, data, ref)
                secs = time.perf_counter() - t0
                rows.append({"model": model, "variant": label, "top1": acc["top1_candidate"],
                             "agreement": acc["top1_agreement"], "cosine_mean": acc["cosine_mean"],
                             "max_abs_diff": acc["max_abs_diff"],
                             "rel_l2": float(np.linalg.norm(out - ref) / np.linalg.norm(ref)), "seconds": secs,
                             "kept_fp32": len(res.kept_fp32), "onnx_bytes": dst.stat().st_size})
                r = rows[-1]
                print(f"{model:10s} {label:16s} top1={r['top1']} agree={r['agreement']:.4f} "
                      f"rel_l2={r['rel_l2']:.4f} ({secs:.0f}s)", flush=True)
    name = args.name or "precision_" + ctx.loaded.name.replace("/", "_")
    result = {"benchmark": "precision_variants", "model": ctx.loaded.source, "ratio": args.ratio,
              "started": started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
              "calibration": calib, "evaluation": {"data": data.source, "samples": int(len(data.x))},
              "onnxruntime": {"fp32/fp16": "ORT_ENABLE_ALL", "int8": "ORT_ENABLE_BASIC (simulated quantization)"},
              "environment": environment_info(), "rows": rows}
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    fp32 = {r["model"]: r["top1"] for r in rows if r["variant"] == "fp32"}
    md = [f"# Precision variants: {ctx.loaded.name} (k={args.ratio:g})", "",
          f"Measured {result['finished']} with `{result['command']}` on CPU (ONNX Runtime, {args.threads} threads). "
          f"Evaluation: {data.source}. Calibration: {calib['source']}. INT8 is symmetric, per-channel "
          "weights, per-tensor activations, Q/DQ on MatMul/Gemm/Conv inputs; run as simulated quantization.", "",
          "| model | variant | top-1 | Δ top-1 vs FP32 | agreement with FP32 | mean cosine | rel. L2 error | nodes kept FP32 |",
          "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        top1 = f"{r['top1']:.2%}" if r["top1"] is not None else "n/a"
        delta = f"{100 * (r['top1'] - fp32[r['model']]):+.2f} pt" if r["top1"] is not None else "n/a"
        md.append(f"| {r['model']} | {r['variant']} | {top1} | {delta} | {r['agreement']:.2%} | {r['cosine_mean']:.5f} | "
                  f"{r['rel_l2']:.4f} | {r.get('kept_fp32', '')} |")
    (out / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
