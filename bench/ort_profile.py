"""Where ONNX Runtime spends its time, per op type (kernel time from ORT's profiler).

Explains the gap between a measured latency ratio and the FLOP ratio: GEMM time
shrinks with the rank, the fixed non-GEMM work (Transpose, LayerNorm, GELU, Add)
does not.

    python bench/ort_profile.py pela-out/X/original.sim.onnx pela-out/X/compressed.sim.onnx --threads 2
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile

import numpy as np

from pela_export.export.runtime import ort_session


def profile(path: str, threads: int, runs: int) -> dict[str, float]:
    """Mean kernel milliseconds per run for each op type."""
    import onnxruntime as ort

    sess = ort_session(path, threads=threads)
    opts = sess.get_session_options()
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(tempfile.mkdtemp(prefix="pela-prof-"), "ort")
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [1 if not isinstance(d, int) else d for d in inp.shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(runs):
        sess.run(None, {inp.name: x})
    with open(sess.end_profiling(), encoding="utf-8") as f:
        events = json.load(f)
    per_op: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
    return {op: us / runs / 1000 for op, us in per_op.most_common()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("onnx", nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args(argv)
    for path in args.onnx:
        ops = profile(path, args.threads, args.runs)
        gemm = sum(v for k, v in ops.items() if k in ("MatMul", "Gemm", "FusedMatMul"))
        total = sum(ops.values())
        print(f"{path}: kernel total {total:.1f} ms/run, GEMM {gemm:.1f} ms, other {total - gemm:.1f} ms")
        for op, ms in list(ops.items())[:8]:
            print(f"   {op:22s} {ms:7.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
