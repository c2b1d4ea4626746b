import numpy as np
import pytest

from pela_export.errors import InputShapeError, OptionError
from pela_export.models.io import (BATCH, SEQUENCE, AxisRange, InputSpec, IOSpec, OutputSpec, as_feeds, batch_len,
                                   batch_slice, io_from_dict, io_to_dict, single_input)


def _text_io(types: int = 2) -> IOSpec:
    return IOSpec((InputSpec("input_ids", "int64", (BATCH, SEQUENCE), "token_ids", 0, 50),
                   InputSpec("attention_mask", "int64", (BATCH, SEQUENCE), "attention_mask", 0, 2),
                   InputSpec("token_type_ids", "int64", (BATCH, SEQUENCE), "token_type_ids", 0, types)),
                  (OutputSpec("logits"),), {BATCH: AxisRange(1, 1, 32), SEQUENCE: AxisRange(1, 128, 512)})


def test_single_input_is_the_classic_image_signature():
    io = single_input("input", (3, 16, 16))
    assert io.input_names == ["input"] and io.output_names == ["logits"] and io.is_single_tensor()
    assert io.dynamic_axes() == {"input": {0: "batch"}, "logits": {0: "batch"}}
    assert io.dummy(4)["input"].shape == (4, 3, 16, 16)
    assert io.axes == {BATCH: AxisRange(1, 1, 32)}


def test_text_dummy_feeds_are_valid_padded_batches():
    io = _text_io()
    feeds = io.dummy(6, seed=3, sizes={SEQUENCE: 20})
    ids, mask, types = feeds["input_ids"], feeds["attention_mask"], feeds["token_type_ids"]
    assert ids.shape == mask.shape == types.shape == (6, 20) and ids.dtype == np.int64
    assert mask[0].all() and not mask.all(), "row 0 unpadded, some rows padded"
    lengths = mask.sum(1)
    for row, n in enumerate(lengths):
        assert mask[row, :n].all() and not mask[row, n:].any(), "right padding: ones then zeros"
        assert (ids[row, n:] == 0).all() and (types[row, n:] == 0).all(), "padding positions hold 0"
    assert ids.max() < 50 and set(np.unique(types)) <= {0, 1}
    np.testing.assert_array_equal(io.dummy(6, seed=3, sizes={SEQUENCE: 20})["input_ids"], ids)


def test_token_types_stay_zero_when_the_model_has_one_type():
    assert not _text_io(types=1).dummy(3)["token_type_ids"].any()


def test_dynamic_axes_and_profiles_name_every_input():
    io = _text_io()
    assert io.dynamic_axis_names() == [BATCH, SEQUENCE]
    assert io.dynamic_axes()["attention_mask"] == {0: BATCH, 1: SEQUENCE}
    assert io.axes[SEQUENCE] == AxisRange(1, 128, 512)
    assert io.concrete_shape("input_ids", {BATCH: 2}) == (2, 128)


def test_round_trip_through_a_dict():
    io = _text_io()
    assert io_from_dict(io_to_dict(io)) == io


def test_bad_descriptions_are_named():
    with pytest.raises(OptionError, match="unique"):
        IOSpec((InputSpec("x", "float32", (BATCH,)),), (OutputSpec("x"),), {BATCH: AxisRange(1, 1, 8)})
    with pytest.raises(OptionError, match="'sequence' has no size range"):
        IOSpec((InputSpec("ids", "int64", (BATCH, SEQUENCE)),), (OutputSpec("y"),), {BATCH: AxisRange(1, 1, 8)})
    with pytest.raises(OptionError, match="min <= opt <= max"):
        IOSpec(_text_io().inputs, _text_io().outputs, {BATCH: AxisRange(1, 1, 8), SEQUENCE: AxisRange(1, 600, 512)})
    with pytest.raises(InputShapeError, match="no input 'pixel_values'"):
        _text_io().input("pixel_values")
    with pytest.raises(OptionError, match="malformed"):
        io_from_dict({"inputs": [{"dtype": "int64"}], "outputs": []})


def test_batch_helpers_treat_arrays_and_dicts_alike():
    arr = np.arange(12).reshape(6, 2)
    d = {"input_ids": arr, "attention_mask": arr > 3}
    assert batch_len(arr) == batch_len(d) == 6
    assert batch_slice(d, 2, 4)["attention_mask"].shape == (2, 2)
    assert list(as_feeds(d, ["attention_mask", "input_ids"])) == ["attention_mask", "input_ids"]
    assert list(as_feeds(arr, ["input"])) == ["input"]
    with pytest.raises(InputShapeError, match="lacks input"):
        as_feeds(d, ["input_ids", "token_type_ids"])
    with pytest.raises(InputShapeError, match="one array given"):
        as_feeds(arr, ["input_ids", "attention_mask"])
