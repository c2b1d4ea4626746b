"""IDX reading/writing and MNIST-style directory loading, on files the tests write."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from pela_export.data import load_dataset
from pela_export.data.idx import IDX_FILES, load_idx_dir, parse_idx, read_idx, write_idx
from pela_export.errors import DatasetError


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("array", [
    np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
    np.array([-5, 0, 7], dtype=np.int8),
    np.array([[1, -2], [300, 40000]], dtype=np.int32),
    np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2),
    np.array([1.5, -2.25], dtype=np.float64),
    np.array([-300, 2], dtype=np.int16),
])
def test_idx_round_trip(tmp_path, array, suffix):
    path = write_idx(tmp_path / f"a-idx{suffix}", array)
    back = read_idx(path)
    assert back.dtype == array.dtype and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_idx_header_is_big_endian(tmp_path):
    raw = write_idx(tmp_path / "x", np.zeros((3, 258), np.uint8)).read_bytes()
    assert raw[:4] == bytes([0, 0, 0x08, 2])
    assert raw[4:12] == bytes([0, 0, 0, 3, 0, 0, 1, 2])


def _write_dir(d: Path, n_train: int = 12, n_test: int = 5, gz: bool = False, size: int = 6) -> Path:
    rng = np.random.default_rng(0)
    d.mkdir(parents=True, exist_ok=True)
    sfx = ".gz" if gz else ""
    write_idx(d / f"{IDX_FILES['train_images']}{sfx}", rng.integers(0, 256, (n_train, size, size), dtype=np.uint8))
    write_idx(d / f"{IDX_FILES['train_labels']}{sfx}", (np.arange(n_train) % 10).astype(np.uint8))
    write_idx(d / f"{IDX_FILES['test_images']}{sfx}", rng.integers(0, 256, (n_test, size, size), dtype=np.uint8))
    write_idx(d / f"{IDX_FILES['test_labels']}{sfx}", (np.arange(n_test) % 10).astype(np.uint8))
    return d


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_dir(tmp_path, gz):
    d = _write_dir(tmp_path / "mnist", gz=gz)
    ds = load_idx_dir(d)
    assert ds.x_train.shape == (12, 1, 6, 6) and ds.x_test.shape == (5, 1, 6, 6)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.x_train.max() <= 1.0 and ds.x_train.min() >= 0.0
    raw = read_idx(next(d.glob("train-images*")))
    np.testing.assert_allclose(ds.x_train[:, 0], raw / 255.0, rtol=1e-6)
    assert ds.num_classes == 10
    via_spec = load_dataset(f"idx:{d}")
    np.testing.assert_array_equal(via_spec.y_test, ds.y_test)


def test_bad_magic_names_file(tmp_path):
    p = tmp_path / "bad-idx"
    p.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(DatasetError, match="bad magic") as e:
        read_idx(p)
    assert str(p) in str(e.value)


def test_truncated_file_names_file_and_expectation(tmp_path):
    p = write_idx(tmp_path / "t-idx", np.zeros((4, 5, 5), np.uint8))
    p.write_bytes(p.read_bytes()[:-7])
    with pytest.raises(DatasetError, match="truncated") as e:
        read_idx(p)
    assert str(p) in str(e.value) and "100 data bytes" in str(e.value) and "found 93" in str(e.value)


def test_truncated_header_and_gzip(tmp_path):
    with pytest.raises(DatasetError, match="too short"):
        parse_idx(b"\x00\x00", source="tiny")
    with pytest.raises(DatasetError, match="header needs 12 bytes"):
        parse_idx(bytes([0, 0, 8, 2, 0, 0, 0, 1]), source="hdr")
    p = write_idx(tmp_path / "z-idx.gz", np.zeros((50, 28, 28), np.uint8))
    p.write_bytes(p.read_bytes()[:30])
    with pytest.raises(DatasetError) as e:
        read_idx(p)
    assert str(p) in str(e.value)


def test_trailing_bytes_rejected(tmp_path):
    p = write_idx(tmp_path / "t-idx", np.zeros(3, np.uint8))
    p.write_bytes(p.read_bytes() + b"xx")
    with pytest.raises(DatasetError, match="trailing"):
        read_idx(p)


def test_missing_dir_and_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="does not exist") as e:
        load_idx_dir(tmp_path / "nope")
    assert "nope" in str(e.value)
    d = _write_dir(tmp_path / "partial")
    (d / IDX_FILES["test_labels"]).unlink()
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte") as e:
        load_idx_dir(d)
    assert "--data" in str(e.value) or "four MNIST-style files" in str(e.value)


def test_missing_file_read(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_idx(tmp_path / "absent-idx.gz")


def test_count_mismatch_names_both_files(tmp_path):
    d = _write_dir(tmp_path / "mm")
    write_idx(d / IDX_FILES["train_labels"], np.zeros(3, np.uint8))
    with pytest.raises(DatasetError, match="12 images but") as e:
        load_idx_dir(d)
    assert IDX_FILES["train_labels"] in str(e.value)


def test_labels_file_with_images_rejected(tmp_path):
    d = _write_dir(tmp_path / "swap")
    img = d / IDX_FILES["test_images"]
    (d / IDX_FILES["test_labels"]).write_bytes(img.read_bytes())
    with pytest.raises(DatasetError, match="1-D integer labels"):
        load_idx_dir(d)


def test_gz_written_files_are_real_gzip(tmp_path):
    p = write_idx(tmp_path / "g-idx.gz", np.ones(4, np.uint8))
    assert gzip.decompress(p.read_bytes())[:4] == bytes([0, 0, 8, 1])
