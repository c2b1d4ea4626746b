"""The stage subcommands compose: compress → export → bench restart from each other's files; inspect reads both."""
import json

import pytest

from pela_export.cli.main import main

SPEC = "tiny_timm:deit_tiny_64"


@pytest.mark.slow
def test_compress_export_bench_inspect_chain(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["compress", SPEC, "--out", str(out), "--ratio", "3", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "blocks.0.attn.qkv" in printed and "layers factorized" in printed
    spec = json.loads((out / "lowrank.json").read_text())
    assert spec["ratio"] == 3.0 and spec["source"]["model"] == SPEC

    assert main(["export", SPEC, "--out", str(out), "--ratio", "3", "--simplifier", "onnxslim", "--no-progress"]) == 0
    record = json.loads((out / "stages" / "export.json").read_text())
    assert record["verification"]["ok"] is True
    assert record["export"]["simplify"]["compressed"]["method_used"] == "onnxslim"
    assert record["final_onnx"]["compressed"].endswith("compressed.sim.onnx")

    assert main(["bench", SPEC, "--out", str(out), "--ratio", "3", "--batch-sizes", "1", "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["benchmarks"]["compressed"]["params"]["onnx"] < report["benchmarks"]["original"]["params"]["onnx"]
    assert report["settings"]["simplifier"] == "onnxsim"  # this command's own settings are recorded

    assert main(["inspect", str(out / "compressed.sim.onnx")]) == 0
    text = capsys.readouterr().out
    assert "opset: 17" in text and "low-rank factor pairs" in text
    n_layers = len([layer for layer in spec["layers"] if layer["status"] == "factorized"])
    assert f"low-rank factor pairs (MatMul→MatMul through a narrower inner dim): {n_layers}" in text

    assert main(["inspect", SPEC, "--ratio", "2"]) == 0
    text = capsys.readouterr().out
    assert "dry run; nothing written" in text and "blocks.3.mlp.fc2" in text


def test_static_shapes_conflicts_with_batch_sizes(capsys):
    code = main(["run", SPEC, "--static-shapes", "--batch-sizes", "1,8"])
    assert code == 2
    assert "--static-shapes exports batch size 1" in capsys.readouterr().err
