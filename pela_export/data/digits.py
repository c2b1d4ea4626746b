"""scikit-learn's 8×8 handwritten digits: bundled with scikit-learn, so the
default model can be trained and checked offline with no download."""
from __future__ import annotations

import numpy as np

from .base import ArrayDataset

DIGITS_CLASS_NAMES: list[str] = [str(i) for i in range(10)]

#: The split is fixed so accuracies from different runs and machines compare.
TEST_SIZE = 0.25
SPLIT_SEED = 0


def load_digits_dataset() -> ArrayDataset:
    """1 797 grey 8×8 digits (values 0..16 scaled to [0, 1]), stratified 75/25 split, seed 0."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (np.asarray(bunch.images, dtype=np.float32) / 16.0)[:, None, :, :]
    y = np.asarray(bunch.target, dtype=np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=y,
    )
    return ArrayDataset(
        name="digits",
        x_train=np.ascontiguousarray(x_train),
        y_train=np.ascontiguousarray(y_train),
        x_test=np.ascontiguousarray(x_test),
        y_test=np.ascontiguousarray(y_test),
        num_classes=10,
        class_names=list(DIGITS_CLASS_NAMES),
    )
