"""Did the compression survive export? Parameter counts and low-rank factor checks.

A factorized layer only saves memory/compute if the ONNX graph keeps V (r×in) and
U (out×r) as two weights. Constant folding that multiplies them back into a dense
out×in matrix is numerically exact, so output verification cannot notice it; this
check can. Initializer names are useless here (dynamo folds ``W^T`` into ``val_N``,
the legacy exporter into ``onnx::MatMul_N``), so tensors are matched by value
(exact bytes, also transposed) and, failing that, by shape.

Counting rule (``count_onnx_params``): a tensor counts as a parameter if it is a
graph initializer or the ``value`` of a Constant node (also inside subgraphs), has a
floating-point dtype, and has more than one element. Integer tensors (shapes,
indices, axes) and one-element tensors (eps, scales, op constants) are skipped.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from ..errors import ParameterPreservationError
from ..lowrank.layer import LowRankLayer

_FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                          onnx.TensorProto.BFLOAT16})
_FIX = "use --simplifier none or onnxslim, or --legacy-exporter; if it persists, file a bug with the model"


def count_torch_params(model: nn.Module) -> int:
    """Unique parameters (a shared/tied parameter counts once)."""
    return sum(p.numel() for p in model.parameters())  # parameters() already de-duplicates by identity


def _onnx_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == onnx.AttributeProto.GRAPH:
                yield from _onnx_tensors(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _onnx_tensors(g)


def _is_param(t: onnx.TensorProto) -> bool:
    return t.data_type in _FLOAT_TYPES and int(np.prod(t.dims, dtype=np.int64)) > 1


def count_onnx_params(model: onnx.ModelProto) -> int:
    """Floating-point tensors with > 1 element in initializers and Constant nodes (see module doc)."""
    return sum(int(np.prod(t.dims, dtype=np.int64)) for t in _onnx_tensors(model.graph) if _is_param(t))


def _digest(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    return hashlib.blake2b(a.tobytes() + str((a.dtype.str, a.shape)).encode(), digest_size=16).hexdigest()


def _torch_digests(t: torch.Tensor) -> set[str]:
    a = t.detach().cpu().numpy()
    return {_digest(a), _digest(a.T)} if a.ndim == 2 else {_digest(a)}


@dataclass
class FactorReport:
    """One factorized layer (LowRankLinear or LowRankConv2d): were V and U found in the ONNX file, and how."""

    layer: str
    in_features: int
    out_features: int
    rank: int
    first_found: str  # "value", "slice" (inside a fused sibling GEMM's weight), "shape" or "missing"
    second_found: str
    dense_present: bool = False

    @property
    def ok(self) -> bool:
        return self.first_found != "missing" and self.second_found != "missing"


@dataclass
class ParamCheck:
    """Result of :func:`check_parameter_preservation` (JSON-ready via ``to_dict``).

    ``onnx_params`` = ``onnx_matched`` (equal to a torch parameter, maybe transposed)
    + ``onnx_buffers`` (equal to a torch buffer: masks, BN statistics)
    + ``onnx_derived_weights`` (equal to no torch tensor but shaped like a GEMM weight of
    the model, either orientation: what merged U·V or rescaled/duplicated weights look
    like) + ``onnx_derived_other`` (other folded constants, e.g. Swin's gathered
    relative-position bias, BN-fused conv kernels).
    These four count bit-identical tensors once (``onnx_params`` counts every copy);
    ``onnx_counted = onnx_matched + onnx_derived_weights`` is compared with
    ``torch_params_distinct``, which also counts bit-identical parameters once.
    """

    torch_params: int
    torch_params_distinct: int
    onnx_params: int
    onnx_matched: int
    onnx_buffers: int
    onnx_derived_weights: int
    onnx_derived_other: int
    onnx_counted: int
    rel_diff: float
    rel_tol: float
    count_ok: bool
    lowrank_layers: int
    factors: list[FactorReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def missing(self) -> list[FactorReport]:
        return [f for f in self.factors if not f.ok]

    @property
    def ok(self) -> bool:
        return self.count_ok and not self.missing

    def problems(self) -> list[str]:
        out = []
        for f in self.missing:
            which = [n for n, s in (("V (first)", f.first_found), ("U (second)", f.second_found)) if s == "missing"]
            line = (f"{f.layer}: factor {' and '.join(which)} (rank {f.rank}) not found in ONNX; expected "
                    f"{f.rank}×{f.in_features} and {f.out_features}×{f.rank} (or transposed)")
            if f.dense_present:
                line += (f"; a dense {f.out_features}×{f.in_features} initializer is present — "
                         "constant folding merged U·V back")
            out.append(line)
        if not self.count_ok:
            out.append(f"parameter count: ONNX holds {self.onnx_counted:,} weights vs {self.torch_params_distinct:,} "
                       f"in PyTorch ({self.rel_diff:+.2%}, allowed +{self.rel_tol:.0%}); "
                       f"{self.onnx_derived_weights:,} are in weight-shaped tensors that match no PyTorch tensor")
        return out

    def raise_if_failed(self, stage: str = "export") -> None:
        if self.ok:
            return
        raise ParameterPreservationError(
            "the ONNX graph does not preserve the compressed parameters:\n"
            + "\n".join(f"  - {p}" for p in self.problems()), fix=_FIX, where=stage)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        d["missing"] = [f.layer for f in self.missing]
        return d


def _fused_slice(w: torch.Tensor, wide: list[tuple[np.ndarray, str]]) -> str | None:
    """Digest of a 2-D ONNX weight holding ``w`` (either orientation) as a contiguous block of whole rows or
    columns beside others, as onnxsim writes one MatMul + Split for sibling GEMMs on the same input; else None."""
    a0 = w.detach().cpu().numpy()
    for a, d in wide:
        for m in (a0, a0.T):
            for axis in (0, 1):
                big, part = (a, m) if axis == 1 else (a.T, m.T)  # look for ``part`` among big's columns
                if big.shape[0] != part.shape[0] or big.shape[1] <= part.shape[1] or big.dtype != part.dtype:
                    continue
                for off in range(big.shape[1] - part.shape[1] + 1):
                    if np.array_equal(big[:, off:off + part.shape[1]], part):
                        return d
    return None


def _distinct_param_count(model: nn.Module) -> int:
    """Parameters with bit-identical values counted once: exporters de-duplicate equal
    initializers (e.g. freshly initialised LayerNorm weights are all ones)."""
    seen: set[str] = set()
    total = 0
    for p in model.parameters():
        key = _digest(p.detach().cpu().numpy())
        if key not in seen:
            seen.add(key)
            total += p.numel()
    return total


def check_parameter_preservation(torch_model: nn.Module, onnx_model: onnx.ModelProto, rel_tol: float = 0.01,
                                 *, allow_fewer: bool = True, raise_on_failure: bool = True) -> ParamCheck:
    """Find every factorized layer's two factors and compare weight counts.

    Fails when a factor is missing, or when the ONNX holds more than ``rel_tol`` more
    weights than PyTorch. Fewer weights (de-duplication, BN fusion, folded tables) is
    only a note unless ``allow_fewer=False``: it never undoes compression.
    """
    arrays = [numpy_helper.to_array(t) for t in _onnx_tensors(onnx_model.graph) if _is_param(t)]
    digests = [_digest(a) for a in arrays]
    present = set(digests)
    param_digests: set[str] = set()
    buffer_digests: set[str] = set()
    for p in torch_model.parameters():
        param_digests |= _torch_digests(p)
    for b in torch_model.buffers():
        if b.is_floating_point():
            buffer_digests |= _torch_digests(b)

    # Shapes a GEMM/conv weight of this model can have: every parameter of 2 or more dimensions and
    # every factorized layer's dense weight, in both orientations.
    weight_shapes: set[tuple[int, ...]] = set()
    for p in torch_model.parameters():
        if p.ndim >= 2:
            weight_shapes |= {tuple(p.shape), tuple(p.shape)[::-1]}
    for mod in torch_model.modules():
        if isinstance(mod, LowRankLayer):
            weight_shapes |= {mod.dense_shape, mod.dense_shape[::-1]}

    kinds: dict[str, str] = {}  # digest → matched / buffer / weight / other (bit-identical copies count once)
    free_shapes: Counter[tuple[int, ...]] = Counter()  # unclaimed weight-shaped tensors, for the shape fallback
    all_shapes: Counter[tuple[int, ...]] = Counter()
    for a, d in zip(arrays, digests, strict=True):
        kind = ("matched" if d in param_digests else "buffer" if d in buffer_digests
                else "weight" if tuple(a.shape) in weight_shapes else "other")
        kinds.setdefault(d, kind)
        if a.ndim >= 2:
            all_shapes[tuple(a.shape)] += 1
            if kind == "weight":
                free_shapes[tuple(a.shape)] += 1
    wide = [(a, d) for a, d in zip(arrays, digests, strict=True) if a.ndim == 2 and kinds[d] == "other"]

    def find(w: torch.Tensor) -> str:
        if _torch_digests(w) & present:
            return "value"
        d = _fused_slice(w, wide)  # simplifiers merge sibling GEMMs on one input (q/k/v first factors) into one
        if d is not None:
            kinds[d] = "matched"  # the fused weight is made of factors: it counts as compressed parameters
            return "slice"
        shape = tuple(w.shape)  # e.g. a dtype-converted copy: fall back to an unclaimed same-shape matrix
        for s in (shape, shape[::-1]):
            if free_shapes[s] > 0:
                free_shapes[s] -= 1
                return "shape"
        return "missing"

    factors = []
    for name, mod in torch_model.named_modules():
        if isinstance(mod, LowRankLayer):
            rep = FactorReport(layer=name or "<root>", in_features=mod.in_features, out_features=mod.out_features,
                               rank=mod.rank, first_found=find(mod.first.weight), second_found=find(mod.second.weight))
            if not rep.ok:
                dense = mod.dense_shape
                rep.dense_present = all_shapes[dense] + all_shapes[dense[::-1]] > 0
            factors.append(rep)

    sizes = {"matched": 0, "buffer": 0, "weight": 0, "other": 0}
    for a, d in zip(arrays, digests, strict=True):
        if d in kinds:
            sizes[kinds.pop(d)] += int(a.size)
    fused = sum(f.first_found == "slice" or f.second_found == "slice" for f in factors)
    n_torch = count_torch_params(torch_model)
    n_distinct = _distinct_param_count(torch_model)
    counted = sizes["matched"] + sizes["weight"]
    rel = (counted - n_distinct) / max(n_distinct, 1)
    count_ok = rel <= rel_tol and (allow_fewer or rel >= -rel_tol)
    notes = []
    if n_distinct != n_torch:
        notes.append(f"{n_torch - n_distinct:,} PyTorch parameters are bit-identical copies of others "
                     "(exporters store them once); compared against the distinct count")
    if sizes["other"]:
        notes.append(f"{sizes['other']:,} values in folded constants not shaped like a weight (e.g. attention "
                     "bias tables, fused conv kernels) are not counted")
    if fused:
        notes.append(f"{fused} factorized layer(s) share a GEMM with their siblings: the simplifier concatenated "
                     "factors that read the same input (e.g. q/k/v first factors) into one weight, still low-rank")
    if rel < -rel_tol:
        notes.append(f"ONNX holds {-rel:.2%} fewer weights than PyTorch (folding/fusion/unused parameters)")
    check = ParamCheck(
        torch_params=n_torch, torch_params_distinct=n_distinct, onnx_params=sum(int(a.size) for a in arrays),
        onnx_matched=sizes["matched"], onnx_buffers=sizes["buffer"], onnx_derived_weights=sizes["weight"],
        onnx_derived_other=sizes["other"], onnx_counted=counted, rel_diff=rel, rel_tol=rel_tol,
        count_ok=count_ok, lowrank_layers=len(factors), factors=factors, notes=notes)
    if raise_on_failure:
        check.raise_if_failed()
    return check
