"""Shared small models for the export tests (exports are cached per module)."""
from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn

from pela_export.lowrank.layer import LowRankLinear


def _lowrankify(module: nn.Module, rank: int) -> nn.Module:
    """Replace every nn.Linear wider than ``rank`` by a random LowRankLinear."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear) and min(child.in_features, child.out_features) > rank:
            setattr(module, name, LowRankLinear(child.in_features, child.out_features, rank,
                                                bias=child.bias is not None))
        else:
            _lowrankify(child, rank)
    return module


@pytest.fixture(scope="session")
def lowrankify() -> Callable[[nn.Module, int], nn.Module]:
    return _lowrankify


def make_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(LowRankLinear(16, 32, 4), nn.GELU(), nn.Linear(32, 8)).eval()


def make_tiny_vit(seed: int = 0, rank: int = 8) -> nn.Module:
    timm = pytest.importorskip("timm")
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                                  depth=2, num_classes=10)
    return _lowrankify(model, rank).eval()


@pytest.fixture()
def mlp() -> nn.Module:
    return make_mlp()


@pytest.fixture(scope="session")
def vit_model() -> nn.Module:
    return make_tiny_vit()


@pytest.fixture(scope="session")
def vit_exports(vit_model: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], object]:
    """exporter name -> ExportResult of the tiny low-rank ViT at opset 17, exported once per session."""
    from pela_export.export import export_onnx

    cache: dict[str, object] = {}
    root = tmp_path_factory.mktemp("vit")

    def get(exporter: str) -> object:
        if exporter not in cache:
            cache[exporter] = export_onnx(vit_model, torch.randn(2, 3, 32, 32), root / f"vit_{exporter}.onnx",
                                          exporter=exporter)  # type: ignore[arg-type]
        return cache[exporter]

    return get


@pytest.fixture(scope="session")
def mlp_exports(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[nn.Module, object]]:
    """exporter name -> (model, ExportResult) of the small low-rank MLP."""
    from pela_export.export import export_onnx

    cache: dict[str, tuple[nn.Module, object]] = {}
    root = tmp_path_factory.mktemp("mlp")

    def get(exporter: str) -> tuple[nn.Module, object]:
        if exporter not in cache:
            model = make_mlp()
            cache[exporter] = (model, export_onnx(model, torch.randn(2, 16), root / f"mlp_{exporter}.onnx",
                                                  exporter=exporter))  # type: ignore[arg-type]
        return cache[exporter]

    return get
