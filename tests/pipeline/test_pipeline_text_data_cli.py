"""Bad text-model data options through the CLI: one clear error each (exit code 2, problem + fix naming a flag)."""
from __future__ import annotations

import pytest

from pela_export.cli.main import main

transformers = pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")
import tiny_hf_text as tiny  # noqa: E402  (tests/fixtures)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cls")
    tiny.bert_classifier(d, positions=64)
    tiny.with_tokenizer(d)
    return d


@pytest.fixture
def data_file(tmp_path):
    p = tmp_path / "reviews.csv"
    p.write_text("title,body,label\na,the market rose,x\nb,oil fell,y\n", encoding="utf-8")
    return p


def _error(capsys, argv):
    assert main([*argv, "--no-progress"]) == 2
    return capsys.readouterr().err


def test_max_length_beyond_the_models_positions(tmp_path, capsys, model_dir):
    err = _error(capsys, ["compress", f"hf:{model_dir}", "--max-length", "999", "--out", str(tmp_path / "o")])
    assert "--max-length 999 is outside the model's positions (2..64)" in err
    assert "fix: pass --max-length between 2 and 64" in err


def test_text_file_without_the_named_column(tmp_path, capsys, model_dir, data_file):
    err = _error(capsys, ["compress", f"hf:{model_dir}", "--method", "whiten", "--calib-data", f"text:{data_file}",
                          "--text-column", "review", "--out", str(tmp_path / "o")])
    assert "has no text column 'review' (columns: title, body, label)" in err and "--text-column" in err


def test_image_dataset_for_a_text_model(tmp_path, capsys, model_dir):
    err = _error(capsys, ["compress", f"hf:{model_dir}", "--method", "whiten", "--calib-data", "digits",
                          "--out", str(tmp_path / "o")])
    assert "--calib-data digits gives images, but 'cls" in err and "is a text model" in err
    assert "fix: pass --calib-data a text file" in err


def test_empty_text_file(tmp_path, capsys, model_dir):
    empty = tmp_path / "empty.tsv"
    empty.write_text("", encoding="utf-8")
    err = _error(capsys, ["compress", f"hf:{model_dir}", "--method", "whiten", "--calib-data", str(empty),
                          "--out", str(tmp_path / "o")])
    assert "is empty" in err and "--calib-data" in err
