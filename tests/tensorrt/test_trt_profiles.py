"""Profiles for every dynamic axis of every input (a 3-input text model: batch and sequence dynamic):
defaults from the model's axis ranges, one --profile sizing every input that shares its axes, one clear
error per bad request; the trtexec command, the build (fake TensorRT of every manifest version) and the
runner name every input."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_tensorrt import VERSIONS, make_fake_tensorrt
from trt_testutil import ORIN, TEXT_INPUTS, save, text_kernel, text_model

from pela_export.errors import OptionError
from pela_export.models.io import AxisRange, InputSpec, IOSpec, OutputSpec
from pela_export.tensorrt import (
    TABLE_VERSIONS,
    BuildOptions,
    HostBackend,
    ShapeRange,
    TrtRunner,
    build_engine,
    check_profiles,
    features_for_version,
    inspect_onnx,
    parse_profile,
    parse_profiles,
    plan_build,
    trtexec_command,
    with_model_axes,
)

SEQ = (1, 128, 512)
TEXT_IO = IOSpec(tuple(InputSpec(n, "int64", ("batch", "sequence"), r, 0, h) for n, r, h in (
    ("input_ids", "token_ids", 30522), ("attention_mask", "attention_mask", 2), ("token_type_ids", "token_type_ids", 2))),
    (OutputSpec("logits", ("batch",)), OutputSpec("last_hidden_state", ("batch", "sequence"), role="hidden_state")),
    {"batch": AxisRange(1, 1, 32), "sequence": AxisRange(*SEQ)})


@pytest.fixture
def text_onnx(tmp_path: Path) -> Path:
    return save(text_model(), tmp_path / "text.onnx")


def _plan(onnx: Path, version: str = "10.3", **kw: Any) -> Any:
    return plan_build(BuildOptions(**kw), features_for_version(version), inspect_onnx(onnx))


def test_defaults_cover_every_axis_of_every_input(text_onnx: Path) -> None:
    plan = _plan(text_onnx, axes={"sequence": SEQ}, opt_batch=4, max_batch=32)
    want = ShapeRange((1, 1), (4, 128), (32, 512))
    assert plan.profiles == {n: want for n in TEXT_INPUTS}
    assert list(plan.profiles) == list(TEXT_INPUTS)  # graph order
    d = next(d for d in plan.decisions if "'attention_mask'" in d)
    assert "batch min 1, opt 4, max 32 (dynamic batch axis: --opt-batch/--max-batch)" in d and "sequence min 1, opt 128, max 512" in d


def test_model_axes_come_from_the_io_description() -> None:
    opts = with_model_axes(BuildOptions(), TEXT_IO)
    assert opts.axes == {"sequence": SEQ}  # the batch stays --max-batch/--opt-batch
    assert with_model_axes(BuildOptions(axes={"sequence": (1, 8, 16)}), TEXT_IO).axes == {"sequence": (1, 8, 16)}
    assert check_profiles(BuildOptions(), TEXT_IO) == {n: ShapeRange((1, 1), (1, 128), (8, 512)) for n in TEXT_INPUTS}
    assert BuildOptions.from_dict(opts.to_dict()) == opts


def test_one_profile_sizes_every_input_sharing_its_axes(text_onnx: Path) -> None:
    plan = _plan(text_onnx, axes={"sequence": SEQ}, profiles=parse_profiles(["input_ids:1x16,8x128,32x512"]))
    assert plan.profiles == {n: ShapeRange((1, 16), (8, 128), (32, 512)) for n in TEXT_INPUTS}
    assert any("shared with --profile input_ids" in d for d in plan.decisions)
    # the same resolution on the I/O description (before any export) agrees with the graph's
    assert check_profiles(BuildOptions(profiles=parse_profiles(["input_ids:1x16,8x128,32x512"])), TEXT_IO) == \
        plan.profiles


def test_explicit_profiles_must_agree_on_shared_axes(text_onnx: Path) -> None:
    ok = parse_profiles(["input_ids:1x16,8x128,32x512", "attention_mask:1x16,8x128,32x512"])
    assert _plan(text_onnx, profiles=ok).profiles["token_type_ids"].max == (32, 512)
    bad = parse_profiles(["input_ids:1x16,8x128,32x512", "attention_mask:1x16,8x128,32x256"])
    with pytest.raises(OptionError) as exc:
        _plan(text_onnx, profiles=bad)
    msg = str(exc.value)
    assert "--profile input_ids and --profile attention_mask" in msg and "'sequence'" in msg
    assert "max 512" in msg and "max 256" in msg and exc.value.fix


def test_profile_for_an_input_the_model_does_not_have(text_onnx: Path) -> None:
    for check in (lambda o: _plan(text_onnx, profiles=o.profiles), lambda o: check_profiles(o, TEXT_IO)):
        with pytest.raises(OptionError) as exc:
            check(BuildOptions(profiles=parse_profiles(["pixel_values:1x3x224x224"])))
        assert "'pixel_values'" in str(exc.value) and "does not have" in str(exc.value)
        assert "input_ids, attention_mask, token_type_ids" in str(exc.value)


def test_min_larger_than_max_is_one_clear_error() -> None:
    with pytest.raises(OptionError) as exc:
        parse_profile("input_ids:32x512,8x128,1x16")
    assert "min [32, 512] is larger than max [1, 16]" in str(exc.value) and "--profile" in str(exc.value)


def test_profile_rank_must_match_the_input(text_onnx: Path) -> None:
    with pytest.raises(OptionError, match=r"--profile input_ids: rank 3 .*rank 2"):
        _plan(text_onnx, profiles=parse_profiles(["input_ids:1x1x1,1x8x8,1x16x16"]))
    with pytest.raises(OptionError, match=r"--profile input_ids: rank 3"):
        check_profiles(BuildOptions(profiles=parse_profiles(["input_ids:1x1x1"])), TEXT_IO)


def test_unsized_sequence_axis_asks_for_a_profile(text_onnx: Path) -> None:
    with pytest.raises(OptionError) as exc:
        _plan(text_onnx)  # a bare ONNX file: nothing says how long a sequence gets
    assert "--profile input_ids:MIN,OPT,MAX" in str(exc.value) and "input_ids:1x1,1x1,1x1" in str(exc.value)
    with pytest.raises(OptionError, match="axis 'sequence' needs sizes"):
        BuildOptions(axes={"sequence": (8, 4, 16)}).validate()


@pytest.mark.parametrize("version", TABLE_VERSIONS)
def test_trtexec_names_every_input(text_onnx: Path, version: str) -> None:
    opts = BuildOptions(axes={"sequence": SEQ}, max_batch=32, opt_batch=8)
    argv = trtexec_command("t.onnx", "t.plan", opts, version, graph=inspect_onnx(text_onnx))
    shapes = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in argv if a.startswith(("--min", "--opt", "--max"))}
    assert shapes == {"--minShapes": "input_ids:1x1,attention_mask:1x1,token_type_ids:1x1",
                      "--optShapes": "input_ids:8x128,attention_mask:8x128,token_type_ids:8x128",
                      "--maxShapes": "input_ids:32x512,attention_mask:32x512,token_type_ids:32x512"}


@pytest.mark.parametrize("version", VERSIONS)
def test_build_sets_every_input_and_run_binds_every_tensor(text_onnx: Path, tmp_path: Path, version: str) -> None:
    trt = make_fake_tensorrt(version)
    opts = BuildOptions(precision="auto", profiles=parse_profiles(["input_ids:1x2,2x8,4x16"]))
    rec = build_engine(text_onnx, tmp_path / "out" / "text.plan", opts, trt=trt, gpu=ORIN)
    calls = trt._fake.called("IOptimizationProfile", "set_shape")
    assert [c.args[0] for c in calls] == list(TEXT_INPUTS)
    assert all(c.args[1:] == ((1, 2), (2, 8), (4, 16)) for c in calls)
    assert set(rec.metadata["profiles"]) == set(TEXT_INPUTS)
    script = rec.trtexec_script.read_text()
    for flag in ("--minShapes", "--optShapes", "--maxShapes"):
        line = next(tok for tok in shlex.split(script.replace("\\\n", " ")) if tok.startswith(flag))
        assert all(f"{n}:" in line for n in TEXT_INPUTS), line

    runner = TrtRunner(rec.plan_path, trt=make_fake_tensorrt(version, kernel=text_kernel), backend=HostBackend(ORIN))
    rng = np.random.default_rng(0)
    feeds = {n: rng.integers(0, 3, size=(3, 5)).astype(np.int64) for n in TEXT_INPUTS}
    out = runner.run(feeds)
    ctx = runner.context
    assert sorted(c.args[0] for c in runner.trt._fake.called("IExecutionContext", "set_input_shape")) == \
        sorted(TEXT_INPUTS)
    assert ctx is not None and set(out) == {"logits", "last_hidden_state"}
    want = text_kernel(feeds)
    assert out["last_hidden_state"].shape == (3, 5, 3) and out["logits"].shape == (3, 3)  # from the resolved shapes
    for k in want:
        np.testing.assert_allclose(out[k], want[k], rtol=1e-6)
    with pytest.raises(Exception, match="outside the engine's profile"):
        runner.run({n: np.zeros((3, 17), dtype=np.int64) for n in TEXT_INPUTS})  # sequence beyond max 16


@pytest.mark.parametrize("kw,opt,why", [
    ({"bench_batches": (1, 8)}, 8, "opt 8: the batch the bench times most (--batch-sizes 1,8"),
    ({"bench_batches": (1, 32)}, 8, "the largest within --max-batch"),  # the engine cannot run 32 anyway
    ({"bench_batches": (4,), "max_batch": 16}, 4, "opt 4: the batch the bench times most (--batch-sizes 4"),
    ({"bench_batches": (1, 8), "opt_batch": 2}, 2, None),  # --opt-batch wins
    ({}, 1, "opt 1: no bench batch sizes known"),
])
def test_default_opt_is_the_batch_the_bench_times_most(models: dict[str, Path], kw: dict[str, Any], opt: int,
                                                       why: str | None) -> None:
    """TensorRT tunes kernels for the profile's opt shape, so the default opt is the batch the bench times
    most (equal runs per batch size: the largest), and the choice is recorded with the profile."""
    plan = plan_build(BuildOptions(**kw), features_for_version("10.3"), inspect_onnx(models["fp32"]))
    assert plan.profiles["input"].opt == (opt, 3, 4, 4)
    (d,) = [d for d in plan.decisions if "profile for 'input'" in d]
    assert (why in d) if why else "bench" not in d, d


def test_bench_batches_reach_the_options_and_survive_the_sidecar() -> None:
    from pela_export.tensorrt.profiles import with_bench_batches

    opts = with_bench_batches(BuildOptions(), [1, 8])
    assert opts.bench_batches == (1, 8) and opts.opt_batch is None
    assert BuildOptions.from_dict(opts.to_dict()) == opts
    with pytest.raises(OptionError, match="--batch-sizes"):
        BuildOptions(bench_batches=(0,)).validate()
