"""The package stage: `run` ends with DIR/bundle + DIR/bundle.tar.gz laid out as deploy.json describes,
golden outputs the runtime reproduces, and `package` rebuilding the bundle atomically."""
from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

import pela_export.pipeline.package as package_mod
from pela_export import api
from pela_export.cli.main import main
from pela_export.export.compare import compare_outputs
from pela_export.pipeline.config import STAGES, RunConfig
from pela_export.precision.spec import precision_spec
from pela_export.runtime import Bundle, run_variant, validate_deploy, verify_bundle
from pela_export.tensorrt import TABLE_VERSIONS

VARIANTS = {f"{m}.{p}" for m in ("original", "compressed") for p in ("fp32", "fp16", "int8fp16")}  # the default precisions


def _deploy(bundle: Path) -> dict:
    return json.loads((bundle / "deploy.json").read_text())


def test_package_is_the_last_stage_and_can_be_skipped() -> None:
    assert STAGES[-2:] == ("report", "package")
    assert RunConfig.of(skip=("package",)).skip == ("package",)


def test_run_ends_with_a_complete_bundle(digits_run: Path) -> None:
    bundle = digits_run / "bundle"
    d = validate_deploy(_deploy(bundle))
    assert d["schema_version"] == 2 and d["kind"] == "pela-export-bundle"
    assert set(d["variants"]) == VARIANTS
    assert d["model"]["name"] == "digits-vit" and d["model"]["source"] == "default:digits"
    assert d["labels"] == [str(i) for i in range(10)]
    assert d["preprocessing"]["channel_order"] == "gray" and d["preprocessing"]["size"] == [16, 16]
    assert d["compression"]["params"]["compressed"] < d["compression"]["params"]["original"]
    assert all(layer["rank"] > 0 for layer in d["compression"]["layers"] if layer["status"] == "factorized")
    assert d["dependencies"]["onnxruntime"] and d["dependencies"]["torch"]
    (inp,), (out,) = d["io"]["inputs"], d["io"]["outputs"]
    assert inp["name"] == "input" and inp["shape"] == ["batch", 1, 16, 16] and out["name"] == "logits"
    assert inp["profile"] == {"min": [1, 1, 16, 16], "opt": [8, 1, 16, 16], "max": [8, 1, 16, 16]}  # opt: bench batch 8
    assert inp["role"] == "tensor" and out["role"] == "logits" and d["io"]["axes"] == {"batch": {"min": 1, "opt": 8, "max": 8}}
    choices = json.loads((digits_run / "stages" / "build.json").read_text())["automatic_choices"]
    assert any("opt 8: the batch the bench times most" in c and "--opt-batch" in c for c in choices), choices
    assert d["tokenizer"] is None
    for name, v in d["variants"].items():
        onnx = bundle / v["onnx"]
        assert v["onnx"] == f"onnx/{name}.onnx" and onnx.stat().st_size == v["bytes"]
        with np.load(bundle / v["golden"]) as z:
            assert z["input:input"].shape == (4, 1, 16, 16) and z["output:logits"].shape == (4, 10)
        assert v["cpu_accuracy"]["top1"] > 0.9, (name, v["cpu_accuracy"])
        assert set(v["trtexec"]) == set(TABLE_VERSIONS)
        for version, entry in v["trtexec"].items():
            script = (bundle / entry["script"]).read_text()
            assert f"--onnx=../../onnx/{name}.onnx" in script and f"mkdir -p ../../engines/{version}" in script
            assert entry["command"].startswith(f"trtexec --onnx=onnx/{name}.onnx --saveEngine=engines/{version}/")
            assert os.access(bundle / entry["script"], os.X_OK)
        if precision_spec(v["precision"]).quantized:
            assert (bundle / v["calibration_cache"]).read_text().startswith("TRT-")
            assert (bundle / "calibration" / f"{name}.calib.manifest.json").is_file()
            assert v["onnxruntime_optimization"] == "basic"
        else:
            assert v["calibration_cache"] is None
    assert os.access(bundle / "build_engines.sh", os.X_OK)
    record = json.loads((digits_run / "stages" / "package.json").read_text())
    assert record["variants"] == list(d["variants"]) and record["golden_batch"] == 4


def test_golden_tolerances_are_stated_per_precision(digits_run: Path) -> None:
    d = _deploy(digits_run / "bundle")
    for name, v in d["variants"].items():
        tol = v["tolerance"]
        with np.load(digits_run / "bundle" / v["golden"]) as z:
            scale = float(np.abs(z["output:logits"]).max())
        frac, rtol = precision_spec(v["precision"]).golden_tolerance
        assert tol["rtol"] == rtol and tol["atol"] == pytest.approx(max(frac * scale, 1e-4), rel=1e-2), name
        assert tol["atol"] >= 1e-4 and tol["rtol"] >= 1e-3  # never tighter than the model's own tolerance
    assert all(p in d["golden"]["policy"] for p in ("fp32", "fp16", "int8", "TF32"))


def test_sums_cover_every_file_and_the_archive_holds_the_same_tree(digits_run: Path) -> None:
    bundle = digits_run / "bundle"
    listed = [line.split("  ", 1)[1] for line in (bundle / "SHA256SUMS").read_text().splitlines()]
    on_disk = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    assert listed == sorted(listed) and sorted([*listed, "SHA256SUMS"]) == on_disk
    assert verify_bundle(bundle) == []
    with tarfile.open(digits_run / "bundle.tar.gz") as tar:
        names = {m.name for m in tar.getmembers() if m.isfile()}
    assert names == {f"bundle/{p}" for p in on_disk}


def test_bundle_round_trip_outputs_equal_golden(digits_run: Path, tmp_path: Path) -> None:
    """package -> verify -> load the archive with the runtime -> every variant reproduces its golden outputs."""
    assert api.verify_bundle(digits_run / "bundle.tar.gz") == []
    b = Bundle.load(digits_run / "bundle.tar.gz", extract_to=tmp_path)
    assert b.root == next(tmp_path.iterdir()) / "bundle" and set(b.variants()) == VARIANTS
    for name in b.variants():
        inputs, golden = b.golden(name)
        out = run_variant(b, name)
        cmp = compare_outputs(golden, out, b.tolerance(name), ref_name="golden", cand_name=name)
        assert cmp.ok, cmp.failures()
        assert out["logits"].argmax(1).tolist() == golden["logits"].argmax(1).tolist()


def test_package_command_rebuilds_the_bundle(digits_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             default_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PELA_EXPORT_CACHE", str(default_cache))
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    before = (run / "bundle" / "deploy.json").read_text()
    assert main(["package", "--out", str(run), "--trt-version", "10.3", "--no-progress"]) == 0
    d = _deploy(run / "bundle")
    assert d["created_at"] >= json.loads(before)["created_at"]
    assert all(set(v["trtexec"]) == {"10.3"} for v in d["variants"].values())
    assert sorted(p.name for p in (run / "bundle" / "trtexec").iterdir()) == ["10.3"]
    assert verify_bundle(run / "bundle") == []
    assert not [p for p in run.iterdir() if p.name.startswith(".")], "temporary files left behind"
    assert "bundle.tar.gz" in capsys.readouterr().err


def test_failed_package_leaves_the_previous_bundle_untouched(digits_run: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch, default_cache: Path) -> None:
    monkeypatch.setenv("PELA_EXPORT_CACHE", str(default_cache))
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    sums, archive = (run / "bundle" / "SHA256SUMS").read_bytes(), (run / "bundle.tar.gz").read_bytes()

    def boom(*_a: object, **_k: object) -> None:
        from pela_export.errors import ArtifactError

        raise ArtifactError("simulated failure while writing golden outputs", fix="none")

    monkeypatch.setattr(package_mod, "_golden", boom)
    assert main(["package", "--out", str(run), "--no-progress"]) == 2
    assert (run / "bundle" / "SHA256SUMS").read_bytes() == sums and (run / "bundle.tar.gz").read_bytes() == archive
    assert verify_bundle(run / "bundle") == []
    assert not [p for p in run.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_package_without_a_run_names_the_missing_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       default_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PELA_EXPORT_CACHE", str(default_cache))
    assert main(["package", "--out", str(tmp_path / "empty"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "export" in err and "fix:" in err
    assert not (tmp_path / "empty" / "bundle").exists() and not (tmp_path / "empty" / "bundle.tar.gz").exists()


# -- a text model: three named inputs, two outputs, a tokenizer ------------------------------------------------
TEXT_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


@pytest.fixture(scope="module")
def text_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from text_bundles import text_run

    return text_run(tmp_path_factory.getbasetemp() / "shared-text")


def test_text_bundle_deploy_json_has_the_full_io_and_the_tokenizer(text_run_dir: Path) -> None:
    bundle = text_run_dir / "bundle"
    d = validate_deploy(_deploy(bundle))
    assert d["schema_version"] == 2 and d["preprocessing"] is None
    io = d["io"]
    assert [t["name"] for t in io["inputs"]] == TEXT_INPUTS
    assert [t["role"] for t in io["inputs"]] == ["token_ids", "attention_mask", "token_type_ids"]
    for t in io["inputs"]:
        assert t["dtype"] == "int64" and t["shape"] == ["batch", "sequence"]
        assert t["profile"] == {"min": [1, 1], "opt": [8, 64], "max": [8, 64]}  # sequence from the config (64 positions)
    assert io["inputs"][0]["low"] == 0 and io["inputs"][0]["high"] > 5 and io["inputs"][1]["high"] == 2
    assert [(o["name"], o["role"]) for o in io["outputs"]] == [("sentence_embedding", "embedding"),
                                                              ("last_hidden_state", "hidden_state")]
    assert io["outputs"][1]["shape"][:2] == ["batch", "sequence"]
    assert io["axes"] == {"batch": {"min": 1, "opt": 8, "max": 8}, "sequence": {"min": 1, "opt": 64, "max": 64}}
    assert d["tensorrt"]["build_options"]["axes"] == {"sequence": [1, 64, 64]}
    tok = d["tokenizer"]
    assert tok["files"] == ["tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json"]
    assert tok["tokenizer_json"] == "tokenizer/tokenizer.json" and tok["max_length"] == 64
    assert tok["padding_side"] == "right" and tok["truncation"] is True and tok["pad_token"] == "[PAD]"
    assert tok["lowercase"] is True and tok["model_input_names"] == TEXT_INPUTS
    model_dir = text_run_dir.parent / "text-encoder"
    for rel in tok["files"]:
        assert (bundle / rel).read_bytes() == (model_dir / rel.split("/", 1)[1]).read_bytes()
    assert verify_bundle(bundle) == [] and "tokenizer/tokenizer.json" in (bundle / "SHA256SUMS").read_text()


def test_text_goldens_hold_every_input_and_output(text_run_dir: Path) -> None:
    d = _deploy(text_run_dir / "bundle")
    assert set(d["variants"]) == {"original.fp32", "compressed.fp32"}
    for v in d["variants"].values():
        with np.load(text_run_dir / "bundle" / v["golden"]) as z:
            assert sorted(z.files) == sorted([f"input:{n}" for n in TEXT_INPUTS]
                                             + ["output:sentence_embedding", "output:last_hidden_state"])
            assert z["input:input_ids"].shape == (4, 64) and z["input:input_ids"].dtype == np.int64
            assert z["output:last_hidden_state"].shape[:2] == (4, 64)


def test_text_trtexec_scripts_name_every_input(text_run_dir: Path) -> None:
    d = _deploy(text_run_dir / "bundle")
    scripts = [text_run_dir / "bundle" / e["script"] for v in d["variants"].values() for e in v["trtexec"].values()]
    scripts += sorted((text_run_dir / "engines").rglob("*.trtexec.sh"))  # the build stage's scripts
    assert len(scripts) >= 2 * len(TABLE_VERSIONS)
    for script in scripts:
        text = script.read_text()
        for flag, shape in (("--minShapes", "1x1"), ("--optShapes", "8x64"), ("--maxShapes", "8x64")):
            assert f"{flag}=" + ",".join(f"{n}:{shape}" for n in TEXT_INPUTS) in text, (script, flag)


def test_bad_profile_fails_before_the_build_reads_any_file(text_run_dir: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(text_run_dir, run)
    model = f"hf:{text_run_dir.parent / 'text-encoder'}"
    for profile, message in (("pixel_values:1x3x8x8", "names input 'pixel_values', which the model does not have "
                                                      "(its inputs: input_ids, attention_mask, token_type_ids)"),
                             ("input_ids:8x64,4x32,1x16", "min [8, 64] is larger than max [1, 16]")):
        code = main(["build", model, "--hidden-state", "--out", str(run), "--profile", profile, "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "fix:" in err and err.count("error") <= 1, err
    code = main(["build", model, "--hidden-state", "--out", str(run), "--profile", "input_ids:1x8,2x16,4x32",
                 "--trt-version", "10.3", "--no-progress"])
    assert code in (0, 2)  # 2: TensorRT absent here (the scripts are still written)
    script = next((run / "engines" / "10.3").glob("compressed*.trtexec.sh")).read_text()
    assert "--maxShapes=input_ids:4x32,attention_mask:4x32,token_type_ids:4x32" in script
