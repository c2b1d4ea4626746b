"""The digits split is fixed and follows the ArrayDataset conventions."""
from __future__ import annotations

import numpy as np
import pytest

from pela_export.data import ArrayDataset, iterate_batches, load_dataset, load_digits_dataset
from pela_export.errors import DatasetError


def test_digits_shapes_dtypes_and_range():
    ds = load_digits_dataset()
    assert ds.name == "digits"
    assert ds.x_train.shape == (1347, 1, 8, 8)
    assert ds.x_test.shape == (450, 1, 8, 8)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    assert ds.x_train.max() == 1.0  # 16/16 occurs
    assert ds.num_classes == 10 and ds.class_names == [str(i) for i in range(10)]
    assert ds.image_shape == (1, 8, 8)


def test_digits_split_is_deterministic_and_stratified():
    a, b = load_digits_dataset(), load_dataset("digits")
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    counts = np.bincount(a.y_test, minlength=10)
    assert counts.min() >= 43 and counts.max() <= 47  # ~25% of ~180 per class


def test_iterate_batches_covers_everything_in_order():
    x, y = np.arange(10).reshape(10, 1), np.arange(10)
    batches = list(iterate_batches(x, y, 4))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)
    with pytest.raises(ValueError):
        list(iterate_batches(x, y, 0))


def test_array_dataset_rejects_bad_shapes():
    x = np.zeros((4, 8, 8), np.float32)
    y = np.zeros(4, np.int64)
    with pytest.raises(DatasetError, match="expected 4-D NCHW"):
        ArrayDataset("bad", x, y, x, y, 10)
    x4 = x[:, None]
    with pytest.raises(DatasetError, match="float32/int64"):
        ArrayDataset("bad", x4, y.astype(np.int32), x4, y, 10)
