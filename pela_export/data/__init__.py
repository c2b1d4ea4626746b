"""Datasets for accuracy checks and calibration, chosen with ``--data``.

Specs: ``digits`` (scikit-learn, offline), ``fashion-mnist`` (the Debian
``dataset-fashion-mnist`` package), ``idx:DIR`` (any MNIST-style directory).
:func:`adapt_images` lets any of them feed any image model, so accuracy can be
compared before and after compression even when the model expects e.g. 3×224×224.
Text models take text files instead (``text:FILE``, ``FILE.tab|.tsv|.csv|.jsonl``):
see :mod:`.text`.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from .._registry import Registry
from ..errors import DatasetError, InputShapeError
from ..models.base import Preprocessing
from .base import ArrayDataset, iterate_batches
from .digits import DIGITS_CLASS_NAMES, load_digits_dataset
from .idx import FASHION_MNIST_CLASS_NAMES, load_idx_dir, read_idx, write_idx

__all__ = [
    "ArrayDataset", "DATASETS", "DIGITS_CLASS_NAMES", "FASHION_MNIST_CLASS_NAMES", "FASHION_MNIST_DIR",
    "adapt_images", "dataset_choices", "iterate_batches", "load_dataset", "load_digits_dataset",
    "load_idx_dir", "read_idx", "write_idx",
]

#: Where the Debian package ``dataset-fashion-mnist`` installs the IDX files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: Spec scheme → loader taking the text after ``scheme:`` (None when absent).
DatasetLoader = Callable[[str | None], ArrayDataset]
DATASETS: Registry[DatasetLoader] = Registry("dataset", flag="--data")


def _no_argument(scheme: str, arg: str | None) -> None:
    if arg is not None:
        raise DatasetError(f"dataset {scheme!r} takes no argument, got {scheme}:{arg}",
                           fix=f"pass --data {scheme}, or --data idx:DIR for files in a directory")


@DATASETS.register("digits")
def _load_digits(arg: str | None) -> ArrayDataset:
    _no_argument("digits", arg)
    return load_digits_dataset()


@DATASETS.register("fashion-mnist")
def _load_fashion_mnist(arg: str | None) -> ArrayDataset:
    _no_argument("fashion-mnist", arg)
    if not FASHION_MNIST_DIR.is_dir():
        raise DatasetError(
            f"Fashion-MNIST is not installed (no directory {str(FASHION_MNIST_DIR)!r})",
            fix="run `apt-get install dataset-fashion-mnist`, or download the four IDX files and pass --data idx:DIR",
        )
    return load_idx_dir(FASHION_MNIST_DIR, name="fashion-mnist", class_names=FASHION_MNIST_CLASS_NAMES)


@DATASETS.register("idx")
def _load_idx(arg: str | None) -> ArrayDataset:
    if not arg:
        raise DatasetError("dataset spec 'idx' needs a directory",
                           fix="pass --data idx:DIR with the directory holding the MNIST-style IDX files")
    return load_idx_dir(arg)


def dataset_choices() -> list[str]:
    """Spec forms accepted by :func:`load_dataset`, for help texts and errors."""
    return [f"{n}:DIR" if n == "idx" else n for n in DATASETS.names()]


def load_dataset(spec: str) -> ArrayDataset:
    """Resolve a ``--data`` spec (``digits``, ``fashion-mnist``, ``idx:DIR``) to an ArrayDataset."""
    scheme, sep, arg = spec.strip().partition(":")
    if scheme not in DATASETS:
        raise DatasetError(f"unknown dataset {spec!r}",
                           fix=f"pass --data with one of: {', '.join(dataset_choices())} "
                               "(a text model: text:FILE or FILE.tab|.tsv|.csv|.jsonl)")
    return DATASETS.get(scheme)(arg if sep else None)


def adapt_images(x: np.ndarray, input_shape: tuple[int, int, int],
                 preprocessing: Preprocessing | None, chunk: int = 1024) -> np.ndarray:
    """Turn [0, 1] NCHW images into model input: resize to H×W (bilinear), match C, normalise.

    Channels: 1 → C by repetition, C → 1 by averaging; other mismatches are an error.
    ``chunk`` bounds the temporary memory used while resizing large datasets.
    """
    import torch
    import torch.nn.functional as F

    if x.ndim != 4:
        raise DatasetError(f"images have shape {x.shape}, expected 4-D NCHW",
                           fix="reshape images to (N, C, H, W)")
    if len(input_shape) != 3:
        raise InputShapeError(f"model input shape {tuple(input_shape)} is not (C, H, W)",
                              fix="pass --input-shape C,H,W for an image model")
    c_out, h_out, w_out = (int(v) for v in input_shape)
    c_in = int(x.shape[1])
    if c_in != c_out and c_in != 1 and c_out != 1:
        raise InputShapeError(
            f"dataset images have {c_in} channels but the model expects {c_out}; only 1↔C conversion is automatic",
            fix="choose a dataset whose channel count matches the model (--data), or pass --input-shape",
        )
    mean = std = None
    if preprocessing is not None:
        mean = np.asarray(preprocessing.mean, dtype=np.float32)
        std = np.asarray(preprocessing.std, dtype=np.float32)
        for label, v in (("mean", mean), ("std", std)):
            if v.size not in (1, c_out):
                raise InputShapeError(f"preprocessing {label} has {v.size} values but the model has {c_out} channels",
                                      fix="record one mean/std value per input channel")
        if np.any(std == 0):
            raise InputShapeError("preprocessing std contains 0", fix="record a non-zero std per channel")
        mean = mean.reshape(1, -1, 1, 1)
        std = std.reshape(1, -1, 1, 1)

    out = np.empty((len(x), c_out, h_out, w_out), dtype=np.float32)
    for start in range(0, len(x), max(1, chunk)):
        t = torch.from_numpy(np.ascontiguousarray(x[start:start + chunk], dtype=np.float32))
        if c_in != c_out:
            t = t.repeat(1, c_out, 1, 1) if c_in == 1 else t.mean(dim=1, keepdim=True)
        if t.shape[-2:] != (h_out, w_out):
            t = F.interpolate(t, size=(h_out, w_out), mode="bilinear", align_corners=False)
        block = t.numpy()
        if mean is not None:
            block = (block - mean) / std
        out[start:start + len(block)] = block
    return out
