"""Trainable / stored / deployed parameters checked against a hand count on a tiny model."""
import onnx
import pytest
import torch
from framework_fakes import ChainLinear, FFTCirculant
from torch import nn

from pela_export.errors import ExportError
from pela_export.structured.accounting import account, deployed_params, export_deployed, format_accounting
from pela_export.structured.base import LoweringUnavailable
from pela_export.structured.lowering import assert_no_dft, plan_lowering


class TwoBranch(nn.Module):
    """y = head(b0(x) + b1(x)); b0 and b1 are 6x8 rank-2 chains whose 2x2 core is one shared tensor."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleList(ChainLinear(8, 6, 2) for _ in range(2))
        for p in self.parameters():
            nn.init.normal_(p)
        self.blocks[1].core = self.blocks[0].core
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks[0](x) + self.blocks[1](x))


# per chain: u 6x2 = 12, core 2x2 = 4, v 2x8 = 16, bias 6 -> 38; the core is shared; head 6x3 + 3 = 21
CHAIN, CORE, HEAD = 38, 4, 21


def test_trainable_and_stored_count_a_shared_tensor_once():
    model = TwoBranch()
    model.head.requires_grad_(False)
    got = account("chain", model)
    assert (got.trainable, got.stored, got.deployed) == (2 * CHAIN - CORE, 2 * CHAIN - CORE + HEAD, None)
    assert sum(p.numel() for p in model.blocks[0].parameters()) + sum(
        p.numel() for p in model.blocks[1].parameters()) == 2 * CHAIN  # per layer, the core shows in both


@pytest.mark.parametrize("form, deployed", [
    ("structured", 2 * CHAIN - CORE + HEAD),  # the shared core is one initializer
    ("lowrank", 2 * (6 * 2 + 2 * 8 + 6) + HEAD),  # U·C merged per layer: the core is no longer shared
    ("dense", 2 * (6 * 8 + 6) + HEAD),
])
def test_deployed_is_what_the_lowered_onnx_holds(tmp_path, form, deployed):
    model = TwoBranch()
    plan = plan_lowering(model, tokens=3, form=form, runs=2, warmup=0)
    x = torch.randn(2, 3, 8)
    lowered, result, n = export_deployed(model, plan, x, tmp_path / f"{form}.onnx", exporter="legacy")
    assert n == deployed == deployed_params(result.path) == account(form, model, result.path).deployed
    torch.testing.assert_close(lowered(x), model(x), atol=1e-4, rtol=1e-4)
    assert f"| {form} |" in format_accounting([account(form, model, result.path)])


def test_deployed_graph_with_dft_is_refused_unless_the_plan_allows_it(tmp_path):
    model = nn.Sequential(FFTCirculant(8))
    plan = plan_lowering(model, tokens=3, form="structured", allow_dft=True, runs=2, warmup=0)
    _, result, _ = export_deployed(model, plan, torch.randn(2, 3, 8), tmp_path / "fft.onnx")
    with pytest.raises(ExportError, match="DFT"):
        assert_no_dft(onnx.load(str(result.path)))
    plan.settings["allow_dft"] = False
    with pytest.raises(LoweringUnavailable):  # the layer now refuses the structured form (no DFT allowed)
        export_deployed(model, plan, torch.randn(2, 3, 8), tmp_path / "fft2.onnx")
