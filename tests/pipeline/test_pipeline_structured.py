"""--structure through the pipeline: a registered layer type built, saved and reloaded by
the compress stage, lowered (measured or user-chosen form) and verified by the export
stage against the un-lowered module, shown in the report; bad options are clear errors."""
import json

import numpy as np
import onnx
import pytest
import torch
from tiny_timm import deit_tiny_64

from pela_export.cli.main import main
from pela_export.errors import OptionError
from pela_export.export.params import count_onnx_params
from pela_export.pipeline.config import RunConfig
from pela_export.structured.lowering import find_dft
from pela_export.structured.saved import load_structured

SPEC = "tiny_timm:deit_tiny_64"
FAST = ["--skip", "package", "--skip", "build", "--precision", "fp32", "--calib-samples", "16", "--no-progress"]
NO_BENCH = ["--skip", "bench", "--skip", "report", "--skip", "precision", *FAST]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """SVDs and timing on a busy 2-CPU machine: one torch thread avoids oversubscription."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _record(out, stage):
    return json.loads((out / "stages" / f"{stage}.json").read_text())


def _ops(path):
    return [n.op_type for n in onnx.load(str(path)).graph.node]


@pytest.fixture(scope="module")
def mpo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mpo") / "o"
    assert main(["run", SPEC, "--out", str(out), "--structure", "mpo", "--share-central", "--include", "*mlp.fc1",
                 "--batch-sizes", "1", "--warmup", "1", *FAST]) == 0
    return out


def test_mpo_with_shared_central_cores_end_to_end(mpo_run):
    comp = _record(mpo_run, "compress")
    s = comp["structured"]
    assert s["kind"] == "mpo" and len(s["sharing"]["groups"]) == 1
    assert s["sharing"]["groups"][0]["layers"] == [f"blocks.{b}.mlp.fc1" for b in range(4)]
    per_layer = sum(e["stored"] for e in s["layers"])
    shared = s["sharing"]["groups"][0]["core_shape"]
    assert s["params"]["stored"] < comp["params"]["original"]
    # the shared central core is counted once in the totals, once per layer in the rows
    assert comp["compression"]["totals"]["params_after_factorized_layers"] == per_layer - 3 * int(np.prod(shared))
    spec = json.loads((mpo_run / "structured.json").read_text())
    assert spec["options"]["structure"] == "mpo" and spec["lowering"]["layers"]

    exp = _record(mpo_run, "export")
    final = exp["final_onnx"]["compressed"]
    assert all(nodes == [] for nodes in exp["structured"]["dft_nodes"].values())
    assert find_dft(onnx.load(final)) == [] and "DFT" not in _ops(final)
    assert exp["structured"]["deployed_params"] == count_onnx_params(onnx.load(final))
    for lp in exp["structured"]["lowering"]["layers"]:
        assert {c["form"] for c in lp["candidates"]} == {"structured", "lowrank", "dense"}
        assert lp["why"] == "fastest measured" and all(c["p50_ms"] > 0 for c in lp["candidates"])
    res = exp["verification"]["files"][final]
    assert res["ok"] and any("un-lowered" in n for n in res["parameter_check_notes"])

    # the graph computes what the structured PyTorch module (shared cores re-tied on load) computes
    import onnxruntime as ort

    model, _ = load_structured(deit_tiny_64(), mpo_run / "structured.pt", mpo_run / "structured.json")
    shared_core = model.blocks[0].mlp.fc1.cores[1]
    assert shared_core is model.blocks[3].mlp.fc1.cores[1]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    sess = ort.InferenceSession(final, providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-3, rtol=1e-3)

    report = json.loads((mpo_run / "report.json").read_text())
    st = report["structured"]
    assert st["method"] == "mpo" and st["params"]["deployed"] == exp["structured"]["deployed_params"]
    assert st["params"]["stored"] == s["params"]["stored"] and st["params"]["trainable"] == s["params"]["trainable"]
    assert [e["chosen"] for e in st["layers"]] == [lp["chosen"] for lp in exp["structured"]["lowering"]["layers"]]
    md = (mpo_run / "report.md").read_text()
    assert "## Structured layers" in md and "## Per-layer structure" in md and "fastest measured" in md
    assert "central cores shared in 1 group(s)" in md


def test_inspect_out_dir_prints_the_recorded_lowering(mpo_run, capsys):
    assert main(["inspect", "--out", str(mpo_run)]) == 0
    text = capsys.readouterr().out
    assert "lowering (recorded when the model was saved)" in text and "shared tensors: 1 group(s)" in text
    assert main(["inspect", str(mpo_run)]) == 0  # the directory as MODEL: the same
    assert "blocks.0.mlp.fc1 | mpo" in capsys.readouterr().out


def test_restart_reloads_the_structured_model_and_refuses_other_options(mpo_run, capsys):
    ckpt = (mpo_run / "structured.pt").stat().st_mtime_ns
    assert main(["run", SPEC, "--out", str(mpo_run), "--structure", "mpo", "--share-central", "--include", "*mlp.fc1",
                 "--skip", "compress", "--lowering", "structured", *NO_BENCH]) == 0
    assert (mpo_run / "structured.pt").stat().st_mtime_ns == ckpt, "compress must not re-run"
    exp = _record(mpo_run, "export")
    assert exp["verification"]["ok"] and set(exp["structured"]["chosen"]) == {"structured"}
    capsys.readouterr()
    assert main(["run", SPEC, "--out", str(mpo_run), "--structure", "mpo", "--include", "*mlp.fc1",
                 "--skip", "compress", *NO_BENCH]) == 2
    assert "share_central=True but this run asks for False" in capsys.readouterr().err
    assert main(["run", SPEC, "--out", str(mpo_run), "--skip", "compress", *NO_BENCH]) == 2
    err = capsys.readouterr().err
    assert "holds a structured model (--structure mpo)" in err and "fix:" in err


def test_kronecker_structured_lowering_keeps_matmuls(tmp_path):
    out = tmp_path / "o"
    assert main(["run", SPEC, "--out", str(out), "--structure", "kronecker", "--lowering", "structured",
                 "--include", "blocks.0.*", *NO_BENCH]) == 0
    assert any("frozen plain-SVD base at k=2" in c for c in _record(out, "compress")["automatic_choices"])
    plan = _record(out, "export")["structured"]["lowering"]["layers"]
    assert len(plan) == 4
    assert all(lp["chosen"] == "structured" and lp["why"].startswith("user override") for lp in plan)
    # each layer: two MatMuls of its low-rank base + two of A⊗B, instead of one dense MatMul
    assert _ops(out / "compressed.sim.onnx").count("MatMul") == _ops(out / "original.sim.onnx").count("MatMul") + 3 * 4
    shapes = {tuple(t.dims) for t in onnx.load(str(out / "compressed.sim.onnx")).graph.initializer}
    layer = _record(out, "compress")["structured"]["layers"][0]
    o1, i1 = layer["config"]["factors"]
    assert (o1, i1) in shapes or (i1, o1) in shapes


def test_circulant_with_a_per_layer_override(tmp_path):
    out = tmp_path / "o"
    assert main(["run", SPEC, "--out", str(out), "--structure", "circulant", "--lowering-override", "*fc1=dense",
                 "--include", "blocks.0.*", *NO_BENCH]) == 0
    exp = _record(out, "export")
    plan = {lp["name"]: lp for lp in exp["structured"]["lowering"]["layers"]}
    assert plan["blocks.0.mlp.fc1"]["chosen"] == "dense"
    assert plan["blocks.0.mlp.fc1"]["why"] == "user override (*fc1 -> dense)"
    assert all(lp["why"] in ("fastest measured", "only form available") for n, lp in plan.items() if n != "blocks.0.mlp.fc1")
    assert exp["verification"]["ok"] and "DFT" not in _ops(out / "compressed.sim.onnx")


@pytest.mark.parametrize("args,needle", [
    (["--structure", "mpo", "--structure-opt", "bogus=1"], "--structure-opt 'bogus' is not a hyper-parameter"),
    (["--structure", "mpo", "--structure-opt", "cores"], "is not KEY=VALUE"),
    (["--structure", "circulant", "--share-central"], "--share-central shares MPO central cores"),
    (["--share-central"], "--share-central is only used with --structure KIND"),
    (["--lowering", "dense"], "--lowering is only used with --structure KIND"),
    (["--structure", "mpo", "--ratio", "3"], "--ratio sets the rank of a plain low-rank base"),
    (["--structure", "mpo", "--method", "asvd"], "--method is only used by plain low-rank compression"),
    (["--structure", "mpo", "--structure-base", "dense"], "--structure-base is only used by adapter kinds"),
    (["--structure", "toeplitz", "--structure-base", "dense", "--ratio", "3"], "--ratio sets the rank"),
    (["--structure", "mpo", "--lowering", "fft"], "--lowering: unknown lowering form 'fft'"),
    (["--structure", "mpo", "--lowering-override", "*fc1=sparse"], "unknown lowering form 'sparse'"),
])
def test_bad_structure_options_are_clear_errors(capsys, tmp_path, args, needle):
    assert main(["run", SPEC, "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and "fix:" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_unknown_structure_kind_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", SPEC, "--structure", "nope"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err and "mpo" in err


@pytest.mark.parametrize("args,needle", [
    (["--structure", "circulant", "--structure-base", "dense", "--lowering-override", "*fc1=lowrank"],
     "cannot be lowered to 'lowrank'"),
    (["--structure", "circulant", "--lowering-override", "*nothing*=dense"], "matches no structured layer"),
])
def test_unavailable_lowering_override_is_a_clear_error(capsys, tmp_path, args, needle):
    code = main(["run", SPEC, "--out", str(tmp_path / "o"), "--include", "blocks.0.mlp.fc1", *args, *NO_BENCH])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "fix:" in err and "Traceback" not in err


def test_python_api_options_are_checked():
    with pytest.raises(OptionError, match="'bogus' is not a hyper-parameter of --structure snell"):
        RunConfig.of(structure="snell", structure_opts={"bogus": 1})
    cfg = RunConfig.of(structure="kronecker", structure_opts={"factors": [4, 8]}, lowering_overrides={"*fc2": "lowrank:4"})
    assert cfg.compress.ratio is None and cfg.structure.lowering == "auto"  # None: not given (the adapter base reads the default)
    from pela_export.pipeline.compress_options import effective_ratio

    assert effective_ratio(cfg) == 2.0  # kronecker is an adapter: its low-rank base reads the default ratio
    assert effective_ratio(RunConfig.of(structure="mpo")) is None  # mpo replaces the weight: nothing reads a ratio
