"""The embedded default ViT: recipes, training, and the on-disk cache.

Cache behaviour is tested with a 1-epoch trainer (seconds); the real recipe's
accuracy is checked once per session in the slow test (shared cache dir).
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch

import pela_export.models.default as default
from pela_export.data import FASHION_MNIST_DIR, adapt_images, load_dataset
from pela_export.errors import OptionError
from pela_export.models.default import (
    CACHE_ENV, RECIPES, build_vit, cache_path, default_cache_dir, evaluate_accuracy, load_default_model,
    train_recipe,
)


@pytest.fixture
def quick_train(monkeypatch):
    """Make load_default_model train for one epoch only; count the calls."""
    calls: list[str] = []
    real = default.train_recipe

    def one_epoch(recipe, progress=True, **kw):
        calls.append(recipe.name)
        return real(recipe, progress=False, epochs=1)

    monkeypatch.setattr(default, "train_recipe", one_epoch)
    return calls


def test_recipes_registered_and_sized_for_factorisation():
    assert set(RECIPES.names()) >= {"digits", "fashion-mnist"}
    model = build_vit(RECIPES.get("digits"))
    qkv = model.blocks[0].attn.qkv
    fc1 = model.blocks[0].mlp.fc1
    assert (qkv.in_features, qkv.out_features) == (64, 192)
    assert (fc1.in_features, fc1.out_features) == (64, 256)
    assert model(torch.zeros(2, *RECIPES.get("digits").input_shape)).shape == (2, 10)


def test_unknown_recipe_is_an_option_error(tmp_path):
    with pytest.raises(OptionError, match="digits") as e:
        load_default_model("imagenet", cache_dir=tmp_path)
    assert "fashion-mnist" in str(e.value)


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    assert cache_path("digits") == tmp_path / "c" / "digits-vit.pt"
    monkeypatch.delenv(CACHE_ENV)
    assert default_cache_dir() == default.Path.home() / ".cache" / "pela-export"


def test_train_then_load_from_cache(tmp_path, quick_train, capsys):
    first = load_default_model("digits", cache_dir=tmp_path, progress=False)
    path = tmp_path / "digits-vit.pt"
    assert path.is_file() and quick_train == ["digits"]
    assert first.extra["from_cache"] is False and "no cached model" in first.extra["retrain_reason"]
    assert "training default model 'digits'" in capsys.readouterr().err
    assert first.name == "digits-vit" and first.source == "default:digits" and first.family == "timm-vit"
    assert first.input_shape == (1, 16, 16) and first.input_shape_origin == "recipe"
    assert first.num_classes == 10 and first.default_dataset == "digits"
    assert first.preprocessing is not None and first.preprocessing.size == (16, 16)
    assert not first.model.training
    assert {"test_accuracy", "train_seconds"} <= set(first.extra)
    mtime = path.stat().st_mtime_ns

    second = load_default_model("digits", cache_dir=tmp_path, progress=False)
    assert quick_train == ["digits"], "second call must not retrain"
    assert second.extra["from_cache"] is True and second.extra["retrain_reason"] is None
    assert path.stat().st_mtime_ns == mtime
    assert second.extra["test_accuracy"] == first.extra["test_accuracy"]
    assert second.preprocessing == first.preprocessing
    x = first.dummy_input(3)
    with torch.no_grad():
        torch.testing.assert_close(second.model(x), first.model(x))
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("damage", ["garbage", "wrong-keys", "recipe-changed", "bad-state"])
def test_broken_cache_retrains_with_warning(tmp_path, quick_train, capsys, damage):
    load_default_model("digits", cache_dir=tmp_path, progress=False)
    path = tmp_path / "digits-vit.pt"
    capsys.readouterr()
    if damage == "garbage":
        path.write_bytes(os.urandom(512))
        expect = "cannot be loaded"
    elif damage == "wrong-keys":
        torch.save({"weights": torch.zeros(1)}, path)
        expect = "lacks keys"
    elif damage == "recipe-changed":
        blob = torch.load(path, weights_only=True)
        blob["recipe"]["epochs"] = 999
        torch.save(blob, path)
        expect = "different recipe (changed: epochs)"
    else:
        blob = torch.load(path, weights_only=True)
        blob["state_dict"].pop("head.weight")
        torch.save(blob, path)
        expect = "does not match the architecture"
    loaded = load_default_model("digits", cache_dir=tmp_path, progress=False)
    err = capsys.readouterr().err
    assert quick_train == ["digits", "digits"]
    warning = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and expect in warning[0] and "retraining" in warning[0] and str(path) in warning[0]
    assert loaded.extra["from_cache"] is False and expect in loaded.extra["retrain_reason"]
    again = load_default_model("digits", cache_dir=tmp_path, progress=False)  # repaired file is used
    assert again.extra["from_cache"] is True and quick_train == ["digits", "digits"]


def test_retrain_flag_forces_training(tmp_path, quick_train):
    load_default_model("digits", cache_dir=tmp_path, progress=False)
    load_default_model("digits", cache_dir=tmp_path, retrain=True, progress=False)
    assert quick_train == ["digits", "digits"]


def test_train_recipe_is_deterministic():
    rec = dataclasses.replace(RECIPES.get("digits"), train_subset=256)
    m1, met1 = train_recipe(rec, progress=False, epochs=1, num_threads=1)
    m2, met2 = train_recipe(rec, progress=False, epochs=1, num_threads=1)
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    assert met1["test_accuracy"] == met2["test_accuracy"]
    assert met1["preprocessing"] == met2["preprocessing"]
    assert met1["epochs"] == 1 and np.isfinite(met1["final_loss"])


def test_train_recipe_restores_thread_count():
    before = torch.get_num_threads()
    rec = dataclasses.replace(RECIPES.get("digits"), train_subset=64)
    train_recipe(rec, progress=False, epochs=1, num_threads=1 if before != 1 else 2)
    assert torch.get_num_threads() == before


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(),
                    reason=f"Debian package dataset-fashion-mnist not installed ({FASHION_MNIST_DIR} absent)")
def test_fashion_mnist_recipe_learns_on_a_subset():
    rec = dataclasses.replace(RECIPES.get("fashion-mnist"), train_subset=3000)
    model, metrics = train_recipe(rec, progress=False, epochs=1)
    assert metrics["test_accuracy"] > 0.35  # chance is 0.10
    assert metrics["preprocessing"].size == (28, 28)
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


@pytest.mark.slow
def test_digits_recipe_reaches_97_percent(default_cache):
    """Full recipe (about a minute on 2 cores); the session cache is reused by later tests."""
    loaded = load_default_model("digits", cache_dir=default_cache, progress=False)
    assert loaded.extra["test_accuracy"] >= 0.97
    ds = load_dataset(loaded.default_dataset)
    x = adapt_images(ds.x_test, loaded.input_shape, loaded.preprocessing)
    assert evaluate_accuracy(loaded.model, x, ds.y_test) == pytest.approx(loaded.extra["test_accuracy"], abs=2e-3)
    again = load_default_model("digits", cache_dir=default_cache, progress=False)
    assert again.extra["from_cache"] is True


def test_unwritable_cache_still_returns_model(tmp_path, quick_train, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    loaded = load_default_model("digits", cache_dir=blocker / "sub", progress=False)
    assert loaded.extra["from_cache"] is False
    assert f"set {CACHE_ENV}" in capsys.readouterr().err
