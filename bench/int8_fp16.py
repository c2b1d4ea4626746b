"""Benchmark: INT8 over FP16 (``int8fp16``) beside FP16 and the FP32-graph INT8, on CPU with ONNX Runtime.

For the original and the compressed model: FP32, FP16, INT8 (Q/DQ on the FP32 graph) and int8fp16
(the same Q/DQ on the FP16 graph) at the default opset 17 (float32 Q/DQ between Casts, the form
TensorRT 8.6 parses), plus int8fp16 re-exported at each further ``--opsets`` value (>= 19: float16
Q/DQ with float16 scales, ModelOpt's ``high_precision_dtype="fp16"`` layout), each scored against the
FP32 graph of its own export. All variants use the converters' defaults (INT8: percentile scales)
and the ORT level their spec names (INT8 variants: basic, simulated quantization).

Accuracy on the model's test split when it has one (Fashion-MNIST: all 10,000 images with
``--eval-samples 0``), else agreement / cosine / output error against FP32 on seeded random inputs
(random-weight timm models). Writes bench/results/<name>.json and .md.

    python bench/int8_fp16.py default:fashion-mnist --eval-samples 0
    python bench/int8_fp16.py timm:deit_small_patch16_224 --calib-samples 64 --eval-samples 256
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
from pela_export.pipeline.context import Context, prepare
from pela_export.pipeline.evaldata import EvalData, evaluation_data
from pela_export.pipeline.export import export_stage
from pela_export.pipeline.precision import calibration_feeds, fp32_logits, measure_variant
from pela_export.precision.spec import precision_spec

#: (row label, precision) at the first opset; later opsets add int8fp16 only.
VARIANTS = [("fp16", "fp16"), ("int8", "int8"), ("int8fp16", "int8fp16")]


def _row(model: str, label: str, opset: int, acc: dict[str, Any], out: np.ndarray, ref: np.ndarray, secs: float,
         res: Any = None, dst: Path | None = None) -> dict[str, Any]:
    row = {"model": model, "variant": label, "opset": opset, "top1": acc["top1_candidate"],
           "agreement": acc["top1_agreement"], "cosine_mean": acc["cosine_mean"], "cosine_min": acc.get("cosine_min"),
           "max_abs_diff": acc["max_abs_diff"], "rel_l2": float(np.linalg.norm(out - ref) / np.linalg.norm(ref)),
           "seconds": secs}
    if res is not None and dst is not None:
        d = res.details
        row.update(kept_fp32=len(res.kept_fp32), onnx_bytes=dst.stat().st_size,
                   ort_level=acc["onnxruntime_optimization"], quantized_nodes=d.get("quantized_nodes"),
                   nodes_fp16=d.get("nodes_fp16"), qdq_form=(d.get("qdq") or {}).get("form"))
    return row


def _measure(ctx: Context, tmp: Path, opset: int, variants: list[tuple[str, str]], threads: int,
             with_fp32: bool) -> tuple[list[dict[str, Any]], dict[str, Any], EvalData]:
    feeds, calib = calibration_feeds(ctx)
    data = evaluation_data(ctx)
    rows: list[dict[str, Any]] = []
    for model, src in deployed_onnx(ctx).items():
        ref = fp32_logits(ctx, src, data)
        if with_fp32:
            rows.append(_row(model, "fp32", opset, evaluate_logits(ref, ref, data.labels, num_classes=data.num_classes),
                             ref, ref, 0.0))
        for label, precision in variants:
            dst = tmp / f"{model}.{label}.opset{opset}.onnx"
            t0 = time.perf_counter()
            res, out, acc = measure_variant(ctx, src, dst, precision, {"threads": threads}, feeds, data, ref)
            rows.append(_row(model, label if with_fp32 else f"{label} (opset {opset})", opset, acc, out, ref,
                             time.perf_counter() - t0, res, dst))
            r = rows[-1]
            print(f"{model:10s} {r['variant']:22s} top1={r['top1']} agree={r['agreement']:.4f} "
                  f"cos={r['cosine_mean']:.5f} rel_l2={r['rel_l2']:.4f} ({r['seconds']:.0f}s)", flush=True)
    return rows, calib, data


def _markdown(result: dict[str, Any], name: str, threads: int) -> list[str]:
    rows = result["rows"]
    fp32 = {(r["model"], r["opset"]): r["top1"] for r in rows if r["variant"] == "fp32"}
    first = rows[0]["opset"]
    md = [f"# INT8 over FP16: {name} (k={result['ratio']:g})", "",
          f"Measured {result['finished']} with `{result['command']}` on CPU (ONNX Runtime {result['onnxruntime']}, "
          f"{threads} threads). Evaluation: {result['evaluation']['data']} "
          f"({result['evaluation']['samples']} samples). "
          f"Calibration: {result['calibration']['source']} ({result['calibration']['samples']} samples). "
          "INT8 variants: percentile scales, symmetric per-channel weights / per-tensor activations on "
          "MatMul/Gemm/Conv inputs, run at ORT's basic level (simulated quantization). `int8` is Q/DQ on the FP32 "
          "graph; `int8fp16` the same Q/DQ on the FP16 graph (unquantized ops FP16, the fp16 variant's kept ops "
          "FP32). Opset 17: float32 Q/DQ between Casts; opset 19: float16 Q/DQ and scales. Each row is scored "
          "against the FP32 graph of its own export.", "",
          "Precision columns: nodes with INT8 inputs (Q/DQ), nodes converted to FP16, nodes kept FP32 with a reason "
          "(`int8` keeps every unquantized node FP32).", "",
          "| model | variant | top-1 | Δ top-1 vs FP32 | agreement with FP32 | mean cosine | min cosine "
          "| rel. L2 error | INT8 nodes | FP16 nodes | FP32 nodes kept | ONNX MB |",
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        base = fp32.get((r["model"], r["opset"]), fp32.get((r["model"], first)))
        top1 = f"{r['top1']:.2%}" if r["top1"] is not None else "n/a"
        delta = f"{100 * (r['top1'] - base):+.2f} pt" if r["top1"] is not None and base is not None else "n/a"
        cmin = f"{r['cosine_min']:.4f}" if r.get("cosine_min") is not None else ""
        size = f"{r['onnx_bytes'] / 1e6:.1f}" if r.get("onnx_bytes") else ""
        fp16_graph = r["variant"].startswith(("fp16", "int8fp16"))
        int8 = r.get("quantized_nodes") or ""
        fp16 = r.get("nodes_fp16") or ("0" if r["variant"] != "fp32" else "")
        kept = r.get("kept_fp32", "") if fp16_graph else ("all others" if r["variant"] == "int8" else "")
        md.append(f"| {r['model']} | {r['variant']} | {top1} | {delta} | {r['agreement']:.2%} | {r['cosine_mean']:.5f} "
                  f"| {cmin} | {r['rel_l2']:.4f} | {int8} | {fp16} | {kept} | {size} |")
    return md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--ratio", type=float, default=2.0)
    ap.add_argument("--opsets", default="17,19", help="export opsets; the first gets every variant (default 17,19)")
    ap.add_argument("--calib-samples", type=int, default=256)
    ap.add_argument("--eval-samples", type=int, default=2000, help="0 = the whole test split")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--name", default=None)
    args = ap.parse_args(argv)
    opsets = [int(o) for o in args.opsets.split(",") if o.strip()]
    torch.set_num_threads(args.threads)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    rows: list[dict[str, Any]] = []
    for i, opset in enumerate(opsets):
        with tempfile.TemporaryDirectory(prefix="pela-i8f16-") as tmp:
            cfg = RunConfig.of(model=args.model, ratio=args.ratio, out=tmp, precisions=("fp32",), threads=args.threads,
                               opset=opset, calib_samples=args.calib_samples, eval_samples=args.eval_samples or None,
                               progress=False)
            ctx = prepare(cfg)
            compress_stage(ctx)
            export_stage(ctx)
            got, calib, data = _measure(ctx, Path(tmp), opset, VARIANTS if i == 0 else [("int8fp16", "int8fp16")],
                                        args.threads, with_fp32=i == 0)
            rows += got
    import onnxruntime

    name = args.name or "int8_fp16_" + ctx.loaded.name.replace("/", "_")
    result = {"benchmark": "int8_fp16", "model": ctx.loaded.source, "ratio": args.ratio, "opsets": opsets,
              "started": started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
              "calibration": calib, "evaluation": {"data": data.source, "samples": int(len(data.x))},
              "onnxruntime": onnxruntime.__version__,
              "ort_levels": {p: precision_spec(p).ort_level for _, p in VARIANTS},
              "golden_tolerance": {p: precision_spec(p).golden_tolerance for _, p in VARIANTS},
              "environment": environment_info(), "rows": rows}
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    md = _markdown(result, ctx.loaded.name, args.threads)
    (out / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
