"""Reader (and a small writer) for the IDX format used by MNIST and Fashion-MNIST.

IDX is the format those datasets ship in, so supporting it directly (plain or
``.gz``) lets users point ``--data idx:DIR`` at a download without converting it.
Layout: 2 zero bytes, a dtype code, the number of dims, then each dim as a
big-endian uint32, then the data in C order, big-endian.
"""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from .base import ArrayDataset
from ..errors import DatasetError

#: IDX dtype code → big-endian NumPy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES_BY_KIND: dict[str, int] = {np.dtype(dt).str[1:]: code for code, dt in IDX_DTYPES.items()}

FASHION_MNIST_CLASS_NAMES: list[str] = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

#: The four files of an MNIST-style directory, by role.
IDX_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _read_bytes(path: Path) -> bytes:
    """Whole file contents, gunzipped when the name ends in ``.gz``."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"IDX file {str(path)!r} does not exist",
                           fix="check the path passed with --data idx:DIR") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DatasetError(f"IDX file {str(path)!r} is not a complete gzip stream ({exc})",
                           fix="download the file again; it looks truncated or corrupt") from None
    except OSError as exc:
        raise DatasetError(f"cannot read IDX file {str(path)!r} ({exc.strerror or exc})",
                           fix="check the file's permissions") from None


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes into a native-endian array; ``source`` names the file in errors."""
    if len(data) < 4:
        raise DatasetError(f"IDX file {source!r} is {len(data)} bytes, too short for the 4-byte magic number",
                           fix="download the file again; it looks truncated")
    zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0 or code not in IDX_DTYPES or ndim == 0:
        raise DatasetError(
            f"IDX file {source!r} has bad magic number 0x{data[:4].hex()}; expected 0x0000 + dtype code "
            f"({', '.join(f'0x{c:02x}' for c in IDX_DTYPES)}) + a non-zero dim count",
            fix="pass an IDX file (e.g. train-images-idx3-ubyte[.gz]), not another format",
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"IDX file {source!r} is truncated: header needs {header} bytes for {ndim} dims, "
                           f"file has {len(data)}", fix="download the file again")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    have = len(data) - header
    if have < expected:
        raise DatasetError(
            f"IDX file {source!r} is truncated: dims {dims} of {dtype.name} need {expected} data bytes, "
            f"found {have}", fix="download the file again",
        )
    if have > expected:
        raise DatasetError(
            f"IDX file {source!r} has {have - expected} trailing bytes after dims {dims} of {dtype.name}",
            fix="check the file is a single, unmodified IDX file",
        )
    arr = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header)
    return arr.reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (plain or ``.gz``) into a native-endian array."""
    p = Path(path)
    return parse_idx(_read_bytes(p), source=str(p))


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write ``array`` as IDX (gzipped if the name ends in ``.gz``); used for tests and fixtures."""
    arr = np.asarray(array)
    kind = arr.dtype.str[1:]
    if kind not in _CODES_BY_KIND:
        raise ValueError(f"dtype {arr.dtype} has no IDX code; use one of uint8, int8, int16, int32, float32, float64")
    if arr.ndim == 0 or arr.ndim > 255:
        raise ValueError(f"IDX needs 1..255 dims, got {arr.ndim}")
    code = _CODES_BY_KIND[kind]
    payload = (bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
               + np.ascontiguousarray(arr, dtype=IDX_DTYPES[code]).tobytes())
    p = Path(path)
    if p.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    p.write_bytes(payload)
    return p


def find_idx_file(directory: Path, stem: str) -> Path:
    """``stem`` or ``stem.gz`` inside ``directory``; DatasetError naming both if neither exists."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DatasetError(
        f"IDX directory {str(directory)!r} has no {stem!r} (or {stem}.gz)",
        fix=f"put the four MNIST-style files ({', '.join(IDX_FILES.values())}, optionally .gz) in that directory",
    )


def _images(path: Path) -> np.ndarray:
    raw = read_idx(path)
    if raw.ndim == 3:
        raw = raw[:, None, :, :]
    if raw.ndim != 4:
        raise DatasetError(f"IDX file {str(path)!r} holds shape {raw.shape}; expected images (N, H, W) or (N, C, H, W)",
                           fix="pass the *-images-idx3-ubyte file")
    x = raw.astype(np.float32)
    if raw.dtype == np.uint8:
        x /= 255.0
    return np.ascontiguousarray(x)


def _labels(path: Path) -> np.ndarray:
    raw = read_idx(path)
    if raw.ndim != 1 or not np.issubdtype(raw.dtype, np.integer):
        raise DatasetError(f"IDX file {str(path)!r} holds {raw.dtype} shape {raw.shape}; expected 1-D integer labels",
                           fix="pass the *-labels-idx1-ubyte file")
    if len(raw) and raw.min() < 0:
        raise DatasetError(f"IDX file {str(path)!r} has negative labels", fix="labels must be 0..num_classes-1")
    return raw.astype(np.int64)


def load_idx_dir(directory: str | os.PathLike[str], name: str | None = None,
                 class_names: list[str] | None = None) -> ArrayDataset:
    """Load an MNIST-style directory (train/t10k images and labels, plain or .gz) as an ArrayDataset."""
    d = Path(directory).expanduser()
    if not d.is_dir():
        raise DatasetError(f"IDX directory {str(d)!r} does not exist",
                           fix="pass --data idx:DIR with a directory holding the four MNIST-style files")
    paths = {role: find_idx_file(d, stem) for role, stem in IDX_FILES.items()}
    x_train, y_train = _images(paths["train_images"]), _labels(paths["train_labels"])
    x_test, y_test = _images(paths["test_images"]), _labels(paths["test_labels"])
    for split, x, y, img_role, lbl_role in (("train", x_train, y_train, "train_images", "train_labels"),
                                            ("test", x_test, y_test, "test_images", "test_labels")):
        if len(x) != len(y):
            raise DatasetError(
                f"{str(paths[img_role])!r} has {len(x)} images but {str(paths[lbl_role])!r} has {len(y)} labels",
                fix=f"use the {split} images and labels from the same download",
            )
    num_classes = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
    if class_names is not None:
        num_classes = max(num_classes, len(class_names))
    return ArrayDataset(name=name or f"idx:{d}", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                        num_classes=num_classes, class_names=list(class_names) if class_names else None)
