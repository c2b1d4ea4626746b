"""pela_export.runtime.preprocess reproduces the workstation's model inputs from raw images.

The digits and Fashion-MNIST checks run the embedded default model's ONNX export with
ONNX Runtime on (a) the inputs the workstation's evaluation builds (``adapt_images``)
and (b) ``preprocess(raw images, deploy preprocessing)``: same inputs, same predictions.
Fashion-MNIST needs the IDX files (Debian ``dataset-fashion-mnist``; or point
``PELA_EXPORT_FASHION_MNIST_DIR`` at a directory holding them).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pela_export.errors import ArtifactError, InputShapeError
from pela_export.runtime import preprocess, validate_preprocessing
from pela_export.runtime.resample import INTERPOLATIONS, resize_float, resize_uint8
from pela_export.runtime.schema import deploy_problems


def _onnx_predict(model: Any, example: np.ndarray, path: Path) -> Any:
    """A function x -> argmax of ``model`` exported to ONNX and run by ONNX Runtime."""
    import onnxruntime as ort
    import torch

    from pela_export.export import export_onnx

    result = export_onnx(model, torch.from_numpy(example[:2]), path)
    sess = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0].argmax(-1)


@pytest.fixture(scope="module")
def digits(default_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The default digits model (session cache), its ONNX predictor, raw test images and workstation inputs."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from pela_export.data import adapt_images, load_dataset
    from pela_export.data.digits import SPLIT_SEED, TEST_SIZE
    from pela_export.models.default import load_default_model

    loaded = load_default_model("digits", cache_dir=default_cache, progress=False)
    work = adapt_images(load_dataset("digits").x_test, loaded.input_shape, loaded.preprocessing)
    bunch = load_digits()
    _, raw, _, labels = train_test_split(bunch.images, bunch.target, test_size=TEST_SIZE, random_state=SPLIT_SEED,
                                         stratify=bunch.target)
    predict = _onnx_predict(loaded.model, work, tmp_path_factory.mktemp("digits-onnx") / "digits.onnx")
    return {"loaded": loaded, "work": work, "raw": raw, "labels": labels, "predict": predict,
            "spec": json.loads(json.dumps(loaded.preprocessing.to_dict()))}


def test_digits_raw_images_give_the_workstation_inputs_and_predictions(digits: dict[str, Any]) -> None:
    spec = digits["spec"]
    assert validate_preprocessing(spec) == []
    assert spec["input_range"] == [0.0, 16.0] and spec["interpolation"] == "bilinear" and not spec["antialias"]
    for use_pillow in (True, False):
        x = preprocess(digits["raw"], spec, use_pillow=use_pillow)
        assert x.dtype == np.float32 and x.shape == digits["work"].shape
        np.testing.assert_allclose(x, digits["work"], rtol=0, atol=1e-6)
    pred_work, pred_dev = digits["predict"](digits["work"]), digits["predict"](x)
    np.testing.assert_array_equal(pred_dev, pred_work)
    accuracy = float((pred_dev == digits["labels"]).mean())
    assert accuracy == float((pred_work == digits["labels"]).mean()) >= 0.97


def test_digits_interpolation_matters(digits: dict[str, Any]) -> None:
    """Why it is recorded: nearest-neighbour upsampling costs the digits model many points."""
    nearest = dict(digits["spec"], interpolation="nearest")
    right = (digits["predict"](preprocess(digits["raw"], digits["spec"])) == digits["labels"]).mean()
    wrong = (digits["predict"](preprocess(digits["raw"], nearest)) == digits["labels"]).mean()
    assert wrong < right - 0.05


def _fashion_dir() -> Path:
    from pela_export.data import FASHION_MNIST_DIR

    return Path(os.environ.get("PELA_EXPORT_FASHION_MNIST_DIR", FASHION_MNIST_DIR))


@pytest.mark.skipif(not _fashion_dir().is_dir(), reason="Fashion-MNIST IDX files not installed "
                    "(apt-get install dataset-fashion-mnist, or set PELA_EXPORT_FASHION_MNIST_DIR)")
def test_fashion_mnist_raw_images_give_the_workstation_predictions(
        default_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import pela_export.data as data
    from pela_export.data import adapt_images, load_dataset
    from pela_export.data.idx import IDX_FILES, find_idx_file, read_idx
    from pela_export.models.default import build_vit, cache_path, get_recipe, load_default_model, recipe_preprocessing

    monkeypatch.setattr(data, "FASHION_MNIST_DIR", _fashion_dir())
    ds = load_dataset("fashion-mnist")
    if cache_path("fashion-mnist", default_cache).is_file():
        loaded = load_default_model("fashion-mnist", cache_dir=default_cache, progress=False)
        model, pre = loaded.model, loaded.preprocessing
    else:  # training the recipe takes minutes: its untrained network with the record training would make
        rec = get_recipe("fashion-mnist")
        torch.manual_seed(0)
        model = build_vit(rec).eval()
        pre = recipe_preprocessing(rec, tuple(ds.x_train.mean(axis=(0, 2, 3))), tuple(ds.x_train.std(axis=(0, 2, 3))))
    assert pre is not None and pre.input_range == (0.0, 255.0)
    work = adapt_images(ds.x_test, (1, 28, 28), pre)
    raw = read_idx(find_idx_file(_fashion_dir(), IDX_FILES["test_images"]))
    assert raw.dtype == np.uint8
    x = preprocess(raw, json.loads(json.dumps(pre.to_dict())))
    np.testing.assert_allclose(x, work, rtol=0, atol=1e-6)
    predict = _onnx_predict(model, work, tmp_path / "fashion.onnx")
    pred_work, pred_dev = predict(work), predict(x)
    np.testing.assert_array_equal(pred_dev, pred_work)
    assert (pred_dev == ds.y_test).mean() == (pred_work == ds.y_test).mean()


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_numpy_uint8_resize_is_pillows(interpolation: str) -> None:
    """The fallback for devices without Pillow gives Pillow's exact bytes (both pass orders included)."""
    rng = np.random.default_rng(3)
    for h, w, oh, ow in [(8, 8, 16, 16), (300, 401, 224, 299), (480, 333, 248, 248), (37, 53, 91, 12)]:
        x = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
        np.testing.assert_array_equal(resize_uint8(x, (oh, ow), interpolation, use_pillow=False),
                                      resize_uint8(x, (oh, ow), interpolation, use_pillow=True))


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_float_antialias_resize_is_pillows_float_mode(interpolation: str) -> None:
    from PIL import Image

    rng = np.random.default_rng(4)
    x = rng.random((61, 47), dtype=np.float32)
    for oh, ow in [(30, 20), (128, 90), (61, 20)]:
        ref = np.asarray(Image.fromarray(x, mode="F").resize((ow, oh), getattr(Image.Resampling, interpolation.upper())))
        got = resize_float(x[None, :, :, None], (oh, ow), interpolation, antialias=True)[0, :, :, 0]
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_float_plain_resize_is_torch_interpolate(mode: str) -> None:
    """antialias=False is ``F.interpolate(align_corners=False)``: what ``adapt_images`` runs."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(5)
    x = rng.random((2, 3, 37, 53), dtype=np.float32)
    for size in [(16, 16), (74, 106), (300, 200)]:
        ref = F.interpolate(torch.from_numpy(x), size=size, mode=mode, align_corners=False).numpy()
        got = resize_float(x.transpose(0, 2, 3, 1), size, mode, antialias=False).transpose(0, 3, 1, 2)
        np.testing.assert_allclose(got, ref, rtol=0, atol=5e-6)


def _spec(**kw: Any) -> dict[str, Any]:
    return {"size": [4, 4], "channels": 3, "mean": [0.0], "std": [1.0], **kw}


def test_layout_channel_order_and_channel_conversion() -> None:
    rng = np.random.default_rng(6)
    rgb = rng.integers(0, 256, (2, 4, 4, 3)).astype(np.float32)
    base = _spec(input_range=[0, 255])
    nchw = preprocess(rgb, base)
    assert nchw.shape == (2, 3, 4, 4)
    np.testing.assert_array_equal(nchw, rgb.transpose(0, 3, 1, 2) / np.float32(255))
    np.testing.assert_array_equal(preprocess(rgb, dict(base, layout="NHWC")), rgb / np.float32(255))
    np.testing.assert_array_equal(preprocess(rgb, dict(base, channel_order="BGR"))[:, ::-1], nchw)
    gray = preprocess(rgb, dict(base, channels=1, channel_order="gray"))
    np.testing.assert_allclose(gray[:, 0], rgb.mean(-1) / 255, atol=1e-6)
    assert preprocess(rgb[..., 0], base).shape == (2, 3, 4, 4)  # 1 → 3 channels by repetition
    assert preprocess([rgb[0], rgb[1]], base).shape == (2, 3, 4, 4)  # a list of (H, W, C) images
    with pytest.raises(InputShapeError, match="channels"):
        preprocess(rng.random((1, 4, 4, 3)), _spec(channels=5))


def test_centre_crop_offsets_and_padding() -> None:
    x = np.arange(7 * 9, dtype=np.float32).reshape(1, 7, 9, 1)
    spec = _spec(size=[4, 4], channels=1, resize_size=[7, 9])  # squash to the raw size: crop only
    assert preprocess(x, spec)[0, 0, 0, 0] == x[0, 2, 2, 0]  # round(1.5) = 2, round(2.5) = 2 (half to even)
    assert preprocess(x, dict(spec, crop_offset="floor"))[0, 0, 0, 0] == x[0, 1, 2, 0]
    padded = preprocess(x, dict(spec, size=[9, 9], pad_fill=[-1.0]))
    assert padded.shape == (1, 1, 9, 9) and padded[0, 0, 0, 0] == -1.0 and padded[0, 0, 1, 0] == x[0, 0, 0, 0]


def test_bad_records_name_every_problem() -> None:
    bad = _spec(interpolation="cubic", std=[1.0, -0.5, 1.0], mean=[0.1, 0.2])
    problems = validate_preprocessing(bad)
    assert any("interpolation" in p and "'cubic'" in p and "bilinear" in p for p in problems)
    assert any("std[1]" in p and "positive" in p for p in problems)
    assert any("mean" in p and "2 values" in p for p in problems)
    assert any("input_range" in p for p in validate_preprocessing(_spec(input_range=[1, 1])))
    assert any("resize_size" in p for p in validate_preprocessing(_spec(resize_mode="shorter_side", resize_size=[4, 4])))
    assert any("uint8" in p for p in validate_preprocessing(_spec(resize_dtype="uint8")))
    assert validate_preprocessing(_spec(channels=3, channel_order="gray"))
    with pytest.raises(ArtifactError, match="interpolation"):
        preprocess(np.zeros((1, 4, 4, 3)), bad)
    # deploy.json validation reports them too
    assert any("preprocessing.interpolation" in p for p in deploy_problems({"schema_version": 1, "preprocessing": bad}))


def test_records_written_before_the_new_keys_still_validate() -> None:
    old = {"size": [16, 16], "mean": [0.3], "std": [0.3], "channels": 1, "channel_order": "gray",
           "layout": "NCHW", "input_range": [0.0, 1.0]}
    assert validate_preprocessing(old) == []
    x = np.random.default_rng(0).random((3, 8, 8), dtype=np.float32)
    assert preprocess(x, old).shape == (3, 1, 16, 16)


NO_TORCH = textwrap.dedent(r"""
    import json, sys
    for mod in ("torch", "timm", "PIL", "sklearn", "onnx"):
        sys.modules[mod] = None
    import numpy as np
    from pela_export.runtime import preprocess
    spec, raw, out = sys.argv[1], sys.argv[2], sys.argv[3]
    x = preprocess(np.load(raw), json.load(open(spec)))
    np.save(out, x)
    print("HEAVY", sorted(m for m in ("torch", "PIL") if sys.modules.get(m) is not None))
""")


def test_preprocess_runs_without_torch_and_pillow(tmp_path: Path) -> None:
    """What a bare device runs (numpy only) gives the same bytes as with Pillow."""
    rng = np.random.default_rng(8)
    raw = rng.integers(0, 256, (2, 300, 401, 3), dtype=np.uint8)
    spec = {"size": [224, 224], "channels": 3, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
            "input_range": [0, 255], "interpolation": "bicubic", "antialias": True, "resize_mode": "shorter_side",
            "resize_size": [256], "resize_dtype": "uint8"}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    np.save(tmp_path / "raw.npy", raw)
    done = subprocess.run([sys.executable, "-c", NO_TORCH, str(tmp_path / "spec.json"), str(tmp_path / "raw.npy"),
                           str(tmp_path / "out.npy")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), preprocess(raw, spec, use_pillow=True))
