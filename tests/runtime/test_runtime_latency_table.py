"""Per-layer latency tables: shapes from a real forward pass, deduplication, caching, invalidation, interpolation."""
import json

import pytest
import torch
from torch import nn

from pela_export.errors import ArtifactError
from pela_export.lowrank.latency_policy import capture_ops
from pela_export.runtime.latency_table import (Entry, LatencyTable, LayerOp, RuntimeEnv,
                                               max_saving_rank_of, rank_grid)

ENV = RuntimeEnv("onnxruntime-cpu", "1.0", "test-cpu", 2)


class Block(nn.Module):
    def __init__(self, d: int = 32) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        return x + self.fc2(torch.relu(self.fc1(x)))


class Tiny(nn.Module):
    """Three identical blocks on (batch, 5 tokens, 32) plus a conv stem: 3 distinct shapes in 7 layers."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, stride=2, padding=1)
        self.blocks = nn.Sequential(*[Block() for _ in range(3)])

    def forward(self, x):
        t = self.stem(x).flatten(2)[:, :, :5].transpose(1, 2)  # (B, 5, 32)
        return self.blocks(t)


class Counting:
    """An injected ``measure``: ms from a formula, every call counted (no timing in tests)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int | None]] = []

    def __call__(self, op, rank, env):
        self.calls.append((op.key, rank))
        out, inn = op.out_features, op.in_features
        return 0.01 * out * inn / 1000 if rank is None else 0.01 * rank * (out + inn) / 1000 + 0.005


def _ops(batch: int = 1):
    model = Tiny()
    modules = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    return capture_ops(model, modules, (torch.randn(batch, 3, 16, 16),))


def test_shapes_come_from_the_forward_pass_at_the_batch():
    ops = _ops(batch=2)
    assert ops["blocks.0.fc1"] == LayerOp("linear", 32, 128, True, rows=2 * 5)
    assert ops["blocks.2.fc2"].rows == 10 and ops["blocks.2.fc2"].in_features == 128
    stem = ops["stem"]
    assert stem.kind == "conv" and stem.input_shape == (2, 3, 16, 16) and stem.stride == (2, 2)
    assert stem.padding == (1, 1) and stem.decomposition == "channel"
    assert len({o.key for o in ops.values()}) == 3  # the three blocks share two shapes


def test_table_records_dense_and_grid_per_distinct_shape():
    ops = _ops()
    table, measure = LatencyTable(), Counting()
    taken = table.ensure(ops.values(), ENV, measure, batch=1)
    fc1 = table.get(ENV, ops["blocks.1.fc1"])
    assert fc1 is not None and fc1.dense_ms == pytest.approx(0.01 * 32 * 128 / 1000)
    assert sorted(fc1.ranks) == rank_grid(max_saving_rank_of(ops["blocks.0.fc1"]))
    assert all(1 <= r <= 25 for r in fc1.ranks)  # 32x128: r*(160) < 4096 -> r <= 25
    assert taken == len(measure.calls) == sum(1 + len(rank_grid(max_saving_rank_of(o)))
                                              for o in {o.key: o for o in ops.values()}.values())
    assert len({k for k, _ in measure.calls}) == 3


def test_second_build_reuses_the_saved_table(tmp_path):
    ops = _ops()
    first = Counting()
    table = LatencyTable()
    table.ensure(ops.values(), ENV, first, batch=1)
    table.set_model_ms(ENV, "tiny", 1.5)
    path = table.save(tmp_path / "latency_table.json")
    again, second = LatencyTable.load(path), Counting()
    assert again.ensure(ops.values(), ENV, second, batch=1) == 0 and second.calls == []
    assert again.model_ms(ENV, "tiny") == 1.5
    saved = json.loads(path.read_text())
    entry = saved["entries"][0]
    assert {"runtime", "version", "device", "threads", "batch", "dtype", "dense_ms", "ranks", "shape"} <= set(entry)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temporary file


def test_another_thread_count_device_or_version_is_missing():
    ops = _ops()
    table = LatencyTable()
    table.ensure(ops.values(), ENV, Counting(), batch=1)
    for other in (RuntimeEnv("onnxruntime-cpu", "1.0", "test-cpu", 1), RuntimeEnv("onnxruntime-cpu", "1.1", "test-cpu", 2),
                  RuntimeEnv("onnxruntime-cpu", "1.0", "other-cpu", 2)):
        assert table.get(other, ops["stem"]) is None
        measure = Counting()
        assert table.ensure(ops.values(), other, measure, batch=1) == len(measure.calls) > 0
    assert table.model_ms(RuntimeEnv("onnxruntime-cpu", "1.0", "test-cpu", 1), "tiny") is None


def test_a_grid_change_measures_only_the_missing_ranks():
    op = LayerOp("linear", 64, 64, False, rows=4)
    table, measure = LatencyTable(), Counting()
    table.ensure([op], ENV, measure, batch=1, grids={op.key: [8, 16]})
    measure.calls.clear()
    table.ensure([op], ENV, measure, batch=1, grids={op.key: [8, 16, 24]})
    assert measure.calls == [(op.key, 24)]


def test_off_grid_ranks_are_interpolated_and_say_so():
    e = Entry(LayerOp("linear", 64, 64, False), ENV, 1, 1.0, {8: 0.2, 16: 0.4})
    assert e.ms_at(8) == (0.2, "measured")
    ms, how = e.ms_at(12)
    assert ms == pytest.approx(0.3) and "interpolated between ranks 8 and 16" in how
    assert "clamped" in e.ms_at(4)[1] and e.ms_at(40)[0] == 0.4
    assert e.ms_at(None) == (1.0, "measured")


def test_rank_grid_is_bounded_aligned_and_unaligned():
    grid = rank_grid(287)
    assert len(grid) <= 12 and grid[-1] == 287 and grid[0] >= 1
    assert {64, 128} <= set(grid) and any(r % 8 for r in grid)
    assert all(r % 16 == 0 for r in rank_grid(300, align=16))
    assert rank_grid(0) == []


def test_load_refuses_a_file_that_is_not_a_table(tmp_path):
    bad = tmp_path / "t.json"
    bad.write_text('{"kind": "something else"}')
    with pytest.raises(ArtifactError, match="not a latency table"):
        LatencyTable.load(bad)
