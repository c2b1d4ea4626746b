"""Benchmark: which low-rank initialisation and rank policy keeps accuracy, before
and after PELA training, on the project's Fashion-MNIST ViT (10,000 test images).

For k in {2, 3, 4}: plain SVD, FWSVD, ASVD and whitening SVD before training and
after the same PELA training budget; sensitivity-based ranks against the uniform
ratio at equal parameters (before training); an ablation of the loss terms; and
the digits-default PELA training time. Writes bench/results/<name>.json and .md.

    python bench/fashion_methods.py                       # full table (~30 min on 2 CPU cores)
    python bench/fashion_methods.py --ratios 3 --train-samples 5000 --epochs 1   # quick look
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pela_export.bench import environment_info
from pela_export.data import adapt_images, load_dataset
from pela_export.lowrank import factorize_model
from pela_export.lowrank.select import select_linears
from pela_export.lowrank.stats import collect_activation_stats, collect_fisher, with_fisher
from pela_export.models.default import load_default_model
from pela_export.train import TrainConfig, accuracy_fn, from_arrays, train_pela

METHODS = ("svd", "fwsvd", "asvd", "whiten")


def _data(loaded, split: str, n: int | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    ds = load_dataset("fashion-mnist")
    x, y = (ds.x_train, ds.y_train) if split == "train" else (ds.x_test, ds.y_test)
    if n is not None and n < len(x):
        idx = np.random.default_rng(seed).permutation(len(x))[:n]
        x, y = x[idx], y[idx]
    return adapt_images(x, loaded.input_shape, loaded.preprocessing).astype(np.float32), y.astype(np.int64)


def _factorized_params(res) -> tuple[int, int]:
    t = res.totals()
    return t["params_before_factorized_layers"], t["params_after_factorized_layers"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ratios", type=float, nargs="+", default=[2.0, 3.0, 4.0])
    ap.add_argument("--calib-samples", type=int, default=512)
    ap.add_argument("--train-samples", type=int, default=10000, help="PELA training subset of the 60k train split")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--ablation-ratio", type=float, default=3.0)
    ap.add_argument("--skip-digits-timing", action="store_true")
    ap.add_argument("--results", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--name", default="fashion_mnist_methods")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")

    loaded = load_default_model("fashion-mnist", progress=False)
    model = loaded.model.eval()
    x_test, y_test = _data(loaded, "test", None)
    test = from_arrays(x_test, y_test, name="fashion-mnist test (10000)")
    acc = accuracy_fn(test, batch_size=500)
    x_cal, y_cal = _data(loaded, "train", args.calib_samples, seed=1)
    x_tr, y_tr = _data(loaded, "train", args.train_samples, seed=2)
    train = from_arrays(x_tr, y_tr, name=f"fashion-mnist train subset ({len(x_tr)})")
    cal_batches = [(torch.from_numpy(x_cal[i:i + 32]), torch.from_numpy(y_cal[i:i + 32])) for i in range(0, len(x_cal), 32)]
    names = [n for n, _ in select_linears(model)]
    stats = with_fisher(collect_activation_stats(model, names, cal_batches, need={"abs_mean", "gram"}),
                        collect_fisher(model, names, cal_batches))
    acc_orig = acc(model)
    print(f"original: {acc_orig:.4f}", flush=True)
    tc = TrainConfig(epochs=args.epochs, batch_size=128, lr=1e-3, alpha=1.0, lam=0.1, scope="factors", progress=False)

    def pela(student, cfg: TrainConfig = tc) -> tuple[float, float]:
        t0 = time.perf_counter()
        train_pela(student, model, train, cfg)
        return acc(student), time.perf_counter() - t0

    rows: list[dict[str, Any]] = []
    for k in args.ratios:
        for method in METHODS:
            res = factorize_model(model, ratio=k, method=method, stats=stats)
            before = acc(res.model)
            after, secs = pela(res.model)
            p0, p1 = _factorized_params(res)
            rows.append({"k": k, "method": method, "acc_before": before, "acc_after": after, "train_seconds": secs,
                         "params_factorized_before": p0, "params_factorized_after": p1})
            print(f"k={k:g} {method:6s}: before {before:.4f} after {after:.4f} ({secs:.0f}s)", flush=True)

    def probe(m) -> float:
        with torch.no_grad():
            return float(sum(torch.nn.functional.cross_entropy(m(x), y, reduction="sum") for x, y in cal_batches)) / len(x_cal)

    sens_rows = []
    for k in args.ratios:
        uni = factorize_model(model, ratio=k)
        sen = factorize_model(model, ratio=k, rank_policy="sensitivity", loss_fn=probe)
        sens_rows.append({"k": k, "uniform_acc": acc(uni.model), "uniform_params": _factorized_params(uni)[1],
                          "sensitivity_acc": acc(sen.model), "sensitivity_params": _factorized_params(sen)[1]})
        print(f"k={k:g} uniform {sens_rows[-1]['uniform_acc']:.4f} vs sensitivity {sens_rows[-1]['sensitivity_acc']:.4f}", flush=True)

    ablation = []
    for label, changes in [("full (alpha=1, lambda=0.1)", {}), ("no weight-perturbation (lambda=0)", {"lam": 0.0}),
                           ("no feature distillation (alpha=0)", {"alpha": 0.0}),
                           ("task loss only (alpha=0, lambda=0)", {"alpha": 0.0, "lam": 0.0})]:
        res = factorize_model(model, ratio=args.ablation_ratio)
        after, secs = pela(res.model, dataclasses.replace(tc, **changes))
        ablation.append({"variant": label, "k": args.ablation_ratio, "acc_after": after, "train_seconds": secs})
        print(f"ablation {label}: {after:.4f}", flush=True)

    digits = None
    if not args.skip_digits_timing:
        d = load_default_model("digits", progress=False)
        dx, dy = load_dataset("digits").x_train, load_dataset("digits").y_train
        dtest = load_dataset("digits")
        d_train = from_arrays(adapt_images(dx, d.input_shape, d.preprocessing), dy, name="digits train")
        d_acc = accuracy_fn(from_arrays(adapt_images(dtest.x_test, d.input_shape, d.preprocessing), dtest.y_test))
        res = factorize_model(d.model, ratio=2)
        dcfg = TrainConfig(epochs=10, batch_size=64, lr=1e-3, alpha=1.0, lam=0.1, scope="factors", progress=False)
        t0 = time.perf_counter()
        before = d_acc(res.model)
        train_pela(res.model, d.model, d_train, dcfg)
        digits = {"k": 2, "schedule": dataclasses.asdict(dcfg), "seconds": time.perf_counter() - t0,
                  "acc_original": d_acc(d.model), "acc_before": before, "acc_after": d_acc(res.model)}
        print(f"digits k=2 PELA training: {digits['seconds']:.1f}s", flush=True)

    result = {"benchmark": "fashion_methods", "model": loaded.source, "model_test_accuracy": acc_orig,
              "started": started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
              "calibration": {"samples": len(x_cal), "source": "fashion-mnist train split, seeded"},
              "training": {**dataclasses.asdict(tc), "samples": len(x_tr)},
              "environment": environment_info(), "methods": rows, "sensitivity_vs_uniform": sens_rows,
              "ablation": ablation, "digits_timing": digits}
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    md = ["# Fashion-MNIST ViT: low-rank methods before/after PELA training", "",
          f"Measured {result['finished']} with `{result['command']}` (2 CPU threads). Original test accuracy "
          f"{acc_orig:.2%} on 10,000 test images. Calibration: {len(x_cal)} seeded train images. PELA training: "
          f"{args.epochs} epochs on {len(x_tr)} train images, factors only, alpha=1, lambda=0.1, lr 1e-3.", "",
          "| k | method | params in factorized layers | acc. before training | acc. after PELA | gap to original |",
          "|---:|---|---|---:|---:|---:|"]
    md += [f"| {r['k']:g} | {r['method']} | {r['params_factorized_before']:,} → {r['params_factorized_after']:,} | "
           f"{r['acc_before']:.2%} | {r['acc_after']:.2%} | {100 * (r['acc_after'] - acc_orig):+.2f} pt |" for r in rows]
    md += ["", "Sensitivity-based ranks vs the uniform ratio (plain SVD, before training):", "",
           "| k | uniform acc. (params) | sensitivity acc. (params) |", "|---:|---:|---:|"]
    md += [f"| {r['k']:g} | {r['uniform_acc']:.2%} ({r['uniform_params']:,}) | {r['sensitivity_acc']:.2%} "
           f"({r['sensitivity_params']:,}) |" for r in sens_rows]
    md += ["", f"Ablation at k={args.ablation_ratio:g} (plain SVD init, same training budget):", "",
           "| variant | acc. after PELA |", "|---|---:|"]
    md += [f"| {a['variant']} | {a['acc_after']:.2%} |" for a in ablation]
    if digits:
        md += ["", f"Digits default, k=2, PELA training 10 epochs on 1,347 images: {digits['seconds']:.1f} s "
               f"(accuracy {digits['acc_before']:.2%} → {digits['acc_after']:.2%}; original {digits['acc_original']:.2%})."]
    (out / f"{args.name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
