"""A bad --profile fails before any stage runs, with one message naming the inputs the model has."""
import pytest

from pela_export.cli.main import main

pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")
import tiny_hf_text as tiny  # noqa: E402  (tests/fixtures)


@pytest.mark.parametrize("profile, message", [
    ("pixel_values:1x3x8x8", "pixel_values"),
    ("input_ids:8x64,8x64,1x16", "larger than max"),
])
def test_bad_profile_for_a_text_model_fails_up_front(tmp_path, capsys, profile, message):
    model = tiny.bert_classifier(tmp_path / "bert")
    out = tmp_path / "out"
    code = main(["run", f"hf:{model}", "--out", str(out), "--profile", profile, "--precision", "fp32",
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert "input_ids" in err, "names the model's inputs"
    assert not (out / "compressed.pt").exists(), "failed before the compress stage"
