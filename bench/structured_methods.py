"""Benchmark: beyond plain SVD on the project's Fashion-MNIST ViT (10,000 test images).

Methods, each after the same short distillation budget from the frozen original
(1 epoch on 10,000 training images by default; block features α=1, weight
perturbation λ=0.1 on each layer's effective weight):

- ``svd``: PELA, every attention/MLP linear as U·V at ratio k (factors train);
- ``mpo``: each linear as a 3-core MPO, bond dimension the largest whose cores store no
  more than the SVD factors (recorded), all cores train; ``mpo-shared``: the same with the
  central core of matching projections shared across blocks (one tensor);
- ``circulant``, ``toeplitz``, ``kronecker``, ``ldr``, ``snell``: a structured or kernelized
  sparse ΔW on a *frozen low-rank base at the same k* (the SVD initialisation of ``svd``),
  only ΔW trains. These rows answer "what does the delta add over plain low-rank", not
  "adapter on the dense original": their base is the untrained SVD, not PELA-trained U·V.

For each: trainable / stored (shared tensors once) / deployed (float weights of the
lowered ONNX) parameters; top-1 before and after training (PyTorch) and of the deployed
ONNX; the lowering chosen per layer (fastest measured on ONNX Runtime unless
overridden); ONNX Runtime latency at batch 1 and 8 against the dense original.
Writes bench/results/<name>.json and .md.

    python bench/structured_methods.py              # full table (the lead runs it on a quiet machine)
    python bench/structured_methods.py --quick      # smoke test: 512 train / 1,000 test images, few runs
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pela_export.measure import LatencyStats, collect_logits_onnx, environment_info
from pela_export.measure._ort import make_session
from pela_export.data.subset import model_split
from pela_export.lowrank import factorize_model
from pela_export.models.default import load_default_model
from pela_export.structured.accounting import account, export_deployed
from pela_export.structured.apply import structure_model
from pela_export.structured.base import StructuredLinear
from pela_export.structured.lowering import plan_lowering
from pela_export.structured.saved import register_known_types
from pela_export.structured.train import default_config, train_structured
from pela_export.train import accuracy_fn, from_arrays

METHODS = ("svd", "mpo", "mpo-shared", "circulant", "toeplitz", "kronecker", "ldr", "snell")
ADAPTERS = ("circulant", "toeplitz", "kronecker", "ldr", "snell")


def _data(loaded, split: str, n: int | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    return model_split("fashion-mnist", loaded, split, n, seed)


def _mpo_bond(model: nn.Module, budget: int, cores: int) -> int:
    """Largest bond dimension whose MPO layers store <= ``budget`` parameters (the SVD factors' count)."""
    best = 1
    for bond in range(1, 65):
        _, rec = structure_model(model, "mpo", hyper={"cores": cores, "bond_dim": bond})
        if sum(e.stored for e in rec.layers) > budget:
            break
        best = bond
    return best


def build(method: str, model: nn.Module, args: argparse.Namespace, notes: dict[str, Any]) -> nn.Module:
    """The untrained student of ``method`` (trainable flags set as training will use them)."""
    from pela_export.structured.sharing import set_mpo_trainable, share_central_cores

    if method == "svd":
        return factorize_model(model, ratio=args.ratio).model
    if method in ("mpo", "mpo-shared"):
        student, _ = structure_model(model, "mpo", hyper={"cores": args.mpo_cores, "bond_dim": notes["mpo_bond"]})
        if method == "mpo-shared":
            report = share_central_cores(student, "auto")
            notes["sharing"] = report.spec()
        set_mpo_trainable(student, "all")
        return student
    hyper = {"rank": args.snell_rank} if method == "snell" else {}
    student, _ = structure_model(model, method, base="lowrank", ratio=args.ratio, hyper=hyper)
    if method == "snell":
        from pela_export.structured.sparsity import rebalance_sparsity, snell_layers

        capacity = sum(m.in_features * m.out_features for m in snell_layers(student).values())
        notes["snell_allocation"] = rebalance_sparsity(student, round(args.snell_density * capacity))
    return student


def latencies(paths: dict[str, Path], x: np.ndarray, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """ONNX Runtime latency per model and batch, timed in interleaved rounds so that machine
    drift (other processes, thermal state) hits every model alike instead of the later ones."""
    sessions = {n: make_session(p, args.threads)[0] for n, p in paths.items()}
    times: dict[str, dict[int, list[float]]] = {n: {1: [], 8: []} for n in paths}
    rounds = 5
    for b in (1, 8):
        feeds = {"input": np.ascontiguousarray(x[:b])}
        for sess in sessions.values():
            for _ in range(args.warmup):
                sess.run(None, feeds)
        for _ in range(rounds):
            for n, sess in sessions.items():
                for _ in range(max(1, args.runs // rounds)):
                    t0 = time.perf_counter()
                    sess.run(None, feeds)
                    times[n][b].append(time.perf_counter() - t0)
    return {n: {str(b): LatencyStats.from_seconds(ts, b, args.threads).to_dict() for b, ts in d.items()}
            for n, d in times.items()}


def measure(name: str, student: nn.Module, args: argparse.Namespace, test: tuple[np.ndarray, np.ndarray],
            tmp: Path) -> dict[str, Any]:
    """Lowering plan, deployed ONNX (parameters, top-1); the ONNX file is timed later with the others."""
    plan = None
    if any(isinstance(m, StructuredLinear) for m in student.modules()):
        plan = plan_lowering(student, form=args.form, threads=args.threads, runs=args.plan_runs, warmup=args.warmup)
    x_test, y_test = test
    _, exported, deployed = export_deployed(student, plan, torch.from_numpy(x_test[:2]), tmp / f"{name}.onnx")
    logits = collect_logits_onnx(exported.path, "input", x_test, 500, threads=args.threads)
    forms = Counter(lp.chosen for lp in plan.layers) if plan else Counter()
    return {"deployed": deployed, "onnx_acc": float((logits.argmax(-1) == y_test).mean()),
            "lowering": ", ".join(f"{f}×{n}" for f, n in forms.items()) or "as is (no structured layer)",
            "lowering_why": sorted({lp.why for lp in plan.layers}) if plan else ["no structured layer"],
            "plan": plan.to_dict() if plan else None, "onnx": exported.path}


def _row_md(r: dict[str, Any], dense: dict[str, Any]) -> str:
    p50 = {b: (r["latency"][b]["p50_ms"], dense["latency"][b]["p50_ms"]) for b in ("1", "8")}
    lat = " | ".join(f"{mine:.3f} ({mine / ref:.2f}×)" for mine, ref in p50.values())
    before = f"{r['acc_before']:.2%} → " if r.get("acc_before") is not None else ""
    return (f"| {r['method']} | {r['base']} | {r['trainable']:,} | {r['stored']:,} | {r['deployed']:,} | "
            f"{before}{r['acc']:.2%} | {r['onnx_acc']:.2%} | {r['lowering']} | {lat} | {r.get('train_seconds', 0):.0f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    ap.add_argument("--ratio", type=float, default=4.0, help="k of the SVD (and of the adapters' low-rank base)")
    ap.add_argument("--mpo-cores", type=int, default=3)
    ap.add_argument("--mpo-bond-dim", type=int, default=None, help="default: the largest within the SVD's params")
    ap.add_argument("--snell-rank", type=int, default=8)
    ap.add_argument("--snell-density", type=float, default=0.1, help="global non-zero budget / all ΔW entries")
    ap.add_argument("--train-samples", type=int, default=10000)
    ap.add_argument("--test-samples", type=int, default=None, help="default: all 10,000")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads")
    ap.add_argument("--runs", type=int, default=200, help="timed ONNX Runtime runs per model and batch size")
    ap.add_argument("--plan-runs", type=int, default=50, help="timed runs per form when planning the lowering")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--form", choices=("structured", "lowrank", "dense"), default=None,
                    help="deploy every structured layer in this form (default: the fastest measured per layer)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 512 train / 1,000 test images, few runs")
    ap.add_argument("--results", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--name", default=None, help="default structured_methods (structured_methods_quick with --quick)")
    args = ap.parse_args(argv)
    if args.quick:
        args.train_samples, args.test_samples = min(args.train_samples, 512), args.test_samples or 1000
        args.runs, args.plan_runs, args.warmup = 30, 5, 2
    name = args.name or ("structured_methods_quick" if args.quick else "structured_methods")
    torch.set_num_threads(args.threads)
    register_known_types()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")

    loaded = load_default_model("fashion-mnist", progress=False)
    model = loaded.model.eval()
    test = _data(loaded, "test", args.test_samples, seed=0)
    acc = accuracy_fn(from_arrays(*test, name="fashion-mnist test"), batch_size=500)
    x_tr, y_tr = _data(loaded, "train", args.train_samples, seed=2)
    train = from_arrays(x_tr, y_tr, name=f"fashion-mnist train subset ({len(x_tr)})")
    cfg = default_config(epochs=args.epochs, batch_size=128, lr=1e-3, alpha=1.0, lam=0.1)
    notes: dict[str, Any] = {}
    svd_params = factorize_model(model, ratio=args.ratio).totals()["params_after_factorized_layers"]
    if {"mpo", "mpo-shared"} & set(args.methods):
        notes["mpo_bond"] = args.mpo_bond_dim or _mpo_bond(model, svd_params, args.mpo_cores)
        notes["mpo_bond_origin"] = "user" if args.mpo_bond_dim else \
            f"automatic: largest bond whose MPO cores store <= the SVD factors' {svd_params:,} parameters"

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pela-structured-bench-") as tmpdir:
        tmp = Path(tmpdir)
        counts = account("dense (original)", model)
        dense = {"method": "dense (original)", "base": "-", "trainable": counts.stored, "stored": counts.stored,
                 "acc": acc(model), **measure("dense", model, args, test, tmp)}
        dense["lowering"] = "dense (original)"
        print(f"dense: {dense['acc']:.4f}", flush=True)
        for method in args.methods:
            student = build(method, model, args, notes)
            before = acc(student)
            t0 = time.perf_counter()
            hist = train_structured(student, model, train, cfg).history
            secs = time.perf_counter() - t0
            counts = account(method, student)
            base = f"frozen SVD k={args.ratio:g}" if method in ADAPTERS else "-"
            row = {"method": method, "base": base, "trainable": counts.trainable, "stored": counts.stored,
                   "acc_before": before, "acc": acc(student), "train_seconds": secs, "train_history": hist,
                   **measure(method, student, args, test, tmp)}
            rows.append(row)
            print(f"{method}: {before:.4f} -> {row['acc']:.4f} (onnx {row['onnx_acc']:.4f}) params "
                  f"{row['trainable']:,}/{row['stored']:,}/{row['deployed']:,} {row['lowering']} "
                  f"({secs:.0f}s)", flush=True)
        timed = latencies({r["method"]: r.pop("onnx") for r in (dense, *rows)}, test[0], args)
        for r in (dense, *rows):
            r["latency"] = timed[r["method"]]

    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    result = {"benchmark": "structured_methods", "model": loaded.source, "started": started,
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command, "quick": args.quick,
              "framing": "adapter and SNELL rows sit on a frozen plain-SVD base at the same k: their numbers show "
                         "what the delta adds over low-rank, not an adapter on the dense model",
              "settings": {k: v for k, v in vars(args).items()}, "notes": notes,
              "training": {**dataclasses.asdict(cfg), "samples": len(x_tr), "what_trains": "layers' own trainable "
                           "parameters (factors; MPO cores; adapter/SNELL deltas), nothing else"},
              "test_samples": len(test[0]), "environment": environment_info(), "dense": dense, "methods": rows}
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    md = [f"# Fashion-MNIST ViT: structured methods beyond plain SVD{' (QUICK SMOKE RUN, not results)' if args.quick else ''}",
          "", f"Measured {result['finished']} with `{command}` ({args.threads} threads; ONNX Runtime "
          f"{environment_info().get('onnxruntime', '')}). Test: {len(test[0]):,} images. Training: {args.epochs} "
          f"epoch(s) on {len(x_tr):,} train images, distillation from the original (α=1, λ=0.1, lr 1e-3, batch "
          f"128), only each method's own layer parameters train.", "",
          f"**Framing:** circulant / toeplitz / kronecker / ldr / snell add a trainable ΔW to a *frozen plain-SVD "
          f"base at k={args.ratio:g}*; compare them with `svd` (the same base, PELA-trained) to see what the delta "
          f"adds over low-rank. MPO bond dimension: {notes.get('mpo_bond', '-')} ({notes.get('mpo_bond_origin', '-')}).",
          "", "Parameters: trainable (what training updates) / stored (checkpoint, a shared tensor once) / deployed "
          "(float weights of the exported lowered ONNX). Lowering: form chosen per layer (fastest measured on ONNX "
          "Runtime at batch 1 unless --form is given). Latency: ONNX Runtime p50 ms of the whole deployed model "
          "(× the dense original), all models timed in interleaved rounds.", "",
          "| method | base | trainable | stored | deployed | top-1 (before → after) | top-1 ONNX | lowering | "
          "p50 b=1 ms | p50 b=8 ms | train s |",
          "|---|---|---:|---:|---:|---|---:|---|---:|---:|---:|", _row_md(dense, dense)]
    md += [_row_md(r, dense) for r in rows]
    (out / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
