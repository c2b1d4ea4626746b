"""Every bad input: one clear message naming the problem and the fix, exit 2, no traceback, no artifact."""
import subprocess
import sys

import pytest
import torch

from pela_export.cli.main import main

DEIT = "tiny_timm:deit_tiny_64"


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _assert_clean_error(code, err, *needles):
    assert code == 2
    assert "\npela-export: error:" in "\n" + err  # after any progress lines
    assert "Traceback" not in err
    assert "fix:" in err
    for n in needles:
        assert n in err, f"{n!r} not in {err!r}"


def test_unknown_model_name(capsys, tmp_path):
    code, _, err = _run(capsys, "compress", "timm:not_a_real_model_xyz", "--out", str(tmp_path / "o"))
    _assert_clean_error(code, err, "unknown timm model 'not_a_real_model_xyz'", "timm:<name>")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_unrecognised_model_spec(capsys):
    code, _, err = _run(capsys, "compress", "what_is_this")
    _assert_clean_error(code, err, "cannot tell what kind of model")


def test_missing_checkpoint(capsys, tmp_path):
    code, _, err = _run(capsys, "compress", DEIT, "--checkpoint", str(tmp_path / "nope.pth"), "--out", str(tmp_path / "o"))
    _assert_clean_error(code, err, "nope.pth", "not found", "--checkpoint")


def test_corrupt_checkpoint(capsys, tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"PK\x03\x04 truncated zip" * 3)
    code, _, err = _run(capsys, "compress", DEIT, "--checkpoint", str(bad), "--out", str(tmp_path / "o"))
    _assert_clean_error(code, err, "bad.pth", "cannot be read")


def test_checkpoint_of_another_architecture(capsys, tmp_path):
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    code, _, err = _run(capsys, "compress", DEIT, "--checkpoint", str(tmp_path / "other.pth"), "--out", str(tmp_path / "o"))
    _assert_clean_error(code, err, "does not match the architecture", "missing in checkpoint", "fc.weight")


def test_wrong_input_shape(capsys, tmp_path):
    code, _, err = _run(capsys, "compress", DEIT, "--input-shape", "3,50,50", "--out", str(tmp_path / "o"))
    _assert_clean_error(code, err, "fails on input shape (1, 3, 50, 50)", "--input-shape")


@pytest.mark.parametrize("ratio", ["1", "0.5", "-3"])
def test_ratio_not_above_one(capsys, tmp_path, ratio):
    code, _, err = _run(capsys, "compress", DEIT, "--ratio", ratio, "--out", str(tmp_path / "o"))
    _assert_clean_error(code, err, "compression ratio must be > 1", "--ratio")
    assert not (tmp_path / "o" / "compressed.pt").exists()


def test_unwritable_output_dir(capsys, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")  # a directory cannot be created below a regular file (holds for root too)
    code, _, err = _run(capsys, "compress", DEIT, "--out", str(blocker / "sub"))
    _assert_clean_error(code, err, "cannot write to output directory", "--out")


def test_onnx_that_fails_the_checker(capsys, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("zzz", TensorProto.FLOAT, [1])])  # output never produced
    onnx.save(helper.make_model(graph), tmp_path / "broken.onnx")
    code, _, err = _run(capsys, "inspect", str(tmp_path / "broken.onnx"))
    _assert_clean_error(code, err, "broken.onnx")
    (tmp_path / "garbage.onnx").write_bytes(b"\x00\x01garbage")
    code, _, err = _run(capsys, "inspect", str(tmp_path / "garbage.onnx"))
    _assert_clean_error(code, err, "garbage.onnx")


def test_skip_needs_saved_artifacts(capsys, tmp_path):
    code, _, err = _run(capsys, "run", DEIT, "--skip", "compress", "--skip", "export", "--out", str(tmp_path / "o"))
    _assert_clean_error(code, err, "does not exist")


def test_debug_shows_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pela_export", "compress", "timm:not_a_real_model_xyz", "--debug",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ModelSourceError" in proc.stderr


def test_help_has_examples_for_every_subcommand(capsys):
    for cmd in ("run", "compress", "export", "bench", "inspect"):
        with pytest.raises(SystemExit) as ei:
            main([cmd, "--help"])
        assert ei.value.code == 0
        out = capsys.readouterr().out
        assert "examples:" in out and f"pela-export {cmd}" in out
