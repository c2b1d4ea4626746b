"""Data-aware compression and PELA training through the pipeline, on the embedded digits default."""
import json

import pytest

from pela_export.cli.main import main


@pytest.fixture
def digits_env(monkeypatch, default_cache):
    monkeypatch.setenv("PELA_EXPORT_CACHE", str(default_cache))


def _record(out):
    return json.loads((out / "stages" / "compress.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("args", [
    ["--method", "whiten"], ["--method", "fwsvd"], ["--method", "asvd", "--rank-policy", "energy", "--energy", "0.9"],
    ["--rank-policy", "sensitivity", "--ratio", "3"], ["--rank-policy", "budget", "--param-budget", "0.4"],
])
def test_compress_with_data_aware_options(tmp_path, digits_env, args):
    out = tmp_path / "o"
    assert main(["compress", *args, "--out", str(out), "--calib-samples", "64", "--no-progress"]) == 0
    rec = _record(out)
    assert rec["calibration"]["source"].startswith("digits train split")
    assert rec["calibration"]["samples"] == 64
    comp = rec["compression"]
    assert comp["method"] == (args[1] if args[0] == "--method" else "svd")
    factorized = [layer for layer in comp["layers"] if layer["status"] == "factorized"]
    assert factorized and all(layer["risk"] is not None for layer in factorized)
    if "sensitivity" in args:
        assert rec["calibration"]["sensitivity_loss"] == "kl"  # the default probe, recorded
    if "--param-budget" in args:
        assert comp["totals"]["params_after_factorized_layers"] <= 0.4 * comp["totals"]["params_before_factorized_layers"]


@pytest.mark.slow
def test_pela_training_recovers_accuracy_and_exports(tmp_path, digits_env):
    out = tmp_path / "o"
    assert main(["run", "--ratio", "4", "--train", "--epochs", "2", "--batch-sizes", "1", "--out", str(out),
                 "--no-progress"]) == 0
    training = _record(out)["training"]
    assert training["accuracy_after"] > training["accuracy_before"]["compressed"]
    assert [h["epoch"] for h in training["history"]] == [1, 2]
    report = json.loads((out / "report.json").read_text())
    assert report["verification"]["ok"] is True
    # the deployed (ONNX) compressed model carries the trained weights
    assert report["accuracy"]["top1_candidate"] == pytest.approx(training["accuracy_after"], abs=1e-9)


def test_fwsvd_without_labels_is_a_clear_error(tmp_path, capsys):
    code = main(["compress", "tiny_timm:deit_tiny_64", "--method", "fwsvd", "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "needs labelled data" in err and "--calib-data" in err


def test_budget_below_minimum_is_a_clear_error(tmp_path, digits_env, capsys):
    code = main(["compress", "--rank-policy", "budget", "--param-budget", "10", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "--param-budget" in capsys.readouterr().err


@pytest.mark.parametrize("args,needle", [
    (["--asvd-alpha", "0.3"], "--asvd-alpha is only used with --method asvd"),
    (["--energy", "0.9"], "--energy is only used with --rank-policy energy"),
    (["--param-budget", "0.5"], "--param-budget is only used with --rank-policy budget or sensitivity"),
    (["--candidate-ranks", "8,16"], "--candidate-ranks is only used with --rank-policy sensitivity"),
    (["--sensitivity-loss", "task"], "--sensitivity-loss is only used with --rank-policy latency or sensitivity"),
])
def test_options_for_another_method_are_not_silently_ignored(capsys, args, needle):
    assert main(["compress", "tiny_timm:deit_tiny_64", *args]) == 2
    assert needle in capsys.readouterr().err


def test_task_sensitivity_loss_without_labels_is_a_clear_error(tmp_path, capsys):
    code = main(["compress", "tiny_timm:deit_tiny_64", "--rank-policy", "sensitivity", "--sensitivity-loss", "task",
                 "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "needs labelled data" in err and "--calib-data" in err
    assert not (tmp_path / "o" / "compressed.pt").exists()


def _digits_image_folder(root, per_class: int = 12):
    """An ImageNet-layout folder (class sub-folders of PNGs) made from real digits images."""
    from PIL import Image

    from pela_export.data import load_dataset

    ds = load_dataset("digits")
    for label in range(10):
        (root / f"class_{label}").mkdir(parents=True)
        for i, img in enumerate(ds.x_train[ds.y_train == label][:per_class]):
            Image.fromarray((img[0] * 255).round().astype("uint8"), mode="L").save(root / f"class_{label}" / f"{i}.png")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["image-folder", "npz"])
def test_pela_training_from_an_image_folder_or_npz_through_the_cli(tmp_path, digits_env, kind):
    import numpy as np

    from pela_export.data import load_dataset

    if kind == "image-folder":
        source, expected = _digits_image_folder(tmp_path / "imgs"), 120
    else:
        ds = load_dataset("digits")
        source, expected = tmp_path / "train.npz", 200
        np.savez(source, x=ds.x_train[:expected], y=ds.y_train[:expected])
    out = tmp_path / "o"
    assert main(["compress", "--ratio", "4", "--train", "--epochs", "1", "--train-data", str(source),
                 "--out", str(out), "--no-progress"]) == 0
    training = _record(out)["training"]
    assert training["data"] == str(source) and training["samples"] == expected
    assert training["accuracy_after"] is not None and training["accuracy_after"] > 0.5


def test_empty_image_folder_for_training_is_a_clear_error(tmp_path, digits_env, capsys):
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    code = main(["compress", "--train", "--epochs", "1", "--train-data", str(tmp_path / "imgs"),
                 "--out", str(tmp_path / "o"), "--no-progress"])
    assert code == 2
    assert "contains no images" in capsys.readouterr().err
    assert not (tmp_path / "o" / "compressed.pt").exists()
