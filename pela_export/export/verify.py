"""PyTorch vs ONNX Runtime (CPU) on several batches, judged by the one comparator.

Several batch sizes because a wrongly specialised batch axis only shows up at a
batch size other than the export example's; real data because random inputs can
hide saturation (e.g. softmax) problems.
"""
from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputShapeError, OptionError, VerificationError
from ..models.base import LoadedModel, Tolerance
from ..models.io import SEQUENCE, as_feeds, batch_len
from .compare import DEFAULT_FIX, Comparison, compare_outputs
from .runtime import ort_run, ort_session


@dataclass
class VerifyResult:
    """Per-output aggregates over all inputs plus every per-input comparison."""

    ok: bool
    tol: Tolerance
    onnx_path: Path
    batch_sizes: list[int]
    outputs: dict[str, dict[str, Any]]
    comparisons: list[Comparison] = field(default_factory=list)
    seconds: float = 0.0
    shapes: list[dict[str, list[int]]] = field(default_factory=list)

    def failures(self) -> list[str]:
        return [f"input #{i} (batch {self.batch_sizes[i]}): {line}"
                for i, c in enumerate(self.comparisons) for line in c.failures()]

    def raise_if_failed(self, stage: str = "verify", *, fix: str = DEFAULT_FIX) -> None:
        if self.ok:
            return
        bad = sum(1 for c in self.comparisons if not c.ok)
        raise VerificationError(
            f"ONNX Runtime disagrees with PyTorch on {bad} of {len(self.comparisons)} input batch(es) "
            f"(atol={self.tol.atol:g}, rtol={self.tol.rtol:g})",
            failures=self.failures(), fix=fix, where=stage)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "tolerance": asdict(self.tol), "onnx": str(self.onnx_path),
                "batch_sizes": self.batch_sizes, "shapes": self.shapes, "outputs": self.outputs, "seconds": round(self.seconds, 3),
                "per_input": [c.to_dict() for c in self.comparisons]}


Feeds = Mapping[str, np.ndarray]


def _torch_outputs(model: nn.Module, feeds: Feeds, output_names: list[str], onnx_names: list[str]) -> dict[str, np.ndarray]:
    """Name PyTorch's outputs like the ONNX graph's (single tensor, tuple or dict)."""
    device = next(model.parameters(), torch.empty(0)).device  # the model may live on a GPU
    with torch.no_grad():
        out = model(*(torch.from_numpy(np.ascontiguousarray(x)).to(device) for x in feeds.values()))
    if isinstance(out, torch.Tensor):
        return {output_names[0]: out.detach().cpu().numpy()}
    if isinstance(out, dict):
        return {str(k): v.detach().cpu().numpy() for k, v in out.items() if isinstance(v, torch.Tensor)}
    if isinstance(out, (tuple, list)):
        tensors = [v for v in out if isinstance(v, torch.Tensor)]
        names = (output_names if len(output_names) == len(tensors) else
                 onnx_names if len(onnx_names) == len(tensors) else
                 [f"{output_names[0]}_{i}" for i in range(len(tensors))])
        return {n: t.detach().cpu().numpy() for n, t in zip(names, tensors, strict=True)}
    raise VerificationError(f"model returned {type(out).__name__}, not a tensor/tuple/dict",
                            fix="wrap the model so forward returns a tensor")


def describe_feeds(feeds: Feeds) -> dict[str, list[int]]:
    return {n: [int(d) for d in np.shape(v)] for n, v in feeds.items()}


def _aggregate(name: str, comps: list[Comparison]) -> dict[str, Any]:
    stats = [o for c in comps for o in c.outputs if o.name == name]
    numeric = [s for s in stats if s.max_abs_err is not None]
    total = sum(s.numel for s in numeric) or 1
    return {
        "ok": all(s.ok for s in stats),
        "inputs": len(stats),
        "failed_inputs": sum(1 for s in stats if not s.ok),
        "max_abs_err": max((s.max_abs_err for s in numeric), default=None),
        "mean_abs_err": (sum((s.mean_abs_err or 0.0) * s.numel for s in numeric) / total) if numeric else None,
        "max_rel_err": max((s.max_rel_err for s in numeric), default=None),
        "num_out_of_tol": sum(s.num_out_of_tol for s in stats),
        "problems": sorted({s.problem for s in stats if s.problem and s.max_abs_err is None}),
    }


def verify_onnx(torch_model: nn.Module, onnx_path: str | os.PathLike[str], inputs: Sequence[np.ndarray | Feeds],
                tol: Tolerance, input_name: str | Sequence[str], output_name: str | Sequence[str], *,
                threads: int | None = None) -> VerifyResult:
    """Run both backends on each input batch; never raises on disagreement (see ``ok``).

    ``input_name``/``output_name`` may list several names (multi-input models); each
    batch is then a dict of arrays, fed to PyTorch positionally in that order.
    """
    if not inputs:
        raise OptionError("no verification inputs", fix="pass at least one input batch")
    input_names = [input_name] if isinstance(input_name, str) else list(input_name)
    output_names = [output_name] if isinstance(output_name, str) else list(output_name)
    start = time.perf_counter()
    session = ort_session(onnx_path, threads=threads)
    onnx_inputs = [i.name for i in session.get_inputs()]
    missing = [n for n in input_names if n not in onnx_inputs]
    if missing or len(onnx_inputs) != len(input_names):
        raise InputShapeError(f"ONNX inputs are {onnx_inputs}, the model declares {input_names}",
                              fix="export again with the same input names, or pass the graph's input names",
                              where=str(onnx_path))
    onnx_names = [o.name for o in session.get_outputs()]
    was_training = torch_model.training
    torch_model.eval()
    comps: list[Comparison] = []
    feeds_list = [as_feeds(x, input_names) for x in inputs]
    try:
        for feeds in feeds_list:
            ref = _torch_outputs(torch_model, feeds, output_names, onnx_names)
            cand = ort_run(session, feeds)
            comps.append(compare_outputs(ref, cand, tol, ref_name="pytorch", cand_name="onnxruntime"))
    finally:
        torch_model.train(was_training)
    names = list(dict.fromkeys(o.name for c in comps for o in c.outputs))
    return VerifyResult(ok=all(c.ok for c in comps), tol=tol, onnx_path=Path(onnx_path),
                        batch_sizes=[batch_len(f) for f in feeds_list],
                        outputs={n: _aggregate(n, comps) for n in names}, comparisons=comps,
                        seconds=time.perf_counter() - start,
                        shapes=[describe_feeds(f) for f in feeds_list])


def make_verification_inputs(loaded: LoadedModel, real: np.ndarray | Feeds | None = None, n_random: int = 3,
                             batch_sizes: Sequence[int] = (1, 4), seed: int = 0) -> list[Any]:
    """Seeded random batches cycling through ``batch_sizes``, then ``real`` split into
    batches of at most ``max(batch_sizes)``.

    Single-tensor models get arrays; other models get ``{input: array}`` dicts. Models with a
    sequence axis get padded batches at two sequence lengths (at least four batches), since a
    mask that is ignored, or a length that was specialised, only shows on another length.
    """
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise OptionError(f"batch sizes must be positive, got {list(batch_sizes)}",
                          fix="use positive batch sizes, e.g. (1, 4)")
    if n_random < 0:
        raise OptionError(f"n_random must be >= 0, got {n_random}", fix="pass n_random >= 0")
    spec = loaded.spec
    if not spec.is_single_tensor() or SEQUENCE in spec.axes:
        out: list[Any] = []
        lengths = _sequence_lengths(loaded)
        count = max(n_random, 2 * len(lengths)) if lengths else n_random
        for i in range(count):
            b = batch_sizes[i % len(batch_sizes)]
            sizes = {SEQUENCE: lengths[(i // len(batch_sizes)) % len(lengths)]} if lengths else None
            out.append(spec.dummy(max(b, 2) if lengths else b, seed + i, sizes))
        if real is not None:
            feeds = as_feeds(real, spec.input_names)
            n, step = batch_len(feeds), max(batch_sizes)
            out += [{k: v[i:i + step] for k, v in feeds.items()} for i in range(0, n, step)]
        if not out:
            raise OptionError("no verification inputs (n_random=0 and no real data)",
                              fix="pass n_random >= 1 or real data (--data)")
        return out
    out = [loaded.dummy_input(batch_sizes[i % len(batch_sizes)], seed=seed + i).numpy() for i in range(n_random)]
    if real is not None:
        real = np.asarray(real)
        if tuple(real.shape[1:]) != tuple(loaded.input_shape):
            raise InputShapeError(
                f"real inputs have shape {list(real.shape)}; the model takes "
                f"[batch, {', '.join(map(str, loaded.input_shape))}]",
                fix="pass --input-shape matching the data, or --data matching the model")
        dtype = torch.empty((), dtype=loaded.input_dtype).numpy().dtype
        step = max(batch_sizes)
        out += [np.ascontiguousarray(real[i:i + step].astype(dtype, copy=False)) for i in range(0, len(real), step)]
    if not out:
        raise OptionError("no verification inputs (n_random=0 and no real data)",
                          fix="pass n_random >= 1 or real data (--data)")
    return out


def _sequence_lengths(loaded: LoadedModel) -> list[int]:
    """Two different sequence lengths within the model's range (empty: no sequence axis)."""
    rng = loaded.spec.axes.get(SEQUENCE)
    if rng is None:
        return []
    long = max(2, min(rng.opt, rng.max))
    short = max(2, min(rng.max, long // 4 + 3))
    return list(dict.fromkeys([long, short if short != long else max(2, long - 1)]))
