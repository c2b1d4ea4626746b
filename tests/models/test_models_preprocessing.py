"""Preprocessing records what each model source really does to raw images, and survives deploy.json.

timm models: the record, run by the torch-free runtime, equals timm's own eval transform.
Hugging Face: preprocessor_config.json maps onto the record (and stays within a couple of
8-bit levels of transformers' processors, which resize with torchvision rather than Pillow).
"""
from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from pela_export.errors import ArtifactError
from pela_export.models.base import Preprocessing
from pela_export.models.default import get_recipe, recipe_preprocessing
from pela_export.models.hf import hf_preprocessing
from pela_export.runtime import preprocess, validate_preprocessing


def _through_deploy_json(pre: Preprocessing) -> dict[str, Any]:
    """What a device reads: the record written as JSON, parsed back and validated."""
    d = json.loads(json.dumps(pre.to_dict()))
    assert validate_preprocessing(d) == []
    assert Preprocessing.from_dict(d) == pre
    return d


def _photos() -> list[Any]:
    from PIL import Image

    rng = np.random.default_rng(0)
    sizes = [(300, 401), (257, 255), (480, 333), (120, 100), (224, 224)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


def test_defaults_are_the_pipeline_used_before_they_were_recorded() -> None:
    pre = Preprocessing(mean=(0.5,), std=(0.25,), size=(16, 16), channels=1)
    assert (pre.channel_order, pre.input_range, pre.interpolation, pre.antialias) == ("gray", (0.0, 1.0), "bilinear",
                                                                                       False)
    assert (pre.resize_mode, pre.resize_size, pre.crop_pct, pre.resize_dtype) == ("squash", (16, 16), 1.0, "float32")
    assert Preprocessing(mean=(0.5,) * 3, std=(0.5,) * 3, size=(224, 224), channels=3).channel_order == "RGB"
    # crop_pct without an explicit resize size: timm's floor(size / crop_pct)
    assert Preprocessing((0.5,), (0.5,), (224, 224), 1, resize_mode="shorter_side", crop_pct=0.875).resize_size == (256,)
    _through_deploy_json(pre)


def test_from_dict_reads_old_records_and_rejects_bad_ones() -> None:
    old = {"size": [16, 16], "mean": [0.3], "std": [0.3], "channels": 1, "channel_order": "gray", "layout": "NCHW",
           "input_range": [0.0, 1.0]}
    assert Preprocessing.from_dict(old) == Preprocessing((0.3,), (0.3,), (16, 16), 1)
    with pytest.raises(ArtifactError, match="std"):
        Preprocessing.from_dict(dict(old, std=[-1.0]))


@pytest.mark.parametrize("recipe, raw_range", [("digits", (0.0, 16.0)), ("fashion-mnist", (0.0, 255.0))])
def test_default_recipes_record_their_raw_range_and_bilinear_upsampling(recipe: str,
                                                                        raw_range: tuple[float, float]) -> None:
    rec = get_recipe(recipe)
    pre = recipe_preprocessing(rec, (0.3,), (0.3,))
    assert pre.input_range == raw_range and pre.size == (rec.img_size, rec.img_size)
    assert (pre.interpolation, pre.antialias, pre.resize_mode, pre.resize_dtype) == ("bilinear", False, "squash",
                                                                                     "float32")
    _through_deploy_json(pre)


def test_package_writes_the_whole_record() -> None:
    from pela_export.pipeline.package_meta import preprocessing

    pre = recipe_preprocessing(get_recipe("digits"), (0.3,), (0.3,))
    ctx = SimpleNamespace(loaded=SimpleNamespace(preprocessing=pre))
    assert preprocessing(ctx) == pre.to_dict()  # type: ignore[arg-type]
    assert preprocessing(SimpleNamespace(loaded=SimpleNamespace(preprocessing=None))) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["deit_tiny_patch16_224", "mobilenetv3_small_100"])
def test_timm_data_config_round_trips_through_deploy_json(name: str) -> None:
    """deit: bicubic, crop_pct 0.9; mobilenetv3: bicubic, crop_pct 0.875 — equal to timm's eval transform."""
    import timm
    import timm.data

    from pela_export.models.sources import resolve_model

    loaded = resolve_model(f"timm:{name}", check=False)
    cfg = timm.data.resolve_model_data_config(loaded.model)
    pre = loaded.preprocessing
    assert pre is not None
    assert (pre.interpolation, pre.crop_pct, pre.mean, pre.std) == (cfg["interpolation"], cfg["crop_pct"],
                                                                    tuple(cfg["mean"]), tuple(cfg["std"]))
    d = _through_deploy_json(pre)
    transform = timm.data.create_transform(**cfg)
    for img in _photos():
        ref = transform(img).numpy()
        for use_pillow in (True, False):
            np.testing.assert_allclose(preprocess(img, d, use_pillow=use_pillow)[0], ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("change", [
    {"crop_mode": "squash"}, {"crop_mode": "border"}, {"input_size": (3, 224, 192)},
    {"interpolation": "bilinear", "crop_pct": 1.0}, {"interpolation": "nearest", "crop_pct": 0.95},
    {"interpolation": "lanczos", "input_size": (3, 160, 160)},
])
def test_every_timm_crop_mode_matches_timms_transform(change: dict[str, Any]) -> None:
    import timm.data

    from pela_export.models.sources import timm_preprocessing

    cfg = {"input_size": (3, 224, 224), "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406),
           "std": (0.229, 0.224, 0.225), "crop_pct": 0.9, "crop_mode": "center", **change}
    d = _through_deploy_json(timm_preprocessing(cfg, cfg["input_size"]))
    transform = timm.data.create_transform(**cfg)
    for img in _photos():
        np.testing.assert_allclose(preprocess(img, d)[0], transform(img).numpy(), rtol=0, atol=1e-6)


HF_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "vit": ("ViTImageProcessor", {"do_resize": True, "size": {"height": 224, "width": 224}, "resample": 2,
                                  "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                                  "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}),
    "clip": ("CLIPImageProcessor", {"do_resize": True, "size": {"shortest_edge": 224}, "resample": 3,
                                    "do_center_crop": True, "crop_size": {"height": 224, "width": 224},
                                    "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                                    "image_mean": [0.48145466, 0.4578275, 0.40821073],
                                    "image_std": [0.26862954, 0.26130258, 0.27577711]}),
    "convnext": ("ConvNextImageProcessor", {"do_resize": True, "size": {"shortest_edge": 224}, "crop_pct": 0.875,
                                            "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255,
                                            "do_normalize": True, "image_mean": [0.485, 0.456, 0.406],
                                            "image_std": [0.229, 0.224, 0.225]}),
}


def test_hf_preprocessor_config_maps_onto_the_record() -> None:
    vit, clip, convnext = (hf_preprocessing(HF_CONFIGS[k][1], (224, 224), 3) for k in ("vit", "clip", "convnext"))
    assert (vit.resize_mode, vit.resize_size, vit.interpolation) == ("squash", (224, 224), "bilinear")
    assert (clip.resize_mode, clip.resize_size, clip.interpolation) == ("shorter_side", (224,), "bicubic")
    assert (convnext.resize_mode, convnext.resize_size, convnext.crop_pct) == ("shorter_side", (256,), 0.875)
    for pre in (vit, clip, convnext):
        assert (pre.input_range, pre.resize_dtype, pre.crop_offset, pre.antialias) == ((0.0, 255.0), "uint8", "floor",
                                                                                       True)
        _through_deploy_json(pre)
    unscaled = hf_preprocessing({"do_rescale": False, "do_normalize": False}, (32, 32), 3)
    assert (unscaled.input_range, unscaled.mean, unscaled.resize_dtype) == ((0.0, 1.0), (0.0,) * 3, "float32")


@pytest.mark.parametrize("kind", sorted(HF_CONFIGS))
def test_hf_record_is_within_two_levels_of_transformers(kind: str) -> None:
    transformers = pytest.importorskip("transformers")
    cls_name, cfg = HF_CONFIGS[kind]
    processor = getattr(transformers, cls_name)(**cfg)
    d = _through_deploy_json(hf_preprocessing(cfg, (224, 224), 3))
    level = 1 / 255 / min(cfg["image_std"])  # one 8-bit level after normalisation
    for img in _photos():
        ref = np.asarray(processor(images=img, return_tensors="np")["pixel_values"][0])
        got = preprocess(img, d)[0]
        assert got.shape == ref.shape  # same resize sizes and crop offsets
        assert float(np.abs(got - ref).max()) <= 2.5 * level and float(np.abs(got - ref).mean()) < 0.3 * level
