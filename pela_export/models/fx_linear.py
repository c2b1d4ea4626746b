"""Give a torch.export program its ``nn.Linear`` modules back.

``ExportedProgram.module()`` calls ``aten.linear`` on raw parameters, so there is
no ``nn.Linear`` to factorize. Rewriting each such call into a ``call_module``
of a real ``nn.Linear`` (sharing the same parameters, at the original path)
lets the normal compression stage work on ``.pt2`` files unchanged.
"""
from __future__ import annotations

import torch
from torch import fx, nn

from ..lowrank.select import set_submodule


def _owner(gm: nn.Module, target: str) -> tuple[str, nn.Module] | None:
    path, _, leaf = target.rpartition(".")
    if leaf != "weight" or not path:
        return None
    try:
        owner = gm.get_submodule(path)
    except AttributeError:
        return None
    names = {n for n, _ in owner.named_parameters(recurse=False)}
    if list(owner.children()) or list(owner.buffers(recurse=False)) or not names <= {"weight", "bias"}:
        return None
    return path, owner


def linears_to_modules(gm: fx.GraphModule) -> fx.GraphModule:
    """Replace ``aten.linear(x, W, b)`` on parameters by ``nn.Linear`` submodules (in place)."""
    changed = False
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not torch.ops.aten.linear.default:
            continue
        x, w_node, *rest = node.args
        b_node = rest[0] if rest else None
        if getattr(w_node, "op", None) != "get_attr" or len(w_node.users) != 1:
            continue
        found = _owner(gm, w_node.target)
        if found is None:
            continue
        path, owner = found
        if b_node is not None and (getattr(b_node, "op", None) != "get_attr" or b_node.target != f"{path}.bias"):
            continue
        weight = owner.weight
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=b_node is not None)
        linear.weight = weight
        if b_node is not None:
            linear.bias = owner.bias
        set_submodule(gm, path, linear)
        with gm.graph.inserting_before(node):
            new = gm.graph.call_module(path, (x,))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        changed = True
    if changed:
        gm.graph.eliminate_dead_code()
        gm.recompile()
    return gm
