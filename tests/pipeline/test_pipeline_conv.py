"""Convolutions through the CLI: --conv-decomposition recorded, inspect's Conv2d rows, and the option refused
where it would do nothing."""
import json
from pathlib import Path

import pytest

from pela_export.cli.main import main


def test_conv_decomposition_on_a_model_without_selected_convolutions(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    code = main(["compress", "timm:deit_tiny_patch16_224", "--conv-decomposition", "spatial", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "--conv-decomposition spatial was given" in err and "patch_embed.proj" in err
    assert "drop --conv-decomposition" in err
    assert not (out / "compressed.pt").exists() and not (out / "lowrank.json").exists()


def test_resnet_spatial_svd_recorded_and_inspected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r"
    code = main(["compress", "timm:resnet18", "--input-shape", "3,64,64", "--conv-decomposition", "spatial",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    spec = json.loads((out / "lowrank.json").read_text())
    assert spec["conv_decomposition"] == "spatial"
    fac = [r for r in spec["layers"] if r["status"] == "factorized"]
    assert len(fac) == 19 and {r["kind"] for r in fac} == {"conv-spatial"}
    conv1 = next(r for r in fac if r["name"] == "layer1.0.conv1")
    assert (conv1["out_features"], conv1["in_features"]) == (64 * 3, 64 * 3)  # (O*kw, C*kh)
    capsys.readouterr()
    assert main(["inspect", "timm:resnet18", "--input-shape", "3,64,64"]) == 0
    text = capsys.readouterr().out
    assert "| layer1.0.conv1 | Conv2d 3x3 | 64 | 64 | yes | in repeated block layer1.0 |" in text
    assert "| conv1 | Conv2d 7x7 | 3 | 64 | no | embedding or stem (before the repeated blocks) |" in text
