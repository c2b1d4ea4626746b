"""`merge_reports`: workstation report + device reports → comparison.json/.md (+ charts),
and precise errors for every kind of bad input."""
from __future__ import annotations

import copy
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from bench_records import device_report, workstation_report
from PIL import Image

from pela_export.report import write_report
from pela_export.report.merge import find_device_reports, merge_reports
from pela_export.errors import ArtifactError

ORIN = "Orin (orin)"
LAPTOP = "laptop"


def _run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    write_report(workstation_report(str(run)), run)
    return run


def _write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


@pytest.fixture()
def inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    run = _run_dir(tmp_path)
    orin = _write(tmp_path / "devices" / "orin" / "device-report.json", device_report())
    laptop = _write(tmp_path / "devices" / "laptop" / "device-report.json",
                    device_report("laptop", None, tensorrt=None, scale=4.0, golden_ok=False))
    return run, orin, laptop


def test_merge_two_devices(tmp_path: Path, inputs: tuple[Path, Path, Path]) -> None:
    run, orin, laptop = inputs
    json_path, md_path = merge_reports(run, [orin, laptop], tmp_path / "cmp")
    assert (json_path.name, md_path.name) == ("comparison.json", "comparison.md")
    c = json.loads(json_path.read_text())
    assert c["kind"] == "pela-export-comparison" and c["schema_version"] == 1
    assert [d["id"] for d in c["devices"]] == [ORIN, LAPTOP]
    assert list(c["variants"]) == ["original.fp32", "original.fp16", "original.int8",
                                   "compressed.fp32", "compressed.fp16", "compressed.int8"]
    ci8 = c["variants"]["compressed.int8"]
    assert (ci8["params"], ci8["onnx_mb"]) == (100_000, pytest.approx(0.43))
    assert ci8["cpu_accuracy"]["top1"] == 0.945 and ci8["cpu_accuracy"]["delta_points"] == pytest.approx(-1.0)
    assert ci8["workstation"] is None  # precision variants are not timed on the workstation
    orin_i8 = ci8["devices"][ORIN]
    assert orin_i8["backend"] == "TensorRT 10.3.0"
    assert orin_i8["golden"] == {"ok": True, "max_abs_err": pytest.approx(2.5e-5), "tolerance": {"atol": 1e-3, "rtol": 1e-2}}
    assert orin_i8["latency"]["1"]["p50_ms"] == pytest.approx(0.2)
    assert orin_i8["latency"]["8"]["speedup_vs_original"] == pytest.approx(1.25)
    assert "samples_ms" not in orin_i8["latency"]["1"]  # raw samples stay in the device report
    lap_i8 = ci8["devices"][LAPTOP]
    assert lap_i8["backend"] == "ONNX Runtime 1.31.1 (fallback)"
    assert lap_i8["golden"]["ok"] is False and lap_i8["golden"]["max_abs_err"] == pytest.approx(2e-3)
    assert lap_i8["latency"]["1"]["p50_ms"] == pytest.approx(0.8)
    ws = c["variants"]["compressed.fp32"]["workstation"]["latency"]
    assert ws["1"]["p50_ms"] == 1.6 and ws["1"]["speedup_vs_original"] == pytest.approx(1.25)
    assert c["variants"]["original.fp32"]["devices"][ORIN]["latency"]["1"].get("speedup_vs_original") is None

    md = md_path.read_text()
    assert md.startswith("# Workstation vs device comparison: digits-vit")
    assert f"| {ORIN} | Orin | 8.7 | 10.3.0 | 12.6 | R36.4.0, MAXN | TensorRT |" in md
    assert "| laptop | — | — | — | — | — | ONNX Runtime fallback: TensorRT Python bindings are not installed |" in md
    assert ("| `compressed.int8` | 100,000 | 0.430 | 94.50% | -1.00 | pass (max abs err 2.5e-05) | "
            "**FAIL** (max abs err 0.002) |") in md
    assert "| `compressed.fp32` | 1 | 1.600 (1.25×) | 0.800 (1.25×) | 3.200 (1.25×) |" in md
    assert "| `original.int8` | 8 | — | 1.000 | 4.000 |" in md
    assert "No TensorRT on this device: measured with ONNX Runtime instead (TensorRT Python bindings" in md
    assert "| `compressed.fp16` | TensorRT 10.3.0 | pass (max abs err 5e-05) | 1 | 0.400 | 0.480 | 0.560 | 2,500.0 | 1.25× |" in md
    for chart in c["charts"]["files"]:
        path = json_path.parent / chart["path"]
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as img:
            img.verify()
        assert f"]({chart['path']})" in md
    assert [f["name"] for f in c["charts"]["files"]] == ["devices_latency", "devices_distribution"]


def test_device_reports_found_in_directories(tmp_path: Path, inputs: tuple[Path, Path, Path]) -> None:
    run, orin, laptop = inputs
    assert find_device_reports([tmp_path / "devices"]) == [laptop, orin]  # searched below, sorted
    assert find_device_reports([orin.parent, orin]) == [orin]  # the same file once
    json_path, _ = merge_reports(run / "report.json", [orin.parent], tmp_path / "cmp")
    assert [d["id"] for d in json.loads(json_path.read_text())["devices"]] == [ORIN]


def test_same_device_twice_gets_distinct_ids(tmp_path: Path, inputs: tuple[Path, Path, Path]) -> None:
    run, orin, _ = inputs
    again = _write(tmp_path / "again" / "device-report.json", device_report(scale=2.0))
    c = json.loads(merge_reports(run, [orin, again], tmp_path / "cmp")[0].read_text())
    assert [d["id"] for d in c["devices"]] == [ORIN, f"{ORIN} #2"]
    assert c["variants"]["original.fp32"]["devices"][f"{ORIN} #2"]["latency"]["1"]["p50_ms"] == 2.0


def _bad(tmp_path: Path, mutate: Any) -> Path:
    data = copy.deepcopy(device_report())
    mutate(data)  # in place
    return _write(tmp_path / "bad" / "device-report.json", data)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.update(schema_version=3), r"device report .*bad/device-report.json has schema_version 3, this tool reads 1 and 2"),
    (lambda d: d.update(kind="pela-export-bundle"), r"bad/device-report.json has kind 'pela-export-bundle', expected 'pela-export-device-report'"),
    (lambda d: d.__delitem__("variants"), r"bad/device-report.json: device report is invalid: key 'variants' is missing"),
    (lambda d: d["bundle"].__delitem__("model"), r"bad/device-report.json: device report is invalid: key 'bundle.model' is missing"),
    (lambda d: d.update(variants=[]), r"bad/device-report.json: device report is invalid: key 'variants' is list \[\], expected an object"),
    (lambda d: d.update(variants={}), r"bad/device-report.json has no variants"),
    (lambda d: d["variants"]["original.fp16"]["latency"]["1"].__delitem__("p90_ms"),
     r"invalid: key 'variants.original.fp16.latency.1.p90_ms' is missing"),
    (lambda d: d["bundle"].update(model="deit_small_patch16_224"),
     r"bad/device-report.json was measured on model 'deit_small_patch16_224', but the workstation report .*run/report.json is for 'digits-vit'"),
    (lambda d: d["variants"]["compressed.fp32"].update(params=80_000),
     r"variant 'compressed.fp32' has 80,000 parameters but the workstation report .* has 100,000 for 'compressed'"),
])
def test_bad_device_report_is_named(tmp_path: Path, mutate: Any, message: str) -> None:
    run = _run_dir(tmp_path)
    with pytest.raises(ArtifactError, match=message) as info:
        merge_reports(run, [_bad(tmp_path, mutate)], tmp_path / "cmp")
    assert "fix:" in str(info.value)
    assert not (tmp_path / "cmp" / "comparison.json").exists()


def test_bad_paths_are_named(tmp_path: Path, inputs: tuple[Path, Path, Path]) -> None:
    run, orin, _ = inputs
    out = tmp_path / "cmp"
    with pytest.raises(ArtifactError, match=r"workstation report '.*nowhere' does not exist") as info:
        merge_reports(tmp_path / "nowhere", [orin], out)
    assert "--out directory of `pela-export run`" in str(info.value)
    with pytest.raises(ArtifactError, match=r"workstation report '.*devices/report.json' does not exist"):
        merge_reports(tmp_path / "devices", [orin], out)  # a directory without report.json
    with pytest.raises(ArtifactError, match=r"device report '.*missing.json' does not exist"):
        merge_reports(run, [tmp_path / "missing.json"], out)
    with pytest.raises(ArtifactError, match=r"no device-report.json in directory '.*empty'"):
        (tmp_path / "empty").mkdir()
        merge_reports(run, [tmp_path / "empty"], out)
    with pytest.raises(ArtifactError, match="no device report given"):
        merge_reports(run, [], out)
    with pytest.raises(ArtifactError, match=r"cannot read device report '.*broken.json'"):
        merge_reports(run, [_write(tmp_path / "broken.json", "{not json")], out)


def test_swapped_inputs_are_named(tmp_path: Path, inputs: tuple[Path, Path, Path]) -> None:
    run, orin, _ = inputs
    with pytest.raises(ArtifactError, match=r"device-report.json is a device report, not the workstation report"):
        merge_reports(orin, [orin], tmp_path / "cmp")
    with pytest.raises(ArtifactError, match=r"run/report.json has kind None, .*looks like a workstation report"):
        merge_reports(run, [run / "report.json"], tmp_path / "cmp")
    stale = json.loads((run / "report.json").read_text())
    del stale["benchmarks"]
    _write(tmp_path / "stale" / "report.json", stale)
    with pytest.raises(ArtifactError, match=r"workstation report .*stale/report.json: report is missing required key 'benchmarks'"):
        merge_reports(tmp_path / "stale", [orin], tmp_path / "cmp")


def test_bundle_mismatch_is_noted(tmp_path: Path, inputs: tuple[Path, Path, Path]) -> None:
    run, orin, _ = inputs
    deploy = _write(run / "bundle" / "deploy.json", '{"schema_version": 1}')
    c = json.loads(merge_reports(run, [orin], tmp_path / "cmp")[0].read_text())
    assert len(c["notes"]) == 1 and "deploy.json differs" in c["notes"][0]
    same = device_report()
    same["bundle"]["deploy_sha256"] = hashlib.sha256(deploy.read_bytes()).hexdigest()
    _write(orin, same)
    assert json.loads(merge_reports(run, [orin], tmp_path / "cmp")[0].read_text())["notes"] == []


def test_merge_without_matplotlib(tmp_path: Path, inputs: tuple[Path, Path, Path],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    run, orin, laptop = inputs
    for name in [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")] + [
            "matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"]:
        monkeypatch.setitem(sys.modules, name, None)
    json_path, md_path = merge_reports(run, [orin, laptop], tmp_path / "cmp")
    c = json.loads(json_path.read_text())
    assert c["charts"]["files"] == [] and "pip install matplotlib" in c["charts"]["skipped"]
    assert "_Charts skipped: matplotlib is not installed" in md_path.read_text()
    assert not (tmp_path / "cmp" / "charts").exists()


def test_report_command_merges_into_run_comparison(inputs: tuple[Path, Path, Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from pela_export.cli.main import main

    run, orin, laptop = inputs
    assert main(["report", str(run), str(orin), str(laptop.parent)]) == 0
    assert "comparison:" in capsys.readouterr().out
    c = json.loads((run / "comparison" / "comparison.json").read_text())
    assert [d["id"] for d in c["devices"]] == [ORIN, LAPTOP]
    assert main(["report", str(run), str(run / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err


def test_device_params_may_match_the_pytorch_count_when_onnx_folding_differs(tmp_path: Path) -> None:
    """deploy.json carries PyTorch counts; the simplified ONNX may count fewer (folded constants): both are the model."""
    run = tmp_path / "run"
    ws = workstation_report(str(run))
    ws["benchmarks"]["original"]["params"] = {"torch": 200_000, "onnx": 199_000}
    write_report(ws, run)
    orin = _write(tmp_path / "orin" / "device-report.json", device_report())
    json_path, _ = merge_reports(run, [orin], tmp_path / "cmp")
    assert json.loads(json_path.read_text())["devices"][0]["id"] == ORIN
    ws["benchmarks"]["original"]["params"] = {"torch": 150_000, "onnx": 149_000}
    write_report(ws, run)
    with pytest.raises(ArtifactError, match="has 200,000 parameters"):
        merge_reports(run, [orin], tmp_path / "cmp2")


def test_schema2_cuda_versions_reach_the_comparison(tmp_path: Path) -> None:
    """A schema-2 device report keeps the driver's, the toolkit's and cuda-python's CUDA apart; the merge
    carries all three into comparison.json and the devices table (schema 1 keeps its one ``cuda``)."""
    run = _run_dir(tmp_path)
    rep = device_report()
    rep["schema_version"] = 2
    rep["device"].update(cuda_driver="12.8", cuda_toolkit="12.6", cuda_python={"package": "12.6.2", "runtime": "12.6"})
    dev = _write(tmp_path / "devices" / "orin" / "device-report.json", rep)
    old = _write(tmp_path / "devices" / "old" / "device-report.json", device_report("old"))
    json_path, md_path = merge_reports(run, [dev, old], tmp_path / "cmp")
    c = json.loads(json_path.read_text())
    first, second = c["devices"]
    assert (first["cuda_driver"], first["cuda_toolkit"], first["cuda_python"]["package"]) == ("12.8", "12.6", "12.6.2")
    assert "cuda_driver" not in second and second["cuda"] == "12.6"
    md = md_path.read_text()
    assert "| driver 12.8, toolkit 12.6, cuda-python 12.6.2 (bundles 12.6) |" in md
    assert "| 10.3.0 | 12.6 | R36.4.0, MAXN |" in md
