"""Model factories for ``bench/arch_sweep.py``: ``sweep_models:NAME`` builds timm model NAME with random
weights, at a reduced image size where the family takes one (so the sweep fits a CPU).

Used as a ``package.module:factory`` model spec with ``bench/`` on ``PYTHONPATH``.
"""
from __future__ import annotations

from typing import Any

from torch import nn

#: (family, timm model, create_model kwargs). One small variant per family; img_size reduced where allowed.
#: 30 families: the issue's list plus others, chosen small enough that the sweep fits about 30 minutes on 2 CPUs.
TIMM_MODELS: list[tuple[str, str, dict[str, Any]]] = [
    ("vit", "vit_tiny_patch16_224", {"img_size": 96}),
    ("deit", "deit_tiny_patch16_224", {"img_size": 96}),
    ("swin", "swin_tiny_patch4_window7_224", {"img_size": 112}),
    ("swinv2", "swinv2_cr_tiny_ns_224", {"img_size": 112}),
    ("convnext", "convnext_atto", {}),
    ("convnextv2", "convnextv2_atto", {}),
    ("efficientformer", "efficientformer_l1", {}),
    ("efficientformerv2", "efficientformerv2_s0", {}),
    ("levit", "levit_128s", {}),
    ("mobilevit", "mobilevit_xxs", {}),
    ("mobilevitv2", "mobilevitv2_050", {}),
    ("pit", "pit_ti_224", {"img_size": 112}),
    ("cait", "cait_xxs24_224", {"img_size": 96}),
    ("xcit", "xcit_nano_12_p16_224", {"img_size": 96}),
    ("beit", "beitv2_base_patch16_224", {"img_size": 64, "depth": 2}),
    ("eva02", "eva02_tiny_patch14_224", {"img_size": 112}),
    ("maxvit", "maxvit_nano_rw_256", {}),
    ("resnet", "resnet18", {}),
    ("mobilenetv2", "mobilenetv2_050", {}),
    ("mobilenetv3", "mobilenetv3_small_050", {}),
    ("regnet", "regnetx_002", {}),
    ("efficientnet", "efficientnet_b0", {}),
    ("ghostnet", "ghostnet_050", {}),
    ("poolformer", "poolformer_s12", {}),
    ("resmlp", "resmlp_12_224", {"img_size": 96}),
    ("coat", "coat_lite_tiny", {}),
    ("edgenext", "edgenext_xx_small", {}),
    ("fastvit", "fastvit_t8", {}),
    ("repvit", "repvit_m1", {}),
    ("tiny_vit", "tiny_vit_5m_224", {}),
]
_BY_NAME = {name: (family, kwargs) for family, name, kwargs in TIMM_MODELS}


def build(name: str) -> nn.Module:
    import timm

    _, kwargs = _BY_NAME[name]
    return timm.create_model(name, pretrained=False, **kwargs)


def __getattr__(name: str) -> Any:  # PEP 562: ``sweep_models:vit_tiny_patch16_224`` resolves to a factory
    if name in _BY_NAME:
        return lambda: build(name)
    raise AttributeError(name)
