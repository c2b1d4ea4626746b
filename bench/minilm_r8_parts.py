"""The pieces bench/minilm_r8.py composes: the encoder wrappers (packed inputs, probe head, ONNX), the R8
documents, embeddings and scoring, the per-section result cache, PELA training and ONNX Runtime timing.
Imported by minilm_r8.py after it sets OMP_WAIT_POLICY (see there) and before torch would otherwise load."""
from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from minilm_r8_report import Scores
from torch import nn

from pela_export.lowrank import LowRankLinear
from pela_export.models.hf_text import pool

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
