"""The in-memory dataset every loader returns.

Datasets here are small (digits, Fashion-MNIST), so they live in NumPy arrays:
one shape convention (float32 NCHW in [0, 1], int64 labels) lets training,
accuracy checks and calibration share code regardless of where the data came from.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import DatasetError


@dataclass
class ArrayDataset:
    """A train/test split of images (float32 NCHW in [0, 1]) and int64 labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: list[str] | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Fail early with a DatasetError if arrays break the shape/dtype convention."""
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.ndim != 4:
                raise DatasetError(
                    f"dataset {self.name!r}: {split} images have shape {x.shape}, expected 4-D NCHW",
                    fix="reshape images to (N, C, H, W) before building an ArrayDataset",
                )
            if y.ndim != 1 or len(y) != len(x):
                raise DatasetError(
                    f"dataset {self.name!r}: {split} labels have shape {y.shape}, expected ({len(x)},)",
                    fix="provide exactly one integer label per image",
                )
            if x.dtype != np.float32 or y.dtype != np.int64:
                raise DatasetError(
                    f"dataset {self.name!r}: {split} arrays are {x.dtype}/{y.dtype}, expected float32/int64",
                    fix="cast images with .astype(np.float32) and labels with .astype(np.int64)",
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DatasetError(
                f"dataset {self.name!r}: train images {self.x_train.shape[1:]} and test images "
                f"{self.x_test.shape[1:]} differ in C×H×W",
                fix="use train and test files from the same dataset",
            )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)

    def describe(self) -> dict[str, object]:
        """JSON-ready summary for reports."""
        return {
            "name": self.name,
            "train_size": int(len(self.x_train)),
            "test_size": int(len(self.x_test)),
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
        }


def iterate_batches(x: np.ndarray, y: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield consecutive (x, y) slices of at most ``batch_size`` items, in order (last may be short)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} items but y has {len(y)}")
    for start in range(0, len(x), batch_size):
        yield x[start:start + batch_size], y[start:start + batch_size]
