"""Parameter counting and LowRankLinear factor preservation."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from pela_export.errors import ParameterPreservationError
from pela_export.export import (
    check_parameter_preservation,
    count_onnx_params,
    count_torch_params,
    export_onnx,
    load_onnx,
    ort_run,
    ort_session,
)
from pela_export.lowrank.layer import LowRankLinear


def test_count_torch_params_counts_shared_once() -> None:
    a, b = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)
    b.weight = a.weight
    assert count_torch_params(nn.Sequential(a, b)) == 16
    assert count_torch_params(LowRankLinear(10, 6, 2)) == 2 * 10 + 6 * 2 + 6


def test_count_onnx_params_rule() -> None:
    inits = [
        numpy_helper.from_array(np.ones((3, 4), np.float32), "w"),        # 12: counted
        numpy_helper.from_array(np.ones(10, np.float16), "h"),            # 10: counted (fp16)
        numpy_helper.from_array(np.array(1.0, np.float32), "scalar"),     # skipped: scalar
        numpy_helper.from_array(np.array([1e-5], np.float32), "eps"),     # skipped: one element
        numpy_helper.from_array(np.arange(5, dtype=np.int64), "shape"),   # skipped: integer
    ]
    const_f = helper.make_node("Constant", [], ["cf"], value=numpy_helper.from_array(np.ones((2, 2), np.float32)))
    const_i = helper.make_node("Constant", [], ["ci"], value=numpy_helper.from_array(np.arange(4, dtype=np.int64)))
    add = helper.make_node("Add", ["x", "cf"], ["y"])
    graph = helper.make_graph([const_f, const_i, add], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])], initializer=inits)
    assert count_onnx_params(helper.make_model(graph)) == 12 + 10 + 4


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_faithful_mlp_export_passes(mlp_exports, exporter: str) -> None:
    model, res = mlp_exports(exporter)
    check = check_parameter_preservation(model, load_onnx(res.path))
    assert check.ok and check.count_ok and check.lowrank_layers == 1
    assert check.onnx_counted == check.torch_params_distinct == count_torch_params(model)
    json.dumps(check.to_dict())


def _merge_first_pair(proto: onnx.ModelProto, model: nn.Module) -> onnx.ModelProto:
    """Graph surgery: replace x→Gemm(V)→Gemm(U, b) by x→Gemm(U·V, b), as a folding bug would."""
    lr = model[0]
    v, u = lr.first.weight.detach().numpy(), lr.second.weight.detach().numpy()
    graph = proto.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    v_name = next(n for n, a in inits.items()
                  if (a.shape == v.shape and np.array_equal(a, v)) or (a.shape == v.T.shape and np.array_equal(a, v.T)))
    first = next(n for n in graph.node if v_name in n.input)
    second = next(n for n in graph.node if first.output[0] in n.input)
    u_name = second.input[1]
    bias = second.input[2]
    merged = helper.make_node("Gemm", [first.input[0], "merged.weight", bias], [second.output[0]], transB=1)
    nodes = [merged if n is first else n for n in graph.node if n is not second]
    kept = [i for i in graph.initializer if i.name not in (v_name, u_name)]
    kept.append(numpy_helper.from_array((u @ v).astype(np.float32), "merged.weight"))
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(proto)
    return proto


def test_merged_factors_are_caught_by_graph_surgery(mlp_exports, tmp_path: Path) -> None:
    model, res = mlp_exports("dynamo")
    merged = _merge_first_pair(load_onnx(res.path), model)
    path = tmp_path / "merged.onnx"
    onnx.save(merged, str(path))
    # numerically identical, so output verification cannot see it ...
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ort_run(ort_session(path), {"input": x})["logits"], ref, atol=1e-5)
    # ... but the parameter check does
    with pytest.raises(ParameterPreservationError) as info:
        check_parameter_preservation(model, load_onnx(path))
    text = str(info.value)
    assert "0: factor V (first) and U (second) (rank 4) not found" in text
    assert "dense 32×16 initializer is present" in text and "merged U·V back" in text
    assert "--simplifier none" in text
    check = check_parameter_preservation(model, merged, raise_on_failure=False)
    assert not check.ok and [f.layer for f in check.missing] == ["0"]
    assert check.onnx_derived_weights == 32 * 16 and not check.count_ok  # 512 dense vs 64+128 factor weights


def _densify(module: nn.Module) -> nn.Module:
    for name, child in list(module.named_children()):
        if isinstance(child, LowRankLinear):
            dense = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
            with torch.no_grad():
                dense.weight.copy_(child.weight_product)
                if child.bias is not None:
                    dense.bias.copy_(child.bias)
            setattr(module, name, dense)
        else:
            _densify(child)
    return module


def test_dense_equivalent_vit_is_caught(vit_model: nn.Module, tmp_path: Path) -> None:
    import copy

    dense = _densify(copy.deepcopy(vit_model)).eval()
    res = export_onnx(dense, torch.randn(2, 3, 32, 32), tmp_path / "dense.onnx", exporter="legacy")
    with pytest.raises(ParameterPreservationError) as info:
        check_parameter_preservation(vit_model, load_onnx(res.path))
    text = str(info.value)
    for layer in ("blocks.0.attn.qkv", "blocks.1.mlp.fc2", "head"):
        assert f"{layer}: factor" in text
    assert "dense 576×192 initializer is present" in text
    assert "parameter count" in text


def test_fewer_weights_is_a_note_unless_strict(mlp_exports) -> None:
    model, res = mlp_exports("legacy")
    bigger = nn.Sequential(*model, nn.Linear(8, 8))  # an extra layer the ONNX does not hold
    check = check_parameter_preservation(bigger, load_onnx(res.path))
    assert check.ok and check.rel_diff < -0.01 and any("fewer" in n for n in check.notes)
    with pytest.raises(ParameterPreservationError, match="parameter count"):
        check_parameter_preservation(bigger, load_onnx(res.path), allow_fewer=False)


def test_unoptimized_dynamo_export_passes(tmp_path: Path) -> None:
    # without the onnxscript optimizer, identical tensors are not de-duplicated: still fine
    torch.manual_seed(0)
    model = nn.Sequential(nn.LayerNorm(16), LowRankLinear(16, 16, 4), nn.LayerNorm(16), nn.Linear(16, 8)).eval()
    res = export_onnx(model, torch.randn(2, 16), tmp_path / "raw.onnx", optimize=False)
    check = check_parameter_preservation(model, load_onnx(res.path))
    assert check.ok and check.torch_params_distinct < check.torch_params == check.onnx_params


class _QKV(nn.Module):
    """Three factorized projections of one input, as attention's q/k/v: onnxsim fuses their first factors."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.norm = nn.LayerNorm(16)  # onnxsim fuses siblings reading an intermediate tensor, not a graph input
        self.q, self.k, self.v = (LowRankLinear.from_factors(torch.randn(16, 4), torch.randn(4, 16), torch.randn(16))
                                  for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        return self.q(x) * self.k(x) + self.v(x)


def test_sibling_first_factors_fused_by_the_simplifier_are_found(tmp_path: Path) -> None:
    """onnxsim writes one MatMul on a 16×12 weight + Split for q/k/v's 16→4 first factors (seen on the transformers
    ViT): still low-rank, so each factor is found as a slice of it and the fused weight counts as factor weights."""
    from pela_export.export import simplify_onnx

    model = _QKV().eval()
    res = export_onnx(model, torch.randn(2, 5, 16), tmp_path / "qkv.onnx")  # (batch, tokens, features)
    sim = simplify_onnx(res.path, tmp_path / "qkv.sim.onnx")
    graph = load_onnx(sim.dst)
    assert any(tuple(t.dims) in {(16, 12), (12, 16)} for t in graph.graph.initializer), "onnxsim no longer fuses"
    check = check_parameter_preservation(model, graph)
    assert [f.first_found for f in check.factors] == ["slice"] * 3 and check.ok
    assert check.onnx_counted == check.torch_params_distinct
    assert any("share a GEMM with their siblings" in n for n in check.notes)
    broken = load_onnx(sim.dst)  # a fused weight that is not made of the factors is not accepted
    for t in broken.graph.initializer:
        if tuple(t.dims) in {(16, 12), (12, 16)}:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) + 1, t.name))
    with pytest.raises(ParameterPreservationError, match="factor V \\(first\\) \\(rank 4\\) not found"):
        check_parameter_preservation(model, broken)
