"""End-to-end `pela-export run` on the embedded default and on real timm architectures."""
import json
import os

import pytest

from pela_export.cli.main import main


def _report(out_dir):
    with open(os.path.join(out_dir, "report.json"), encoding="utf-8") as f:
        return json.load(f)


def _check_common(rep):
    assert rep["schema_version"] == 2
    assert [t["name"] for t in rep["model"]["io"]["inputs"]] == [rep["model"]["input_name"]]
    assert rep["shapes"]["axes"] == {} and rep["shapes"]["latency"]["description"] == "batch 1"  # image: batch only
    totals = rep["compression"]["totals"]
    assert totals["layers_factorized"] > 0
    assert totals["reduction_in_factorized_layers"] >= 0.40
    assert rep["verification"]["ok"] is True
    files = rep["verification"]["files"]
    assert len(files) == 4  # raw + simplified, original + compressed
    for path, res in files.items():
        assert res["ok"] and res["parameters"]["ok"], path
    b = rep["benchmarks"]
    assert b["compressed"]["params"]["torch"] < b["original"]["params"]["torch"]
    assert b["compressed"]["flops"]["flops"] < b["original"]["flops"]["flops"]
    assert b["compressed"]["onnx_size"]["bytes"] < b["original"]["onnx_size"]["bytes"]
    for variant in ("original", "compressed"):
        for backend in ("onnxruntime", "torch_eager"):
            stats = b[variant]["latency"][backend]["1"]
            assert stats["n_runs"] >= 30 and stats["p50_ms"] > 0


@pytest.mark.slow
def test_run_embedded_default_no_arguments(tmp_path, monkeypatch, default_cache):
    monkeypatch.setenv("PELA_EXPORT_CACHE", str(default_cache))
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--no-progress", "--batch-sizes", "1"]) == 0
    out = tmp_path / "pela-out" / "digits-vit"
    rep = _report(out)
    _check_common(rep)
    acc = rep["accuracy"]
    assert acc["data"].startswith("digits test split")
    assert acc["top1_reference"] >= 0.97
    assert acc["top1_candidate"] is not None
    assert (out / "report.md").read_text().count("Original vs compressed") == 1
    assert (out / "ranks.md").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["tiny_timm:deit_tiny_64", "tiny_timm:swin_tiny_64"])
def test_run_timm_architectures(tmp_path, spec):
    out = tmp_path / "out"
    assert main(["run", spec, "--out", str(out), "--ratio", "3", "--batch-sizes", "1", "--no-progress"]) == 0
    rep = _report(out)
    _check_common(rep)
    assert rep["accuracy"]["data"] == "random"
    assert any("no dataset" in c for c in rep["automatic_choices"])


@pytest.mark.slow
def test_restart_from_saved_artifacts(tmp_path):
    out = tmp_path / "out"
    spec = "tiny_timm:deit_tiny_64"
    assert main(["run", spec, "--out", str(out), "--skip", "bench", "--skip", "report", "--no-progress"]) == 0
    onnx_mtime = (out / "compressed.sim.onnx").stat().st_mtime_ns
    assert not (out / "report.json").exists()
    assert main(["run", spec, "--out", str(out), "--skip", "compress", "--skip", "export",
                 "--batch-sizes", "1", "--no-progress"]) == 0
    assert (out / "compressed.sim.onnx").stat().st_mtime_ns == onnx_mtime, "export must not re-run"
    _check_common(_report(out))
    # asking for another ratio while reusing the k=2 compression is refused, not silently mixed
    assert main(["run", spec, "--out", str(out), "--skip", "compress", "--ratio", "3", "--no-progress"]) == 2


def test_saved_compression_with_other_layer_selection_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    spec = "tiny_timm:deit_tiny_64"
    assert main(["compress", spec, "--out", str(out), "--no-progress"]) == 0
    code = main(["run", spec, "--out", str(out), "--skip", "compress", "--exclude", "*mlp*", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "saved compression used exclude=" in err and "--exclude" in err
    assert not (out / "compressed.onnx").exists()
