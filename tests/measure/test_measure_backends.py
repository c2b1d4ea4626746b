"""Latency, ONNX logits and sizes on a tiny hand-built ONNX model (no exporter needed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pela_export.measure import LatencyStats, bench_latency_grid, bench_onnxruntime, bench_torch_eager, collect_logits_onnx, collect_logits_torch, count_params, evaluate_logits, onnx_file_size, time_callable

from pela_export.export.params import count_onnx_params
from pela_export.errors import ArtifactError, OptionError
from pela_export.lowrank.layer import LowRankLinear

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

IN, OUT = 6, 4


@pytest.fixture()
def linear() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(IN, OUT)


@pytest.fixture()
def linear_onnx(tmp_path: Path, linear: nn.Linear) -> Path:
    """ONNX graph y = x·Wᵀ + b with the same weights as ``linear``."""
    w = numpy_helper.from_array(linear.weight.detach().numpy().T.copy(), "w")
    b = numpy_helper.from_array(linear.bias.detach().numpy().copy(), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["logits"])],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", IN])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", OUT])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "linear.onnx"
    onnx.save(model, str(path))
    return path


def _sane(s: LatencyStats, batch: int, runs: int) -> None:
    assert s.n_runs == runs and s.batch == batch
    assert 0 < s.min_ms <= s.p50_ms <= s.p90_ms <= s.p99_ms <= s.max_ms
    assert s.mean_ms > 0 and s.throughput is not None and s.throughput > 0
    assert s.threads is not None and s.threads >= 1


def test_time_callable_counts_calls() -> None:
    calls = []
    s = time_callable(lambda: calls.append(1), warmup=2, runs=5, batch=1, allow_few_runs=True)
    assert len(calls) == 7 and s.n_runs == 5


@pytest.mark.parametrize("runs", [1, 29])
def test_few_runs_rejected_without_opt_in(runs: int) -> None:
    with pytest.raises(OptionError, match=r"--runs must be >= 30 for stable percentiles"):
        time_callable(lambda: None, warmup=0, runs=runs, batch=1)
    with pytest.raises(OptionError, match="--runs"):
        bench_torch_eager(nn.Identity(), torch.ones(1, 2), runs=runs)


def test_bad_warmup_and_threads_rejected(linear: nn.Linear) -> None:
    with pytest.raises(OptionError, match="--warmup"):
        time_callable(lambda: None, warmup=-1, runs=30, batch=1)
    with pytest.raises(OptionError, match="--threads"):
        bench_torch_eager(linear, torch.ones(1, IN), warmup=0, runs=2, threads=0, allow_few_runs=True)


def test_bench_torch_eager(linear: nn.Linear) -> None:
    before = torch.get_num_threads()
    linear.train()
    s = bench_torch_eager(linear, torch.randn(3, IN), warmup=1, runs=4, threads=1, allow_few_runs=True)
    _sane(s, batch=3, runs=4)
    assert s.threads == 1
    assert torch.get_num_threads() == before  # restored
    assert linear.training  # restored


def test_bench_onnxruntime(linear_onnx: Path) -> None:
    x = np.random.default_rng(0).standard_normal((2, IN)).astype(np.float32)
    s = bench_onnxruntime(linear_onnx, "input", x, warmup=1, runs=4, threads=1, allow_few_runs=True)
    _sane(s, batch=2, runs=4)
    assert s.threads == 1


def test_bench_onnxruntime_errors(linear_onnx: Path, tmp_path: Path) -> None:
    x = np.ones((1, IN), dtype=np.float32)
    with pytest.raises(OptionError, match="no input named 'x'"):
        bench_onnxruntime(linear_onnx, "x", x, runs=2, allow_few_runs=True)
    with pytest.raises(ArtifactError):
        bench_onnxruntime(tmp_path / "missing.onnx", "input", x, runs=2, allow_few_runs=True)
    with pytest.raises(OptionError, match="--runs must be >= 30"):
        bench_onnxruntime(linear_onnx, "input", x, runs=5)


def test_latency_grid_shape(linear: nn.Linear, linear_onnx: Path) -> None:
    grid = bench_latency_grid(linear, linear_onnx, "input", lambda b: torch.randn(b, IN), batch_sizes=(1, 8),
                              warmup=0, runs=2, threads=1, allow_few_runs=True)
    assert set(grid["latency"]) == {"onnxruntime", "torch_eager"}
    for backend in ("onnxruntime", "torch_eager"):
        assert set(grid["latency"][backend]) == {"1", "8"}
        assert grid["latency"][backend]["8"]["batch"] == 8
        assert grid["threads"][backend] == 1
    no_onnx = bench_latency_grid(linear, None, "input", lambda b: torch.randn(b, IN), batch_sizes=(2,),
                                 warmup=0, runs=2, allow_few_runs=True)
    assert set(no_onnx["latency"]) == {"torch_eager"}


def test_onnx_logits_match_torch(linear: nn.Linear, linear_onnx: Path) -> None:
    x = np.random.default_rng(1).standard_normal((7, IN)).astype(np.float32)
    ref = collect_logits_torch(linear, x, batch_size=3)
    got = collect_logits_onnx(linear_onnx, "input", x, batch_size=3, threads=1)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    r = evaluate_logits(ref, got)
    assert r["top1_agreement"] == 1.0 and r["cosine_mean"] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(OptionError, match="no output named"):
        collect_logits_onnx(linear_onnx, "input", x, batch_size=3, output_name="nope")


def test_sizes_and_params(linear: nn.Linear, linear_onnx: Path) -> None:
    size = onnx_file_size(linear_onnx)
    assert size.bytes == linear_onnx.stat().st_size and size.external_data_bytes == 0
    assert size.to_dict()["mb"] == pytest.approx(size.bytes / 1e6)
    assert count_params(linear) == IN * OUT + OUT
    assert count_onnx_params(onnx.load(linear_onnx)) == IN * OUT + OUT
    assert count_params(LowRankLinear(IN, OUT, 2)) == 2 * (IN + OUT) + OUT
    with pytest.raises(ArtifactError):
        onnx_file_size(linear_onnx.parent / "nope.onnx")


def test_tied_params_counted_once() -> None:
    a, b = nn.Linear(4, 4), nn.Linear(4, 4)
    b.weight = a.weight
    assert count_params(nn.Sequential(a, b)) == 16 + 4 + 4


def test_external_data_counted(tmp_path: Path, linear_onnx: Path) -> None:
    model = onnx.load(str(linear_onnx))
    out = tmp_path / "ext.onnx"
    onnx.save(model, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.onnx.data", size_threshold=0)
    size = onnx_file_size(out)
    assert size.external_data_bytes == (tmp_path / "ext.onnx.data").stat().st_size > 0
    assert size.bytes == out.stat().st_size + size.external_data_bytes
    assert count_onnx_params(onnx.load(out)) == IN * OUT + OUT


def test_interleaved_p50_calls_the_models_in_turn(linear_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    import pela_export.measure.latency as latency
    from pela_export.measure import interleaved_p50_ms

    log: list[str] = []

    def fake_session(path: Path, threads: int | None, optimization: str = "all") -> tuple[object, int]:
        sess = types.SimpleNamespace(get_inputs=lambda: [types.SimpleNamespace(name="input")],
                                     run=lambda _out, _feeds: log.append(Path(path).stem))
        return sess, 1

    monkeypatch.setattr(latency, "make_session", fake_session)
    x = {"input": np.ones((1, IN), dtype=np.float32)}
    got = interleaved_p50_ms({"a": "a.onnx", "b": "b.onnx"}, x, warmup=2, runs=30, threads=1, rounds=2)
    assert sorted(got) == ["a", "b"] and all(len(v) == 2 and all(t >= 0 for t in v) for v in got.values())
    assert log[:4] == ["a", "a", "b", "b"]  # warm-up of each, then timed calls alternate
    assert log[4:] == ["a", "b"] * 60 and len(log) == 4 + 2 * 2 * 30


def test_interleaved_p50_on_real_onnx_and_bad_rounds(linear_onnx: Path) -> None:
    from pela_export.measure import interleaved_p50_ms

    x = {"input": np.ones((1, IN), dtype=np.float32)}
    got = interleaved_p50_ms({"one": linear_onnx, "two": linear_onnx}, x, warmup=1, runs=30, threads=1, rounds=1)
    assert set(got) == {"one", "two"} and all(len(v) == 1 and v[0] > 0 for v in got.values())
    with pytest.raises(OptionError, match="--timing-rounds"):
        interleaved_p50_ms({"one": linear_onnx}, x, runs=30, rounds=0)
    with pytest.raises(OptionError, match="takes inputs"):
        interleaved_p50_ms({"one": linear_onnx}, {"x": x["input"]}, runs=30)
