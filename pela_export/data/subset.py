"""A seeded subset of a dataset split, adapted to a model's input: the one way the
benchmarks (and anything else comparing methods) draw their images, so runs that
share a seed see the same samples."""
from __future__ import annotations

from typing import Any

import numpy as np


def model_split(dataset: str, loaded: Any, split: str, n: int | None = None,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images adapted to ``loaded``'s input as float32, int64 labels) of ``split`` ("train"/"test");
    ``n`` samples drawn by a seeded permutation, or all of them when ``n`` is None or too large."""
    from . import adapt_images, load_dataset

    ds = load_dataset(dataset)
    x, y = (ds.x_train, ds.y_train) if split == "train" else (ds.x_test, ds.y_test)
    if n is not None and n < len(x):
        idx = np.random.default_rng(seed).permutation(len(x))[:n]
        x, y = x[idx], y[idx]
    return adapt_images(x, loaded.input_shape, loaded.preprocessing).astype(np.float32), y.astype(np.int64)
