"""Choosing how each structured layer is deployed, by measuring it.

Which form is fastest (the structure as small ops, two low-rank GEMMs, or one dense
GEMM) depends on the layer's shape and the runtime, so each available form is
exported alone for the layer's real input (batch × tokens × in), checked against the
PyTorch layer, and timed on ONNX Runtime; the fastest wins unless the user overrides
it. An override naming a form the layer cannot take is an error, never replaced.
Layers with the same type, config and deployed size are timed once. No DFT op is
allowed in a deployed graph unless asked for: TensorRT <= 10 cannot parse it.
"""
from __future__ import annotations

import copy
import io
import json
import warnings
from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from ..measure.latency import time_callable
from ..errors import ArtifactError, ExportError, OptionError, VerificationError
from ..export.params import count_onnx_params
from ..export.runtime import ort_session
from ..lowrank.select import set_submodule
from .base import LOWERINGS, LoweringUnavailable, StructuredLinear
from .lowering_plan import Candidate, LayerPlan, LoweringPlan

__all__ = ["DFT_OPS", "Candidate", "LayerPlan", "LoweringPlan", "apply_lowering", "assert_no_dft", "find_dft",
           "infer_tokens", "layer_onnx", "plan_lowering"]

#: ONNX ops that are (or lower to) a DFT; TensorRT <= 10 parses none of them.
DFT_OPS: frozenset[str] = frozenset({"DFT", "STFT", "Rfft", "Irfft", "FFT", "IFFT"})
_DFT_FIX = "lower those layers to 'dense' or 'lowrank' (or to 'structured' without FFT), or pass allow_dft=True " \
           "if the target runtime has a DFT op"


def infer_tokens(model: nn.Module) -> tuple[int, str]:
    """Tokens per sample a ViT's linears see: patches + prefix tokens (timm), from the model's config."""
    embed = getattr(model, "patch_embed", None)
    patches = getattr(embed, "num_patches", None)
    if isinstance(patches, int) and patches > 0:
        prefix = int(getattr(model, "num_prefix_tokens", 1 if getattr(model, "cls_token", None) is not None else 0))
        return patches + prefix, f"model config: {patches} patches + {prefix} prefix token(s)"
    raise OptionError(f"cannot tell how many tokens the linears of {type(model).__name__} see",
                      fix="pass tokens=N (--tokens N): the sequence length each structured layer is applied to")


def find_dft(onnx_model: onnx.ModelProto) -> list[str]:
    """Names (or op@index) of every DFT-like node, subgraphs included."""
    found: list[str] = []

    def walk(graph: onnx.GraphProto) -> None:
        for i, node in enumerate(graph.node):
            if node.op_type in DFT_OPS:
                found.append(f"{node.name or node.op_type + '@' + str(i)} ({node.op_type})")
            for attr in node.attribute:
                for g in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                    walk(g)

    walk(onnx_model.graph)
    return found


def assert_no_dft(onnx_model: onnx.ModelProto, *, allow_dft: bool = False, where: str = "exported model") -> None:
    """``ExportError`` naming every DFT node unless ``allow_dft``."""
    nodes = [] if allow_dft else find_dft(onnx_model)
    if nodes:
        raise ExportError(f"the graph holds {len(nodes)} DFT node(s), which TensorRT <= 10 cannot parse: "
                          f"{', '.join(nodes[:10])}", fix=_DFT_FIX, where=where)


def layer_onnx(module: nn.Module, example: torch.Tensor, *, opset: int = 17, exporter: str = "legacy",
               where: str = "layer") -> onnx.ModelProto:
    """One module exported alone (in memory); ``legacy`` is ~100x faster than dynamo for tiny graphs."""
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                prog = torch.onnx.export(module.eval(), (example,), None, dynamo=True, opset_version=max(opset, 18),
                                         input_names=["x"], output_names=["y"], verbose=False, report=False)
                return prog.model_proto  # type: ignore[union-attr]
            buf = io.BytesIO()
            torch.onnx.export(module.eval(), (example,), buf, dynamo=False, opset_version=opset,
                              input_names=["x"], output_names=["y"], do_constant_folding=True)
            return onnx.load_from_string(buf.getvalue())
    except Exception as exc:
        raise ExportError(f"{type(module).__name__} cannot be exported to ONNX: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:300] if str(exc) else ''}",
                          fix="choose another form for this layer (form override), or report the layer type",
                          where=where) from exc


def _override(name: str, form: str | None, overrides: Mapping[str, str]) -> tuple[str, int | None, str] | None:
    """(form, rank, source) the user asked for this layer: first matching glob, else the global form."""
    for glob, value in overrides.items():
        if fnmatchcase(name, glob):
            return (*_parse_form(value, f"override {glob!r}"), f"user override ({glob} -> {value})")
    if form is not None:
        return (*_parse_form(form, "form"), f"user override (all layers -> {form})")
    return None


def _parse_form(text: str, what: str) -> tuple[str, int | None]:
    """``"structured"``, ``"dense"``, ``"lowrank"`` or ``"lowrank:R"`` (a truncated rank the user chose)."""
    form, _, rank = text.partition(":")
    ok = form in LOWERINGS and (not rank or (form == "lowrank" and rank.isdigit() and int(rank) >= 1))
    if not ok:
        raise OptionError(f"{what}: unknown lowering {text!r}",
                          fix=f"use one of: {', '.join(LOWERINGS)} (or lowrank:R for a truncated rank R)")
    return form, int(rank) if rank else None


def _measure(module: nn.Module, layer: StructuredLinear, x: torch.Tensor, name: str, form: str, rank: int | None,
             allow_dft: bool, timing: dict[str, Any], cache: dict[str, float]) -> Candidate:
    """Export one form, check it has no DFT and matches the layer, time it (once per identical layer)."""
    where = f"{name} [{form}]"
    exporter = timing["exporter"]
    try:
        proto = layer_onnx(module, x, opset=timing["opset"], exporter=exporter, where=where)
    except ExportError as exc:  # e.g. the legacy exporter has no FFT: the other one may; recorded
        other = "dynamo" if exporter == "legacy" else "legacy"
        proto = layer_onnx(module, x, opset=timing["opset"], exporter=other, where=where)
        exporter = f"{other} ({exporter} failed: {exc.problem.split(': ', 1)[-1][:120]})"
    assert_no_dft(proto, allow_dft=allow_dft, where=where)
    deployed = count_onnx_params(proto)
    sess = ort_session(proto.SerializeToString(), threads=timing["threads"])
    feeds = {sess.get_inputs()[0].name: x.numpy()}
    got = sess.run(None, feeds)[0]
    with torch.no_grad():
        ref = layer(x).numpy()
    err = float(np.abs(got - ref).max())
    if rank is None and err > 1e-3 * max(float(np.abs(ref).max()), 1e-6) + 1e-5:
        raise VerificationError(f"the {form} form of this {layer.kind} layer differs from the PyTorch layer by "
                                f"{err:.3g} (max |output| {float(np.abs(ref).max()):.3g})",
                                fix=f"choose another form for this layer; report the {layer.kind} lowering bug",
                                where=name)
    key = json.dumps([layer.kind, layer.config(), form, rank, deployed], sort_keys=True, default=str)
    if key not in cache:
        stats = time_callable(lambda: sess.run(None, feeds), timing["warmup"], timing["runs"], int(x.shape[0]),
                              threads=timing["threads"], allow_few_runs=True)
        cache[key] = stats.p50_ms
        timing["first"][key] = name
    return Candidate(form, cache[key], deployed, err, timing["first"][key], rank, exporter)


def plan_lowering(model: nn.Module, *, tokens: int | None = None, batch: int = 1, form: str | None = None,
                  overrides: Mapping[str, str] | None = None, allow_dft: bool = False, threads: int = 1,
                  warmup: int = 3, runs: int = 20, opset: int = 17, exporter: str = "legacy",
                  seed: int = 0) -> LoweringPlan:
    """Measure every available form of every structured layer and choose one per layer.

    ``form`` overrides all layers, ``overrides`` (glob → form, first match wins) single
    layers; ``"lowrank:R"`` asks for a rank-R truncation. ``tokens`` defaults to the
    model's config (:func:`infer_tokens`); pass it for models without one.
    """
    overrides = dict(overrides or {})
    for what, value in [("form", form), *((f"override {g!r}", v) for g, v in overrides.items())]:
        if value is not None:
            _parse_form(value, what)
    if exporter not in ("legacy", "dynamo"):
        raise OptionError(f"unknown exporter {exporter!r}", fix="use 'legacy' (fast) or 'dynamo'")
    for label, v, low in (("batch", batch, 1), ("threads", threads, 1), ("runs", runs, 1), ("warmup", warmup, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise OptionError(f"lowering {label} must be an integer >= {low}, got {v!r}", fix=f"pass a valid {label}")
    if tokens is None:
        tokens, origin = infer_tokens(model)
    elif isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise OptionError(f"tokens must be an integer >= 1, got {tokens!r}", fix="pass --tokens N")
    else:
        origin = "user"
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, StructuredLinear)]
    if not layers:
        raise OptionError(f"{type(model).__name__} holds no structured layer to lower",
                          fix="structure the model first (structure_model or load_structured)")
    settings = {"tokens": tokens, "tokens_origin": origin, "batch": batch, "threads": threads, "warmup": warmup,
                "runs": runs, "allow_dft": allow_dft, "opset": opset, "exporter": exporter, "form": form,
                "overrides": overrides, "backend": "onnxruntime CPUExecutionProvider"}
    timing = {"threads": threads, "warmup": warmup, "runs": runs, "opset": opset, "exporter": exporter, "first": {}}
    was_training = model.training
    model.eval()
    try:
        return _plan(layers, LoweringPlan(settings=settings), form, overrides, allow_dft, batch, tokens, timing, seed)
    finally:
        model.train(was_training)


def _plan(layers: list[tuple[str, StructuredLinear]], plan: LoweringPlan, form: str | None,
          overrides: dict[str, str], allow_dft: bool, batch: int, tokens: int, timing: dict[str, Any],
          seed: int) -> LoweringPlan:
    cache: dict[str, float] = {}
    gen = torch.Generator().manual_seed(seed)
    for name, layer in layers:
        x = torch.randn(batch, tokens, layer.in_features, generator=gen)
        avail = layer.available_lowerings(allow_dft=allow_dft)
        lp = LayerPlan(name, layer.kind, layer.in_features, layer.out_features,
                       unavailable={f: r for f, r in avail.items() if r is not None})
        asked = _override(name, form, overrides)
        if asked is not None and asked[0] in lp.unavailable and asked[1] is None:
            raise LoweringUnavailable(f"{layer.kind} layer cannot be lowered to {asked[0]!r}: "
                                      f"{lp.unavailable[asked[0]]}", where=name,
                                      fix=f"choose one of {[f for f in avail if avail[f] is None]} for this layer "
                                          "(an override glob naming it)")
        forms = [(f, None) for f in LOWERINGS if avail.get(f, "not offered by the layer type") is None]
        if asked is not None and asked[1] is not None:
            forms.append((asked[0], asked[1]))
        for f, rank in forms:
            try:
                module = layer.lowered(f, rank=rank, allow_dft=allow_dft)
            except LoweringUnavailable as exc:
                raise LoweringUnavailable(exc.problem, fix=exc.fix, where=name) from None
            lp.candidates.append(_measure(module, layer, x, name, f, rank, allow_dft, timing, cache))
        if asked is not None:
            lp.chosen, lp.rank, lp.why = asked
        elif len(lp.candidates) == 1:
            lp.chosen, lp.why = lp.candidates[0].form, "only form available"
        else:
            lp.chosen, lp.why = min(lp.candidates, key=lambda c: c.p50_ms).form, "fastest measured"
        plan.layers.append(lp)
    return plan


def apply_lowering(model: nn.Module, plan: LoweringPlan, *, inplace: bool = False) -> nn.Module:
    """The model with every planned layer replaced by its chosen plain-op form (for export)."""
    target = model if inplace else copy.deepcopy(model)
    for lp in plan.layers:
        try:
            layer = target.get_submodule(lp.name)
        except AttributeError:
            layer = None
        if not isinstance(layer, StructuredLinear) or layer.kind != lp.kind:
            raise ArtifactError(f"the plan lowers a {lp.kind} layer here, the model holds "
                                f"{type(layer).__name__ if layer is not None else 'nothing'}",
                                fix="make the plan with plan_lowering on this same model", where=lp.name)
        try:
            new = layer.lowered(lp.chosen, rank=lp.rank, allow_dft=plan.allow_dft)
        except LoweringUnavailable as exc:
            raise LoweringUnavailable(exc.problem, fix=exc.fix, where=lp.name) from None
        new.train(False)
        set_submodule(target, lp.name, new)
    return target.eval()
