"""The device runtime on a text bundle (three named inputs, two outputs, a tokenizer) and on a schema-1 bundle:
runs from a dict of arrays, from raw strings with ``tokenizers``, a clear error without it; device-bench times
batch × sequence and checks every output; an old bundle still verifies and runs."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from fake_tensorrt import make_fake_tensorrt

from pela_export.cli.main import main
from pela_export.errors import DependencyError, OptionError
from pela_export.export.compare import compare_outputs
from pela_export.export.runtime import ort_run, ort_session
from pela_export.runtime import Bundle, device_bench, load_device_report, run_variant, verify_bundle, write_sums
from pela_export.runtime.schema import DEPLOY_SCHEMA_VERSION, validate_deploy
from pela_export.tensorrt import GpuInfo, HostBackend

FIXTURES = Path(__file__).parents[1] / "fixtures"
TEXT_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
OUTPUTS = ["sentence_embedding", "last_hidden_state"]
ORIN = GpuInfo("Orin (nvgpu)", "8.7", "test")


@pytest.fixture(scope="module")
def text_bundle(text_run_dir: Path) -> Bundle:
    return Bundle.load(text_run_dir / "bundle")


def _ort(bundle: Bundle, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return ort_run(ort_session(bundle.onnx_path(name)), feeds)


def test_text_bundle_describes_every_input_and_output(text_bundle: Bundle) -> None:
    assert text_bundle.schema_version == DEPLOY_SCHEMA_VERSION == 2
    assert text_bundle.input_names == TEXT_INPUTS
    assert [t["role"] for t in text_bundle.inputs] == ["token_ids", "attention_mask", "token_type_ids"]
    assert [(o["name"], o["role"]) for o in text_bundle.outputs] == [("sentence_embedding", "embedding"),
                                                                      ("last_hidden_state", "hidden_state")]
    axes = text_bundle.axes()
    assert axes["sequence"] == {"min": 1, "opt": 64, "max": 64} and axes["batch"]["max"] == 8
    spec = text_bundle.io_spec()
    assert spec.input_names == TEXT_INPUTS and spec.is_text()
    for name in text_bundle.variants():
        inputs, outputs = text_bundle.golden(name)
        assert sorted(inputs) == sorted(TEXT_INPUTS) and sorted(outputs) == sorted(OUTPUTS)
        assert outputs["last_hidden_state"].shape[:2] == inputs["input_ids"].shape
        lengths = inputs["attention_mask"].sum(1)
        assert len(set(lengths.tolist())) >= 2  # padded rows of several lengths


def test_runtime_runs_from_a_dict(text_bundle: Bundle) -> None:
    for name in text_bundle.variants():
        inputs, golden = text_bundle.golden(name)
        out = run_variant(text_bundle, name, inputs)
        assert set(out) == set(OUTPUTS)
        assert compare_outputs(golden, out, text_bundle.tolerance(name)).ok
    feeds = text_bundle.io_spec().dummy(3, seed=5, sizes={"sequence": 11})
    out = run_variant(text_bundle, "compressed.fp32", feeds)
    assert out["sentence_embedding"].shape == (3, 32) and out["last_hidden_state"].shape == (3, 11, 32)


def test_run_text_tokenizes_raw_strings(text_bundle: Bundle) -> None:
    pytest.importorskip("tokenizers")
    texts = ["The market ROSE", "oil price fell and the bank lost money this quarter"]
    feeds = text_bundle.encode_text(texts)
    assert list(feeds) == TEXT_INPUTS and all(v.dtype == np.int64 for v in feeds.values())
    ids, mask = feeds["input_ids"], feeds["attention_mask"]
    assert ids.shape == mask.shape == (2, mask[1].sum())  # padded to the longest text
    assert mask[0].tolist() == [1] * 5 + [0] * (ids.shape[1] - 5)  # [CLS] the market rose [SEP], then padding
    assert ids[0, 5:].tolist() == [0] * (ids.shape[1] - 5) and ids[0, 0] == 2  # right-padded with [PAD] = 0
    assert ids[0].tolist()[:5] == text_bundle.encode_text(["the market rose"])["input_ids"][0].tolist()  # lower-cased
    long = text_bundle.encode_text(["oil " * 200])
    assert long["input_ids"].shape == (1, 64)  # truncated to the profile's longest sequence
    assert text_bundle.encode_text(["oil " * 200], max_length=16)["input_ids"].shape == (1, 16)
    with pytest.raises(OptionError, match="max_length 65 is outside"):
        text_bundle.encode_text(["oil"], max_length=65)
    many = texts * 5  # 10 texts: more than the profile's largest batch (8), run in chunks
    out = text_bundle.run_text(many)
    direct = _ort(text_bundle, "compressed.fp32", text_bundle.encode_text(many))
    assert set(out) == set(OUTPUTS) and out["sentence_embedding"].shape == (10, 32)
    for k in OUTPUTS:
        np.testing.assert_allclose(out[k], direct[k], rtol=1e-5, atol=1e-5)
    orig = text_bundle.run_text(texts, variant="original.fp32")
    assert orig["last_hidden_state"].shape == (2, ids.shape[1], 32)


def test_raw_text_without_tokenizers_names_the_install(text_bundle: Bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(DependencyError) as exc:
        text_bundle.run_text(["the market rose"])
    assert "pip install tokenizers" in str(exc.value)


def test_raw_text_on_an_image_bundle_is_one_clear_error(digits_run: Path) -> None:
    with pytest.raises(OptionError, match="takes no token ids"):
        Bundle.load(digits_run / "bundle").encode_text(["hello"])


def test_device_bench_times_batch_by_sequence_and_checks_every_output(text_run_dir: Path, tmp_path: Path) -> None:
    archive = text_run_dir / "bundle.tar.gz"
    report = load_device_report(device_bench(archive, tmp_path / "a", runs=30, warmup=0, backend="onnxruntime")[0])
    assert report["settings"]["axes"] == {"sequence": 64}  # the profile's optimum
    for name, v in report["variants"].items():
        assert v["golden"]["ok"] and set(v["golden"]["outputs"]) == set(OUTPUTS), name
        assert set(v["latency"]) == {"1", "8"}
        for b, lat in v["latency"].items():
            assert lat["axes"] == {"batch": int(b), "sequence": 64}
            assert lat["input_shapes"] == {n: [int(b), 64] for n in TEXT_INPUTS}
    report = load_device_report(device_bench(archive, tmp_path / "b", runs=30, warmup=0, backend="onnxruntime",
                                             batch_sizes=[2], sequence_length=16)[0])
    lat = report["variants"]["compressed.fp32"]["latency"]["2"]
    assert lat["input_shapes"]["attention_mask"] == [2, 16] and lat["axes"]["sequence"] == 16
    assert "sequence 16" in (tmp_path / "b" / "device-report.md").read_text()
    assert main(["device-bench", str(archive), "--out", str(tmp_path / "c"), "--runs", "30", "--warmup", "0",
                 "--backend", "onnxruntime", "--batch-sizes", "1", "--sequence-length", "8"]) == 0
    with pytest.raises(OptionError, match=r"--sequence-length 65 is outside the bundle's sequence profile \(1..64\)"):
        device_bench(archive, tmp_path / "d", runs=30, sequence_length=65)


def test_sequence_length_on_an_image_bundle_is_refused(digits_run: Path, tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="no sequence axis"):
        device_bench(digits_run / "bundle", tmp_path, runs=30, sequence_length=16)


@pytest.mark.parametrize("version", ["8.6.1", "10.3.0", "11.1"])
def test_device_bench_on_tensorrt_binds_every_input(text_bundle: Bundle, tmp_path: Path, version: str) -> None:
    name = "compressed.fp32"
    session = ort_session(text_bundle.onnx_path(name))
    kernel = lambda ins: ort_run(session, {k: v.astype(np.int64) for k, v in ins.items()})  # noqa: E731 - 8.6: int32
    trt = make_fake_tensorrt(version, kernel=kernel)
    json_path, _ = device_bench(text_bundle, tmp_path / "out", backend="tensorrt", trt=trt,
                                device_backend=HostBackend(ORIN), gpu=ORIN, engine_cache=tmp_path / "engines",
                                variants=[name], runs=30, warmup=0, batch_sizes=[1, 4], sequence_length=32)
    v = load_device_report(json_path)["variants"][name]
    assert v["backend"] == "tensorrt" and v["golden"]["ok"] and set(v["golden"]["outputs"]) == set(OUTPUTS)
    profiles = json.loads(trt._fake.plans[0][len(b"FAKEPLAN\n"):])["profiles"][0]
    assert set(profiles) == set(TEXT_INPUTS) and profiles["attention_mask"] == [[1, 1], [8, 64], [8, 64]]  # opt: the bench's batch 8
    shapes = [(c.args[0], tuple(c.args[1])) for c in trt._fake.called("IExecutionContext", "set_input_shape")]
    assert {n for n, _ in shapes} == set(TEXT_INPUTS) and ("token_type_ids", (4, 32)) in shapes


def _paths(entry: object) -> list[str]:
    """Every bundle-relative file path in a deploy.json variant entry (onnx, golden, cache, scripts)."""
    if isinstance(entry, dict):
        return [p for v in entry.values() for p in _paths(v)]
    return [entry] if isinstance(entry, str) and "/" in entry and " " not in entry else []


def _v1_bundle(digits_run: Path, dst: Path) -> Path:
    """The digits bundle re-created with a real schema-1 deploy.json (as bundles made before schema 2 have):
    the sample's own facts, with the file hashes of these ONNX files."""
    shutil.copytree(digits_run / "bundle", dst)
    v2 = json.loads((dst / "deploy.json").read_text())
    v1 = json.loads((FIXTURES / "deploy_v1_digits.json").read_text())
    # schema-1 bundles had the FP32-graph int8; today's default writes int8fp16: its files stand in under the old names
    same = {name: name if name in v2["variants"] else f"{name}fp16" for name in v1["variants"]}
    assert v1["schema_version"] == 1 and set(same.values()) == set(v2["variants"])
    for name, v in v1["variants"].items():
        src = same[name]
        for rel in _paths(v):
            if src != name and not (dst / rel).exists() and (dst / rel.replace(name, src)).is_file():
                shutil.copyfile(dst / rel.replace(name, src), dst / rel)
        v.update(sha256=v2["variants"][src]["sha256"], bytes=v2["variants"][src]["bytes"])
    (dst / "deploy.json").write_text(json.dumps(v1, indent=2))
    write_sums(dst)
    return dst


def test_schema_1_bundle_still_verifies_and_runs(digits_run: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    validate_deploy(json.loads((FIXTURES / "deploy_v1_digits.json").read_text()))
    bundle = _v1_bundle(digits_run, tmp_path / "bundle")
    assert verify_bundle(bundle) == []
    assert main(["verify", str(bundle)]) == 0
    assert "deploy.json schema 1" in capsys.readouterr().out
    b = Bundle.load(bundle)
    assert b.schema_version == 1 and b.input_names == ["input"] and b.inputs[0]["role"] == "tensor"
    assert b.axes() == {"batch": {"min": 1, "opt": 1, "max": 8}} and b.tokenizer is None
    assert b.io_spec().input_names == ["input"]
    for name in b.variants():
        inputs, golden = b.golden(name)
        assert compare_outputs(golden, run_variant(b, name), b.tolerance(name)).ok, name
    report = load_device_report(device_bench(b, tmp_path / "dev", runs=30, warmup=0, backend="onnxruntime",
                                             variants=["compressed.fp32"])[0])
    assert report["variants"]["compressed.fp32"]["golden"]["ok"] and report["settings"]["axes"] == {}
    with pytest.raises(OptionError, match="takes no token ids"):
        b.encode_text(["x"])


def test_schema_2_problems_are_named(text_run_dir: Path, tmp_path: Path) -> None:
    from pela_export.runtime.schema import deploy_problems

    d = json.loads((text_run_dir / "bundle" / "deploy.json").read_text())
    assert deploy_problems(d) == []
    bad = json.loads(json.dumps(d))
    del bad["io"]["inputs"][1]["role"]
    bad["io"]["axes"]["sequence"]["min"] = 100
    bad["tokenizer"]["padding_side"] = "middle"
    problems = deploy_problems(bad)
    assert "key 'io.inputs[1].role' is missing" in problems
    assert any("io.axes.sequence" in p and "min <= opt <= max" in p for p in problems)
    assert any("tokenizer.padding_side" in p and "middle" in p for p in problems)
    old = {**d, "schema_version": 1}  # a schema-1 reader never asked for roles or a tokenizer
    del old["tokenizer"]
    for t in old["io"]["inputs"]:
        del t["role"]
    assert deploy_problems(old) == []
    bundle = tmp_path / "bundle"
    shutil.copytree(text_run_dir / "bundle", bundle)
    (bundle / "tokenizer" / "tokenizer.json").unlink()
    write_sums(bundle)
    assert [(p.path, p.kind) for p in verify_bundle(bundle)] == [("tokenizer/tokenizer.json", "missing")]
