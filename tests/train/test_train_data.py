"""Training data sources: registry, .npz, image folders, torch Datasets."""
import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from pela_export.errors import DatasetError
from pela_export.models.base import Preprocessing
from pela_export.train import (
    from_arrays,
    from_npz,
    from_spec,
    from_torch_dataset,
    image_folder,
    read_npz,
)

PRE = Preprocessing(mean=(0.5,), std=(0.25,), size=(16, 16), channels=1)


def test_registry_digits_adapted_to_model_input():
    data = from_spec("digits", (1, 16, 16), PRE)
    assert data.labelled and len(data) == 1347 and tuple(data.x.shape[1:]) == (1, 16, 16)
    x, y = next(data.batches(32, torch.Generator().manual_seed(0)))
    assert x.shape == (32, 1, 16, 16) and y.dtype == torch.int64


def test_shuffling_is_deterministic_by_seed():
    data = from_arrays(torch.arange(20.0).view(20, 1), torch.arange(20))
    order = lambda seed: torch.cat([y for _, y in data.batches(6, torch.Generator().manual_seed(seed))])
    assert torch.equal(order(3), order(3)) and not torch.equal(order(3), order(4))
    assert sorted(order(3).tolist()) == list(range(20))
    assert torch.cat([y for _, y in data.batches(6)]).tolist() == list(range(20))


def test_npz_labelled_and_unlabelled(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, size=(10, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "l.npz", x=x, y=np.arange(10) % 3)
    np.savez(tmp_path / "u.npz", x=x.astype(np.float32) / 255)
    xs, ys = read_npz(tmp_path / "l.npz")
    assert xs.shape == (10, 1, 8, 8) and xs.dtype == np.float32 and xs.max() <= 1.0 and ys.dtype == np.int64
    lab = from_npz(tmp_path / "l.npz", (1, 16, 16), PRE)
    unl = from_npz(tmp_path / "u.npz", (1, 16, 16), PRE)
    assert lab.labelled and not unl.labelled and tuple(unl.x.shape) == (10, 1, 16, 16)
    assert next(unl.batches(4))[1] is None


@pytest.mark.parametrize("arrays, key, text", [
    (dict(x=np.zeros((4, 8), np.float32)), "'x'", "expected (N, C, H, W)"),
    (dict(x=np.zeros((4, 1, 8, 8), np.int32)), "'x'", "expected float"),
    (dict(x=np.zeros((4, 1, 8, 8), np.float32), y=np.zeros(3, np.int64)), "'y'", "(4,)"),
    (dict(x=np.zeros((4, 1, 8, 8), np.float32), y=np.zeros(4, np.float32)), "'y'", "integer"),
    (dict(images=np.zeros((4, 1, 8, 8), np.float32)), "'x'", "images"),
])
def test_npz_errors_name_the_key(tmp_path, arrays, key, text):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError) as err:
        read_npz(path)
    assert key in str(err.value) and text in str(err.value) and "fix:" in str(err.value)


def test_npz_missing_or_corrupt(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_npz(tmp_path / "nope.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="cannot read"):
        read_npz(tmp_path / "junk.npz")


def _write_png(path, value):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((10, 12, 3), value, dtype=np.uint8)).save(path)


def test_image_folder_imagenet_layout(tmp_path):
    for cls, v in (("cat", 0), ("dog", 255)):
        for i in range(3):
            _write_png(tmp_path / cls / f"{i}.png", v)
    (tmp_path / "empty_class").mkdir()
    data = image_folder(tmp_path, PRE)
    assert data.labelled and len(data) == 6 and data.dataset.classes == ["cat", "dog"]
    x, y = next(data.batches(6))
    assert x.shape == (6, 1, 16, 16)
    assert torch.allclose(x[y == 0], torch.full_like(x[y == 0], -2.0))  # (0 - 0.5) / 0.25
    assert torch.allclose(x[y == 1], torch.full_like(x[y == 1], 2.0))


def test_flat_image_folder_is_unlabelled(tmp_path):
    for i in range(2):
        _write_png(tmp_path / f"{i}.jpg", 128)
    data = image_folder(tmp_path, PRE)
    assert not data.labelled and next(data.batches(2))[1] is None


def test_image_folder_without_images(tmp_path):
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "notes.txt").write_text("no images here")
    with pytest.raises(DatasetError) as err:
        image_folder(tmp_path, PRE)
    assert str(tmp_path) in str(err.value) and "no images" in str(err.value)
    with pytest.raises(DatasetError, match="does not exist"):
        image_folder(tmp_path / "missing", PRE)


def test_torch_datasets_labelled_or_not():
    x = torch.randn(5, 1, 4, 4)
    lab = from_torch_dataset(TensorDataset(x, torch.arange(5)))
    unl = from_torch_dataset(TensorDataset(x))
    assert lab.labelled and not unl.labelled
    xb, yb = next(lab.batches(5))
    assert torch.equal(xb, x) and yb.tolist() == list(range(5))
    assert next(unl.batches(2))[1] is None


def test_empty_data_is_an_error():
    with pytest.raises(DatasetError, match="empty"):
        from_arrays(torch.zeros(0, 1, 4, 4))
