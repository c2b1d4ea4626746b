"""Tiny timm ViTs, factorizations and data shared by the training tests (seconds on CPU)."""
from __future__ import annotations

import copy

import torch
from torch import nn

from pela_export.lowrank import LowRankLinear, factorize_model, select_linears
from pela_export.lowrank.select import set_submodule
from pela_export.train import TrainData, from_arrays


def make_vit(seed: int = 0, drop: float = 0.0) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    return VisionTransformer(img_size=16, patch_size=4, in_chans=1, num_classes=10, embed_dim=32, depth=2,
                             num_heads=2, drop_rate=drop, drop_path_rate=drop).eval()


def full_rank(teacher: nn.Module) -> nn.Module:
    """Every eligible linear as an exact full-rank LowRankLinear (U = u·s, V = vh)."""
    student = copy.deepcopy(teacher)
    for name, lin in select_linears(student):
        u, s, vh = torch.linalg.svd(lin.weight.detach().double(), full_matrices=False)
        bias = lin.bias.detach() if lin.bias is not None else None
        set_submodule(student, name, LowRankLinear.from_factors((u * s).float(), vh.float(), bias))
    return student


def random_data(n: int = 48, labelled: bool = True, seed: int = 0) -> TrainData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 16, 16, generator=g)
    y = torch.randint(0, 10, (n,), generator=g) if labelled else None
    return from_arrays(x, y, name="random")


def vit_pair(ratio: float = 2.0, seed: int = 0, drop: float = 0.0) -> tuple[nn.Module, nn.Module]:
    """(teacher, student factorized at ``ratio``); the student is an independent deep copy."""
    teacher = make_vit(seed, drop)
    return teacher, factorize_model(teacher, ratio=ratio).model
