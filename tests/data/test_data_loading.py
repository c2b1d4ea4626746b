"""``load_dataset`` specs, the Fashion-MNIST loader and ``adapt_images``."""
from __future__ import annotations

import numpy as np
import pytest

import pela_export.data as data
from pela_export.data import FASHION_MNIST_CLASS_NAMES, FASHION_MNIST_DIR, adapt_images, load_dataset
from pela_export.errors import DatasetError, InputShapeError
from pela_export.models.base import Preprocessing


def test_unknown_spec_lists_choices_and_flag():
    with pytest.raises(DatasetError) as e:
        load_dataset("cifar")
    msg = str(e.value)
    assert "'cifar'" in msg and "--data" in msg
    for choice in ("digits", "fashion-mnist", "idx:DIR"):
        assert choice in msg


def test_spec_arguments_checked():
    with pytest.raises(DatasetError, match="needs a directory"):
        load_dataset("idx:")
    with pytest.raises(DatasetError, match="takes no argument"):
        load_dataset("digits:extra")


def test_fashion_mnist_missing_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(DatasetError) as e:
        load_dataset("fashion-mnist")
    assert "apt-get install dataset-fashion-mnist" in str(e.value)
    assert "--data idx:DIR" in str(e.value)


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(),
                    reason=f"Debian package dataset-fashion-mnist not installed ({FASHION_MNIST_DIR} absent)")
def test_fashion_mnist_loads():
    ds = load_dataset("fashion-mnist")
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.y_train.dtype == np.int64 and set(np.unique(ds.y_test)) == set(range(10))
    assert ds.class_names == FASHION_MNIST_CLASS_NAMES and len(ds.class_names) == 10
    assert 0.0 <= ds.x_test.min() and ds.x_test.max() <= 1.0
    assert abs(float(ds.x_train.mean()) - 0.286) < 0.01  # the well-known Fashion-MNIST mean


def test_adapt_images_resizes_repeats_and_normalises():
    x = np.full((5, 1, 8, 8), 0.5, np.float32)
    pre = Preprocessing(mean=(0.5, 0.25, 0.0), std=(0.25, 0.5, 1.0), size=(16, 16), channels=3)
    out = adapt_images(x, (3, 16, 16), pre)
    assert out.shape == (5, 3, 16, 16) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0], 0.0, atol=1e-6)
    np.testing.assert_allclose(out[:, 1], 0.5, atol=1e-6)
    np.testing.assert_allclose(out[:, 2], 0.5, atol=1e-6)


def test_adapt_images_averages_channels_and_downsizes():
    x = np.zeros((2, 3, 28, 28), np.float32)
    x[:, 0] = 0.3
    x[:, 1] = 0.6
    x[:, 2] = 0.9
    out = adapt_images(x, (1, 14, 14), None)
    assert out.shape == (2, 1, 14, 14)
    np.testing.assert_allclose(out, 0.6, atol=1e-6)


def test_adapt_images_identity_and_chunking():
    rng = np.random.default_rng(0)
    x = rng.random((7, 1, 8, 8), dtype=np.float32)
    np.testing.assert_array_equal(adapt_images(x, (1, 8, 8), None), x)
    pre = Preprocessing(mean=(0.3,), std=(0.2,), size=(16, 16), channels=1)
    np.testing.assert_allclose(adapt_images(x, (1, 16, 16), pre, chunk=2), adapt_images(x, (1, 16, 16), pre),
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(adapt_images(x, (1, 8, 8), pre), (x - 0.3) / 0.2, atol=1e-5)


def test_adapt_images_rejects_unconvertible_input():
    x = np.zeros((1, 2, 8, 8), np.float32)
    with pytest.raises(InputShapeError, match="2 channels"):
        adapt_images(x, (3, 8, 8), None)
    with pytest.raises(InputShapeError, match="not \\(C, H, W\\)"):
        adapt_images(np.zeros((1, 1, 8, 8), np.float32), (16,), None)  # type: ignore[arg-type]
    bad = Preprocessing(mean=(0.1, 0.2), std=(1.0, 1.0), size=(8, 8), channels=3)
    with pytest.raises(InputShapeError, match="mean has 2 values"):
        adapt_images(np.zeros((1, 1, 8, 8), np.float32), (3, 8, 8), bad)
    with pytest.raises(DatasetError, match="4-D"):
        adapt_images(np.zeros((8, 8), np.float32), (1, 8, 8), None)
