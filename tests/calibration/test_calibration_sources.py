"""Calibration sources and sets: seeded selection, manifests, and clear errors on bad data."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pela_export.calibration import (SOURCES, CalibrationManifest, ModelInput, calibration_set, from_feeds, from_manifest,
                         source_choices)
from pela_export.errors import ArtifactError, DatasetError, OptionError
from pela_export.models.base import Preprocessing

DIGITS_IN = ModelInput("x", (1, 8, 8))


def _npz(path, n: int = 20, seed: int = 0, with_x: bool = True) -> None:
    x = np.random.default_rng(seed).random((n, 1, 6, 6)).astype(np.float32)
    if with_x:
        np.savez(path, x=x, y=np.arange(n))
    else:
        np.savez(path, images=x)


def test_registry_choices() -> None:
    assert {"digits", "fashion-mnist", "idx", "images", "npz"} <= set(SOURCES.names())
    assert "images:DIR" in source_choices() and "idx:DIR" in source_choices()


def test_digits_default_is_model_ready_and_batched() -> None:
    pre = Preprocessing(mean=(0.5,) * 3, std=(0.25,) * 3, size=(12, 12), channels=3)
    cs = calibration_set("digits", ModelInput("img", (3, 12, 12), pre), samples=10, batch_size=4)
    assert cs.num_samples == 10 and len(cs) == 3
    assert [len(b["img"]) for b in cs] == [4, 4, 2]
    assert cs[0]["img"].shape == (4, 3, 12, 12) and cs[0]["img"].dtype == np.float32
    assert cs[0]["img"].min() < 0  # normalised with the model's mean/std
    m = cs.manifest
    assert m.source == "digits (train split)" and m.seed == 0 and m.samples == 10 and len(m.indices) == 10
    assert m.inputs == {"img": [10, 3, 12, 12]}


def test_same_seed_same_selection_and_hash_different_seed_differs() -> None:
    a = calibration_set("digits", DIGITS_IN, samples=16, batch_size=8, seed=3)
    b = calibration_set("digits", DIGITS_IN, samples=16, batch_size=8, seed=3)
    c = calibration_set("digits", DIGITS_IN, samples=16, batch_size=8, seed=4)
    assert a.manifest == b.manifest
    assert a.manifest.indices != c.manifest.indices and a.manifest.sha256 != c.manifest.sha256


def test_manifest_round_trip_and_reload_check(tmp_path) -> None:
    cs = calibration_set("digits", DIGITS_IN, samples=8, batch_size=4, seed=1)
    path = cs.manifest.write(tmp_path / "m.calib.manifest.json")
    assert CalibrationManifest.read(path) == cs.manifest
    again = from_manifest(path, DIGITS_IN)
    assert again.manifest.sha256 == cs.manifest.sha256
    for a, b in zip(again, cs, strict=True):
        np.testing.assert_array_equal(a["x"], b["x"])
    # the same manifest against other data (another preprocessing) is refused, naming the field
    other = ModelInput("x", (1, 8, 8), Preprocessing(mean=(0.1,), std=(1.0,), size=(8, 8), channels=1))
    with pytest.raises(ArtifactError, match="sha256"):
        from_manifest(path, other)
    bad = json.loads(path.read_text())
    bad.pop("sha256")
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ArtifactError, match="malformed"):
        CalibrationManifest.read(tmp_path / "bad.json")


def test_npz_source_and_changed_file_detected(tmp_path) -> None:
    path = tmp_path / "calib.npz"
    _npz(path)
    mi = ModelInput("x", (1, 6, 6))
    cs = calibration_set(str(path), mi, samples=5, batch_size=5)
    assert cs.manifest.source == f"npz:{path}" and cs.num_samples == 5
    _npz(path, seed=1)  # same file name, other content
    with pytest.raises(ArtifactError, match="no longer matches"):
        from_manifest(cs.manifest, mi)


def test_npz_without_x(tmp_path) -> None:
    path = tmp_path / "noxs.npz"
    _npz(path, with_x=False)
    with pytest.raises(DatasetError, match="no key 'x'"):
        calibration_set(f"npz:{path}", ModelInput("x", (1, 6, 6)))
    with pytest.raises(DatasetError, match="does not exist"):
        calibration_set(str(tmp_path / "missing.npz"), ModelInput("x", (1, 6, 6)))


def _png(path, value: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((10, 12, 3), value, dtype=np.uint8)).save(path)


def test_image_folder_records_selected_files(tmp_path) -> None:
    for cls, base in (("cat", 10), ("dog", 200)):
        for i in range(3):
            _png(tmp_path / "imgs" / cls / f"{i}.png", base + i)
    mi = ModelInput("x", (3, 8, 8))
    cs = calibration_set(str(tmp_path / "imgs"), mi, samples=4, batch_size=2, seed=0)
    assert cs.manifest.source == f"images:{tmp_path / 'imgs'}"
    assert len(cs.manifest.files) == 4 and all(f.split("/")[0] in {"cat", "dog"} for f in cs.manifest.files)
    first = cs.manifest.files[0]
    value = int(first.split("/")[1][0]) + (10 if first.startswith("cat") else 200)
    np.testing.assert_allclose(cs[0]["x"][0], value / 255.0, atol=1e-6)  # no preprocessing: plain [0, 1]


def test_image_folder_without_images(tmp_path) -> None:
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    (tmp_path / "empty" / "cls" / "notes.txt").write_text("no images")
    with pytest.raises(DatasetError, match="contains no images") as info:
        calibration_set(f"images:{tmp_path / 'empty'}", ModelInput("x", (3, 8, 8)))
    assert "--calib-data" in str(info.value)


def test_api_arrays_and_batches() -> None:
    x = np.arange(24, dtype=np.float64).reshape(6, 4)
    cs = calibration_set({"a": x, "ids": np.arange(6)}, samples=6, batch_size=4)
    assert cs[0]["a"].dtype == np.float32 and cs[0]["ids"].dtype == np.int64
    fed = from_feeds([{"a": x[:4]}, {"a": x[4:]}])
    assert fed.num_samples == 6 and fed.manifest.seed is None and fed.batch_size == 4
    assert from_manifest(fed.manifest, source=[{"a": x[:4]}, {"a": x[4:]}]).manifest.sha256 == fed.manifest.sha256
    with pytest.raises(OptionError, match="caller-provided"):
        from_manifest(fed.manifest)


def test_text_batches_of_different_lengths_are_right_padded() -> None:
    """Token ids and masks of batches padded to their own longest row: padded again to the longest
    (0 ids, 0 mask: hidden from the model); float inputs of different shapes are still an error."""
    short = {"input_ids": np.full((2, 3), 7), "attention_mask": np.ones((2, 3), np.int64)}
    long = {"input_ids": np.full((1, 5), 8), "attention_mask": np.ones((1, 5), np.int64)}
    fed = from_feeds([short, long])
    assert fed.manifest.inputs == {"input_ids": [3, 5], "attention_mask": [3, 5]}
    assert fed.arrays["input_ids"][:2, 3:].tolist() == [[0, 0], [0, 0]] and fed.arrays["input_ids"][2].tolist() == [8] * 5
    assert fed.arrays["attention_mask"].sum(axis=1).tolist() == [3, 3, 5]
    with pytest.raises(DatasetError, match="do not concatenate"):
        from_feeds([{"x": np.zeros((2, 3), np.float32)}, {"x": np.zeros((2, 4), np.float32)}])


@pytest.mark.parametrize(("source", "error", "text"), [
    (np.zeros((0, 4), np.float32), DatasetError, "empty"),
    ([], DatasetError, "empty"),
    ({"a": np.zeros((3, 2)), "b": np.zeros((4, 2))}, DatasetError, "different example counts"),
    ("nosuchsource", DatasetError, "unknown calibration source"),
    (42, OptionError, "cannot use"),
])
def test_bad_sources(source, error, text) -> None:
    with pytest.raises(error, match=text):
        calibration_set(source, ModelInput("a", (4,)))


def test_bad_sizes_and_non_image_models() -> None:
    with pytest.raises(OptionError, match="sample count"):
        calibration_set("digits", DIGITS_IN, samples=0)
    with pytest.raises(OptionError, match="batch size"):
        calibration_set("digits", DIGITS_IN, batch_size=0)
    with pytest.raises(DatasetError, match="not C, H, W"):
        calibration_set("digits", ModelInput("tokens", (16,)))
    with pytest.raises(OptionError, match="model input"):
        calibration_set("digits", None)
