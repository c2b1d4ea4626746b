"""``pela-export sweep``: files written from an injected runner, bad input refused (exit 2) before any model
is loaded, and one real end-to-end sweep of the embedded digits default (2 ratios, FP32) that then resumes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_sweep_run import FakeRunner

from pela_export.cli.main import main
from pela_export.sweep.command import SweepError, sweep
from pela_export.sweep.grid import Grid

BASE = {"spec": None, "runs": 30, "warmup": 1, "threads": 1}


def test_sweep_writes_json_markdown_and_chart_and_resumes(tmp_path: Path) -> None:
    runner = FakeRunner()
    summary = sweep(BASE, Grid(ratios=(2, 3)), str(tmp_path), runner=runner, model_name="toy")
    assert sorted(runner.calls) == ["k2-ratio-svd-fp32", "k3-ratio-svd-fp32", "original-fp32"]
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved["front"] == summary["front"] and saved["chart"] == "sweep.png" and (tmp_path / "sweep.png").is_file()
    md = (tmp_path / "sweep.md").read_text()
    assert "![latency vs score](sweep.png)" in md
    import onnxruntime

    env = saved["environment"]  # what measured it, for a committed result
    assert env["onnxruntime"] == onnxruntime.__version__ and env["pela_export"] and env["date"]
    assert f"ONNX Runtime {onnxruntime.__version__}" in md
    again = FakeRunner()
    assert sweep(BASE, Grid(ratios=(2, 3)), str(tmp_path), runner=again, model_name="toy")["reused"] == \
        ["k2-ratio-svd-fp32", "original-fp32", "k3-ratio-svd-fp32"]
    assert again.calls == []


def _with_onnx(record: dict, out: Path) -> dict:  # type: ignore[type-arg]
    """A point record with an ONNX file for the final timing to open (the fake timer never reads it)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.onnx").write_bytes(b"onnx")
    return record | {"onnx": str(out / "model.onnx")}


class OnnxFakeRunner(FakeRunner):
    """The fake runner, with an ONNX file per point."""

    def __call__(self, point, out, done):  # type: ignore[no-untyped-def]
        return _with_onnx(super().__call__(point, out, done), out)


def test_final_interleaved_timing_replaces_each_points_own(tmp_path: Path) -> None:
    """Timed alone, k = 3 looked faster than k = 2 (3.3 vs 5 ms); timed in turn, k = 2 is faster and k = 3 leaves
    the front. The ratio and recommendation follow the interleaved timing, each point's own p50 is kept."""
    rounds = {"original-fp32": [10.0, 12.0, 10.0], "k2-ratio-svd-fp32": [4.0, 6.0, 4.0],
              "k3-ratio-svd-fp32": [9.0, 9.0, 9.0]}
    calls: list[set[str]] = []

    def timer(paths):  # type: ignore[no-untyped-def]
        calls.append(set(paths))
        return rounds

    summary = sweep(BASE, Grid(ratios=(2, 3)), str(tmp_path), runner=OnnxFakeRunner(), model_name="toy", timer=timer)
    assert calls == [set(rounds)] and summary["settings"]["timing"] == {"interleaved": True, "rounds": 3}
    rows = {r["id"]: r for r in summary["points"]}
    assert rows["k2-ratio-svd-fp32"]["latency_ms"] == 4.0 and rows["k2-ratio-svd-fp32"]["latency_ms_alone"] == 5.0
    assert rows["k2-ratio-svd-fp32"]["latency_ratio"] == 0.4
    assert summary["front"] == ["k2-ratio-svd-fp32", "original-fp32"]
    assert "called in turn" in (tmp_path / "sweep.md").read_text()
    saved = json.loads((tmp_path / "points" / "k2-ratio-svd-fp32" / "point.json").read_text())
    assert saved["latency_ms"] == 5.0  # the point's own record is not rewritten: a rerun re-times again


def test_timing_rounds_zero_keeps_each_points_own_timing(tmp_path: Path) -> None:
    def timer(paths):  # type: ignore[no-untyped-def]
        raise AssertionError("must not time")

    summary = sweep(BASE, Grid(ratios=(2,)), str(tmp_path), runner=OnnxFakeRunner(), model_name="toy", timer=timer,
                    timing_rounds=0)
    assert summary["settings"]["timing"]["why"] == "--timing-rounds 0"
    assert {r["latency_ms"] for r in summary["points"]} == {5.0, 10.0}
    assert "timed alone when it was measured (--timing-rounds 0)" in (tmp_path / "sweep.md").read_text()


class TrainingFakeRunner(FakeRunner):
    """Training gives back 80% of the points a compressed point lost."""

    def __call__(self, point, out, done):  # type: ignore[no-untyped-def]
        record = super().__call__(point, out, done)
        if point.trained:
            record["score"] = 99.0 - 0.2 * ((point.ratio or 1.0) - 1)
        return record


def test_train_top_trains_the_fastest_lossy_front_points_as_new_points(tmp_path: Path) -> None:
    from pela_export.sweep.trained import TrainTop
    from pela_export.train import TrainConfig

    runner = TrainingFakeRunner()
    top = TrainTop(1, TrainConfig(epochs=2), "digits")
    summary = sweep(BASE, Grid(ratios=(2, 3)), str(tmp_path), runner=runner, model_name="toy", train=top)
    assert runner.calls[-1] == "k3-ratio-svd-fp32-trained" and len(runner.calls) == 4
    rows = {r["id"]: r for r in summary["points"]}
    assert rows["k3-ratio-svd-fp32-trained"]["score"] > rows["k3-ratio-svd-fp32"]["score"]
    assert rows["k3-ratio-svd-fp32-trained"]["flags"][-5:] == ["--train", "--train-data", "digits", "--epochs", "2"]
    assert any("--train-top 1: trained" in c for c in summary["automatic_choices"]) and summary["model"] == "toy"
    again = TrainingFakeRunner()  # same settings: everything reused
    sweep(BASE, Grid(ratios=(2, 3)), str(tmp_path), runner=again, model_name="toy", train=top)
    assert again.calls == []
    other = TrainingFakeRunner()  # other training settings: only the trained point runs again
    sweep(BASE, Grid(ratios=(2, 3)), str(tmp_path), runner=other, model_name="toy",
          train=TrainTop(1, TrainConfig(epochs=3), "digits"))
    assert other.calls == ["k3-ratio-svd-fp32-trained"]


def test_train_top_picks_by_the_interleaved_timing(tmp_path: Path) -> None:
    """Timed alone k = 3 looks fastest; timed in turn k = 2 is, and k = 3 leaves the front: k = 2 is trained."""
    from pela_export.sweep.trained import TrainTop
    from pela_export.train import TrainConfig

    class Runner(TrainingFakeRunner):
        def __call__(self, point, out, done):  # type: ignore[no-untyped-def]
            return _with_onnx(super().__call__(point, out, done), out)

    p50 = {"original-fp32": 10.0, "k2-ratio-svd-fp32": 4.0, "k3-ratio-svd-fp32": 9.0}
    timed: list[set[str]] = []

    def timer(paths):  # type: ignore[no-untyped-def]
        timed.append(set(paths))
        return {pid: [p50.get(pid, 4.0)] * 3 for pid in paths}

    runner = Runner()
    summary = sweep(BASE, Grid(ratios=(2, 3)), str(tmp_path), runner=runner, model_name="toy", timer=timer,
                    train=TrainTop(1, TrainConfig(epochs=1)))
    assert runner.calls[-1] == "k2-ratio-svd-fp32-trained"
    assert timed == [set(p50), set(p50) | {"k2-ratio-svd-fp32-trained"}]  # before the pick, then all at the end
    assert "k2-ratio-svd-fp32-trained" in summary["front"]


def test_nothing_measured_is_an_error_after_the_files_are_written(tmp_path: Path) -> None:
    with pytest.raises(SweepError, match="no point of the sweep was measured") as info:
        sweep(BASE, Grid(ratios=(2,)), str(tmp_path), runner=FakeRunner(fail={"k2-ratio-svd-fp32"}), model_name="toy")
    assert "k2-ratio-svd-fp32" in str(info.value) and info.value.exit_code == 2
    assert "failed k2-ratio-svd-fp32" in (tmp_path / "sweep.md").read_text()


@pytest.mark.parametrize(("args", "needle"), [
    (["--ratios", "1,2"], "--ratios"),
    (["--policies", "nope"], "--policies"),
    (["--methods", "nope"], "--methods"),
    (["--precisions", "fp99"], "--precisions"),
    (["--budget-minutes", "0"], "--budget-minutes"),
    (["--policies", "energy"], "--policies"),
    (["--timing-rounds", "-1"], "--timing-rounds"),
    (["--train-top", "-1"], "--train-top"),
    (["--train-top", "1", "--epochs", "0"], "--epochs"),
    (["--epochs", "2"], "--train-top"),
])
def test_bad_input_exits_2_naming_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                           needle: str) -> None:
    assert main(["sweep", "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and "fix:" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "sweep.json").exists()


def test_unparseable_ratios_are_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["sweep", "--ratios", "two"])
    assert info.value.code == 2 and "comma-separated numbers" in capsys.readouterr().err


@pytest.mark.slow
def test_digits_sweep_end_to_end_then_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, default_cache: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PELA_EXPORT_CACHE", str(default_cache))
    out = tmp_path / "sweep"
    args = ["sweep", "--ratios", "2,3", "--precisions", "fp32", "--out", str(out), "--eval-samples", "200",
            "--threads", "1", "--warmup", "1", "--no-progress"]
    assert main(args) == 0
    summary = json.loads((out / "sweep.json").read_text())
    ids = ["k2-ratio-svd-fp32", "original-fp32", "k3-ratio-svd-fp32"]
    assert [p["id"] for p in summary["points"]] == ids and summary["metric"] == "top-1 accuracy (%)"
    rows = {p["id"]: p for p in summary["points"]}
    assert rows["original-fp32"]["score"] > 90 and rows["original-fp32"]["drop"] == 0
    assert rows["k3-ratio-svd-fp32"]["params"] < rows["k2-ratio-svd-fp32"]["params"] < rows["original-fp32"]["params"]
    assert all(p["latency_ms"] > 0 for p in summary["points"]) and summary["front"]
    assert summary["settings"]["timing"] == {"interleaved": True, "rounds": 3}  # all points timed again in turn
    assert all(p["latency_ms_alone"] > 0 for p in summary["points"]) and rows["original-fp32"]["latency_ratio"] == 1.0
    assert [r["max_drop"] for r in summary["recommendations"]] == [0.5, 1.0, 2.0]
    assert all(r["id"] in summary["front"] for r in summary["recommendations"])
    for pid in ("k2-ratio-svd-fp32", "k3-ratio-svd-fp32"):  # each compressed point is a complete run directory
        assert (out / "points" / pid / "compressed.sim.onnx").is_file() and (out / "points" / pid / "point.json").is_file()
    assert "front (top-1 accuracy (%) vs latency p50)" in capsys.readouterr().out
    assert main(args) == 0  # resume: every point.json reused
    assert json.loads((out / "sweep.json").read_text())["reused"] == ids


@pytest.mark.slow
def test_train_top_trains_the_points_own_compression(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     default_cache: Path) -> None:
    """The trained point is its untrained point's factors (same ranks) after PELA training, not a new compression."""
    monkeypatch.setenv("PELA_EXPORT_CACHE", str(default_cache))
    out = tmp_path / "sweep"
    assert main(["sweep", "--ratios", "4", "--out", str(out), "--eval-samples", "200", "--threads", "1",
                 "--warmup", "1", "--timing-rounds", "1", "--train-top", "1", "--epochs", "1", "--no-progress"]) == 0
    summary = json.loads((out / "sweep.json").read_text())
    rows = {p["id"]: p for p in summary["points"]}
    parent, child = out / "points" / "k4-ratio-svd-fp32", out / "points" / "k4-ratio-svd-fp32-trained"
    if rows["k4-ratio-svd-fp32"]["drop"] <= 0:
        pytest.skip("k = 4 lost nothing on this run, so nothing was trained")
    assert rows["k4-ratio-svd-fp32-trained"]["params"] == rows["k4-ratio-svd-fp32"]["params"]
    ranks = [[(layer["name"], layer["rank"]) for layer in json.loads((d / "lowrank.json").read_text())["layers"]]
             for d in (parent, child)]
    assert ranks[0] == ranks[1]
    assert json.loads((child / "lowrank.json").read_text())["source"]["trained"] is True
    assert (child / "compressed.pt").read_bytes() != (parent / "compressed.pt").read_bytes()
    training = json.loads((child / "stages" / "compress.json").read_text())["training"]
    assert training["config"]["epochs"] == 1
    assert rows["k4-ratio-svd-fp32-trained"]["flags"][-3:] == ["--train", "--epochs", "1"]
