"""``pela-export inspect``: what a compression would do to a model, or what an ONNX file holds."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from torch import nn

from ..lowrank import LowRankLayer, factorize_model, format_rank_table
from ..lowrank.select import classify_layers, describe_selection, explain_empty
from ..measure import count_params
from ..models.sources import resolve_model
from .compress import trial_forward


def _onnx_factor_pairs(model) -> list[tuple[str, str, int]]:  # noqa: ANN001 - onnx.ModelProto
    """MatMul→MatMul chains whose weights are initializers and whose inner dim is smaller than both ends."""
    inits = {i.name: tuple(i.dims) for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    pairs = []
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2 or node.input[1] not in inits:
            continue
        prev = producers.get(node.input[0])
        if prev is None or prev.op_type not in ("MatMul", "Gemm") or len(prev.input) < 2 or prev.input[1] not in inits:
            continue
        a, b = inits[prev.input[1]], inits[node.input[1]]
        if len(a) == 2 and len(b) == 2:
            rank = min(a) if min(a) == min(b) else 0
            if rank and rank < max(a) and rank < max(b):
                pairs.append((prev.input[1], node.input[1], rank))
    return pairs


def inspect_onnx(path: Path) -> str:
    from ..export import load_onnx
    from ..export.params import count_onnx_params

    model = load_onnx(path)
    ops = Counter(n.op_type for n in model.graph.node)
    pairs = _onnx_factor_pairs(model)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    lines = [
        f"ONNX file: {path}",
        f"opset: {opset}   nodes: {len(model.graph.node)}   parameters: {count_onnx_params(model):,}",
        "inputs:  " + ", ".join(f"{i.name}{[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]}" for i in model.graph.input),
        "outputs: " + ", ".join(f"{o.name}{[d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]}" for o in model.graph.output),
        "ops: " + ", ".join(f"{k}×{v}" for k, v in ops.most_common()),
        f"low-rank factor pairs (MatMul→MatMul through a narrower inner dim): {len(pairs)}",
    ]
    lines += [f"  {a} -> {b} (rank {r})" for a, b, r in pairs[:50]]
    return "\n".join(lines)


def _no_pretrained(pretrained: bool, target: str, kind: str) -> None:
    """--pretrained names weights to load; a saved file brings its own, so the flag would be ignored."""
    if pretrained:
        from ..errors import OptionError

        raise OptionError(f"--pretrained loads a timm model's weights, but {target} is {kind} with its own",
                          fix="drop --pretrained, or pass timm:NAME")


def inspect(target: str | None, *, checkpoint: str | None = None, input_shape: tuple[int, ...] | None = None,
            ratio: float | None = None, method: str = "svd", rank_policy: str = "ratio", align: int | None = None,
            include: list[str] | None = None, exclude: list[str] | None = None, structure_spec: str | None = None,
            tokens: int | None = None, remeasure: bool = False, conv_decomposition: str | None = None,
            max_length: int | None = None, hidden_state: bool = False, pretrained: bool = False) -> str:
    """Summary text: for ``*.onnx`` the graph's parameters and factor pairs; for a saved structured model its
    layer types, parameters and lowering choices; else the rank table a compression gives."""
    if target and target.endswith(".onnx"):
        _no_pretrained(pretrained, target, "an ONNX file")
        return inspect_onnx(Path(target))
    from ..structured.inspect import find_structured, inspect_structured

    found = find_structured(target, checkpoint, structure_spec)
    if found is not None:
        _no_pretrained(pretrained, target or "the --out directory", "a saved structured model")
        return inspect_structured(*found, input_shape=input_shape, tokens=tokens, measure=remeasure)
    loaded = resolve_model(target, checkpoint, input_shape, max_length=max_length, hidden_state=hidden_state,
                           pretrained=pretrained)
    already = sum(isinstance(m, LowRankLayer) for m in loaded.model.modules())
    res = factorize_model(loaded.model, ratio=ratio, method=method, rank_policy=rank_policy, align=align,
                          include=include, exclude=exclude, conv_decomposition=conv_decomposition,
                          trial=trial_forward(loaded))
    head = [f"model: {loaded.name} ({loaded.source}), input {list(loaded.input_shape)} ({loaded.input_shape_origin})",
            f"parameters: {count_params(loaded.model):,} -> {count_params(res.model):,}"
            + (f" at k={res.ratio:g}" if res.ratio is not None else f" by --rank-policy {rank_policy}") + " "
            f"(dry run; nothing written)"]
    if already:
        head.append(f"already holds {already} factorized (low-rank) layers")
    return "\n".join(head) + "\n\n" + format_selection(loaded.model, include, exclude) + "\n\n" + format_rank_table(res)


def format_selection(model: nn.Module, include: list[str] | None, exclude: list[str] | None) -> str:
    """Every nn.Linear/nn.Conv2d with in/out features (a conv's channels and kernel), whether the selection
    chose it, and why (chosen first)."""
    choices = classify_layers(model, include, exclude)
    lines = [describe_selection(include, exclude, choices), "",
             "| layer | type | in | out | chosen | reason |", "|---|---|---:|---:|---|---|"]
    for c in sorted(choices, key=lambda c: not c.chosen):
        m = c.module
        if isinstance(m, nn.Conv2d):
            kind = f"Conv2d {m.kernel_size[0]}x{m.kernel_size[1]}" + (f" g{m.groups}" if m.groups != 1 else "")
            cin, cout = m.in_channels, m.out_channels
        else:
            kind, cin, cout = "Linear", m.in_features, m.out_features
        lines.append(f"| {c.name} | {kind} | {cin} | {cout} | {'yes' if c.chosen else 'no'} | {c.reason} |")
    if not any(c.chosen for c in choices):
        lines.append(f"\nnothing to factorize: {explain_empty(model, choices)}; choose layers with --include GLOB")
    return "\n".join(lines)
