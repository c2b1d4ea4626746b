"""model_split: a seeded, reproducible subset of a split, adapted to the model's input."""
import numpy as np

from pela_export.data.subset import model_split
from pela_export.models.base import Preprocessing


class _Loaded:
    input_shape = (1, 16, 16)
    preprocessing = Preprocessing(mean=(0.5,), std=(0.25,), size=(16, 16), channels=1, layout="NCHW")


def test_seeded_subset_is_reproducible_and_adapted():
    x1, y1 = model_split("digits", _Loaded(), "train", n=20, seed=3)
    x2, y2 = model_split("digits", _Loaded(), "train", n=20, seed=3)
    x3, _ = model_split("digits", _Loaded(), "train", n=20, seed=4)
    assert x1.shape == (20, 1, 16, 16) and x1.dtype == np.float32 and y1.dtype == np.int64
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(x1, x3)


def test_n_larger_than_split_returns_all_of_it():
    x, y = model_split("digits", _Loaded(), "test", n=10**6)
    xa, ya = model_split("digits", _Loaded(), "test")
    assert len(x) == len(xa) == len(y) == len(ya) > 100
