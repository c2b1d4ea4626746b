"""`pela-export verify`: an intact bundle passes with a summary; every kind of tampering is named file by file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pela_export.cli.main import main
from pela_export.errors import ArtifactError
from pela_export.runtime import Bundle, parse_sums, validate_deploy, verify_bundle, write_sums
from pela_export.runtime.schema import deploy_problems


def _kinds(problems: list) -> dict[str, str]:
    return {p.path: p.kind for p in problems}


def test_intact_bundle_verifies_with_a_summary(digits_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert verify_bundle(digits_run / "bundle") == []
    for target in (digits_run / "bundle", digits_run / "bundle.tar.gz"):
        assert main(["verify", str(target)]) == 0
        out = capsys.readouterr().out
        assert out.startswith("bundle OK") and "digits-vit" in out and "6 variant(s)" in out and "match SHA256SUMS" in out


def test_changed_byte_in_an_onnx_file_is_named(bundle_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    onnx = bundle_copy / "onnx" / "compressed.int8fp16.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0x01
    onnx.write_bytes(bytes(data))
    problems = verify_bundle(bundle_copy)
    assert _kinds(problems) == {"onnx/compressed.int8fp16.onnx": "changed"}
    assert "SHA256SUMS expects" in str(problems[0])
    assert main(["verify", str(bundle_copy)]) == 2
    err = capsys.readouterr().err
    assert "onnx/compressed.int8fp16.onnx: changed" in err and "fix:" in err
    with pytest.raises(ArtifactError, match="onnx/compressed.int8fp16.onnx"):
        Bundle.load(bundle_copy)
    assert Bundle.load(bundle_copy, verify=False).variants()  # explicitly unverified loading still works


def test_missing_and_extra_files_are_named(bundle_copy: Path) -> None:
    (bundle_copy / "golden" / "original.fp16.npz").unlink()
    (bundle_copy / "onnx" / "notes.txt").write_text("left over")
    kinds = _kinds(verify_bundle(bundle_copy))
    assert kinds["golden/original.fp16.npz"] == "missing" and kinds["onnx/notes.txt"] == "extra"
    assert len(kinds) == 2


def test_engines_built_on_the_device_are_not_extra_files(bundle_copy: Path) -> None:
    (bundle_copy / "engines" / "10.3").mkdir(parents=True)
    (bundle_copy / "engines" / "10.3" / "compressed.int8fp16.plan").write_bytes(b"plan")
    assert verify_bundle(bundle_copy) == []


def test_wrong_schema_version_is_named(bundle_copy: Path) -> None:
    deploy = json.loads((bundle_copy / "deploy.json").read_text())
    deploy["schema_version"] = 3
    (bundle_copy / "deploy.json").write_text(json.dumps(deploy))
    write_sums(bundle_copy)  # even with consistent hashes, the schema is checked
    (problem,) = verify_bundle(bundle_copy)
    assert problem.path == "deploy.json" and problem.kind == "schema"
    assert "schema_version is 3" in problem.detail and "newer pela-export" in problem.detail
    assert "reads schema_version 1 or 2" in problem.detail  # schema-1 bundles still verify
    with pytest.raises(ArtifactError, match="schema_version is 3"):
        Bundle.load(bundle_copy)


def test_truncated_deploy_json_is_named(bundle_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = bundle_copy / "deploy.json"
    path.write_bytes(path.read_bytes()[:200])
    kinds = {(p.path, p.kind) for p in verify_bundle(bundle_copy)}
    assert kinds == {("deploy.json", "changed"), ("deploy.json", "corrupt")}
    assert main(["verify", str(bundle_copy)]) == 2
    assert "deploy.json: truncated or corrupt JSON" in capsys.readouterr().err


def test_missing_sums_and_malformed_lines(bundle_copy: Path) -> None:
    sums = bundle_copy / "SHA256SUMS"
    text = sums.read_text()
    sums.write_text(text + "not a checksum line\n")
    problems = verify_bundle(bundle_copy)
    assert [(p.path, p.kind) for p in problems] == [("SHA256SUMS", "sums")] and "line" in problems[0].detail
    sums.unlink()
    assert ("SHA256SUMS", "missing") in {(p.path, p.kind) for p in verify_bundle(bundle_copy)}
    parsed, bad = parse_sums(text)
    assert not bad and "deploy.json" in parsed and "SHA256SUMS" not in parsed


def test_deploy_json_problems_name_the_key(digits_run: Path) -> None:
    good = json.loads((digits_run / "bundle" / "deploy.json").read_text())
    assert validate_deploy(good)["variants"]
    bad = json.loads(json.dumps(good))
    del bad["variants"]["compressed.int8fp16"]["tolerance"]["atol"]
    bad["variants"]["original.fp16"]["onnx"] = "../outside.onnx"
    bad["io"]["inputs"][0]["profile"]["max"] = [0, 1, 16, 16]
    problems = deploy_problems(bad)
    assert "key 'variants.compressed.int8fp16.tolerance.atol' is missing" in problems
    assert any("variants.original.fp16.onnx" in p and "inside the bundle" in p for p in problems)
    assert any("io.inputs[0].profile" in p and "min <= opt <= max" in p for p in problems)
    with pytest.raises(ArtifactError) as exc:
        validate_deploy(bad)
    assert "3 problems" in str(exc.value) and "fix:" in str(exc.value)
    assert deploy_problems([]) == ["deploy.json holds list, expected a JSON object"]


def test_deploy_and_sums_disagreeing_on_an_onnx_hash(bundle_copy: Path) -> None:
    deploy = json.loads((bundle_copy / "deploy.json").read_text())
    deploy["variants"]["original.fp32"]["sha256"] = "0" * 64
    (bundle_copy / "deploy.json").write_text(json.dumps(deploy))
    write_sums(bundle_copy)
    (problem,) = verify_bundle(bundle_copy)
    assert problem.path == "onnx/original.fp32.onnx" and "variants.original.fp32.sha256" in problem.detail


@pytest.mark.parametrize("cmd", ["package", "verify", "device-bench"])
def test_help_has_examples(cmd: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        main([cmd, "--help"])
    assert ei.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"pela-export {cmd}" in out


def test_top_level_help_lists_device_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(c in out for c in ("run", "package", "verify", "device-bench"))
