"""Benchmark: which low-rank initialisation and rank policy keeps accuracy, before
and after PELA training, on the project's Fashion-MNIST ViT (10,000 test images).

For each k: plain SVD, FWSVD, ASVD and whitening SVD before training and after
the same PELA training budget; sensitivity-based ranks (KL and task-loss probes)
against the uniform ratio at equal parameters (before training); an ablation of
the loss terms; and the digits-default PELA training time. Writes
bench/results/<name>.json and .md.

Besides top-1 accuracy (whose standard error on 10,000 images is ~0.3 points,
larger than most differences at k <= 4), every model is scored by test
cross-entropy (NLL), KL divergence from the original's predictions and top-1
agreement with the original: these see every change of the logits and separate
the methods where accuracy cannot.

    python bench/fashion_methods.py                       # full table (~25 min on 2 CPU cores)
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

from pela_export.measure import environment_info
from pela_export.data import adapt_images, load_dataset
from pela_export.data.subset import model_split
from pela_export.lowrank import factorize_model
from pela_export.lowrank.probes import PROBES
from pela_export.lowrank.select import select_linears
from pela_export.lowrank.stats import collect_activation_stats, collect_fisher, with_fisher
from pela_export.models.default import load_default_model
from pela_export.train import TrainConfig, accuracy_fn, from_arrays, train_pela

Scores = dict[str, float]

METHODS = ("svd", "fwsvd", "asvd", "whiten")


def _data(loaded, split: str, n: int | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    return model_split("fashion-mnist", loaded, split, n, seed)


def _scorer(model: torch.nn.Module, x: np.ndarray, y: np.ndarray):
    """model → {acc, nll, kl (from the original), agree (with the original)} on (x, y)."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    @torch.no_grad()
    def logits(m: torch.nn.Module) -> torch.Tensor:
        m.eval()
        return torch.cat([m(xt[i:i + 500]) for i in range(0, len(xt), 500)])

    ref = logits(model).log_softmax(-1)

    def score(m: torch.nn.Module) -> Scores:
        out = logits(m).log_softmax(-1)
        return {"acc": float((out.argmax(-1) == yt).float().mean()),
                "nll": float(torch.nn.functional.nll_loss(out, yt)),
                "kl": float(torch.nn.functional.kl_div(out, ref, log_target=True, reduction="batchmean")),
                "agree": float((out.argmax(-1) == ref.argmax(-1)).float().mean())}

    return score


def _fmt(s: Scores) -> str:
    return f"{s['acc']:.2%} / {s['nll']:.3f} / {s['kl']:.4f} / {s['agree']:.2%}"


def _factorized_params(res) -> tuple[int, int]:
    t = res.totals()
    return t["params_before_factorized_layers"], t["params_after_factorized_layers"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ratios", type=float, nargs="+", default=[2.0, 3.0, 4.0, 6.0, 8.0])
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
    score = _scorer(model, x_test, y_test)
    acc_orig = acc(model)
    print(f"original: {acc_orig:.4f}", flush=True)
    tc = TrainConfig(epochs=args.epochs, batch_size=128, lr=1e-3, alpha=1.0, lam=0.1, scope="factors", progress=False)

    def pela(student, cfg: TrainConfig = tc) -> tuple[Scores, float]:
        t0 = time.perf_counter()
        train_pela(student, model, train, cfg)
        return score(student), time.perf_counter() - t0

    rows: list[dict[str, Any]] = []
    for k in args.ratios:
        for method in METHODS:
            res = factorize_model(model, ratio=k, method=method, stats=stats)
            before = score(res.model)
            after, secs = pela(res.model)
            p0, p1 = _factorized_params(res)
            rows.append({"k": k, "method": method, "before": before, "after": after, "train_seconds": secs,
                         "params_factorized_before": p0, "params_factorized_after": p1})
            print(f"k={k:g} {method:6s}: before {_fmt(before)} after {_fmt(after)} ({secs:.0f}s)", flush=True)

    sens_rows = []
    for k in args.ratios:
        for method in ("svd", "whiten"):
            uni = factorize_model(model, ratio=k, method=method, stats=stats)
            row = {"k": k, "method": method, "uniform": score(uni.model), "uniform_params": _factorized_params(uni)[1]}
            for probe in ("kl", "task"):
                t0 = time.perf_counter()
                sen = factorize_model(model, ratio=k, method=method, stats=stats, rank_policy="sensitivity",
                                      loss_fn=PROBES.get(probe)(model, cal_batches))
                row[probe] = {**score(sen.model), "params": _factorized_params(sen)[1],
                              "seconds": time.perf_counter() - t0}
            sens_rows.append(row)
            print(f"k={k:g} {method}: uniform {_fmt(row['uniform'])} | kl {_fmt(row['kl'])} | task {_fmt(row['task'])}",
                  flush=True)

    ablation = []
    for label, changes in [("full (alpha=1, lambda=0.1)", {}), ("no weight-perturbation (lambda=0)", {"lam": 0.0}),
                           ("strong weight-perturbation (lambda=10)", {"lam": 10.0}),
                           ("no feature distillation (alpha=0)", {"alpha": 0.0}),
                           ("task loss only (alpha=0, lambda=0)", {"alpha": 0.0, "lam": 0.0})]:
        res = factorize_model(model, ratio=args.ablation_ratio)
        after, secs = pela(res.model, dataclasses.replace(tc, **changes))
        ablation.append({"variant": label, "k": args.ablation_ratio, "after": after, "train_seconds": secs})
        print(f"ablation {label}: {_fmt(after)}", flush=True)

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
              "metrics": "acc = top-1, nll = test cross-entropy, kl = KL(original || model) per image, agree = top-1 agreement",
              "started": started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
              "calibration": {"samples": len(x_cal), "source": "fashion-mnist train split, seeded"},
              "training": {**dataclasses.asdict(tc), "samples": len(x_tr)},
              "environment": environment_info(), "methods": rows, "sensitivity_vs_uniform": sens_rows,
              "ablation": ablation, "digits_timing": digits}
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    o = score(model)
    md = ["# Fashion-MNIST ViT: low-rank methods before/after PELA training", "",
          f"Measured {result['finished']} with `{result['command']}` (2 CPU threads). Original on the 10,000 test "
          f"images: {o['acc']:.2%} top-1, NLL {o['nll']:.3f}. Calibration: {len(x_cal)} seeded train images. PELA "
          f"training: {args.epochs} epochs on {len(x_tr)} train images, factors only, alpha=1, lambda=0.1, lr 1e-3.", "",
          "Each cell: top-1 accuracy / test NLL / KL from the original / agreement with the original. Accuracy has a "
          "standard error of ~0.3 points here; NLL and KL see every change of the logits.", "",
          "| k | method | params in factorized layers | before training | after PELA | acc. gap after |",
          "|---:|---|---|---|---|---:|"]
    md += [f"| {r['k']:g} | {r['method']} | {r['params_factorized_before']:,} → {r['params_factorized_after']:,} | "
           f"{_fmt(r['before'])} | {_fmt(r['after'])} | {100 * (r['after']['acc'] - acc_orig):+.2f} pt |" for r in rows]
    md += ["", "Sensitivity-based ranks vs the uniform ratio at equal parameters (before training; probes measured on "
           "the calibration images: `kl` = KL from the original's outputs, `task` = cross-entropy with labels):", "",
           "| k | init | uniform (params) | sensitivity, kl probe (params) | sensitivity, task probe (params) |",
           "|---:|---|---|---|---|"]
    md += [f"| {r['k']:g} | {r['method']} | {_fmt(r['uniform'])} ({r['uniform_params']:,}) | {_fmt(r['kl'])} "
           f"({r['kl']['params']:,}) | {_fmt(r['task'])} ({r['task']['params']:,}) |" for r in sens_rows]
    md += ["", f"Ablation at k={args.ablation_ratio:g} (plain SVD init, same training budget):", "",
           "| variant | after PELA |", "|---|---|"]
    md += [f"| {a['variant']} | {_fmt(a['after'])} |" for a in ablation]
    if digits:
        md += ["", f"Digits default, k=2, PELA training 10 epochs on 1,347 images: {digits['seconds']:.1f} s "
               f"(accuracy {digits['acc_before']:.2%} → {digits['acc_after']:.2%}; original {digits['acc_original']:.2%})."]
    (out / f"{args.name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
