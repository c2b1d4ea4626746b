"""The measured inputs of ``--rank-policy latency`` for a run: the per-layer latency table (kept in the
output dir as ``latency_table.json`` and reused while it is valid), the dense model's latency, and a
whole-model measurement used to check (and correct) the policy's prediction.

Timings use ONNX Runtime CPU at ``--threads`` and the first of ``--batch-sizes``, as the bench does; the
whole model is exported as the export stage would (opset, exporter, batch axis) without simplification,
the same way for the dense and the compressed model.
"""
from __future__ import annotations

import copy
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import ArtifactError, OptionError
from ..lowrank.kinds import empty_factorized
from ..lowrank.latency_policy import LatencyModel, capture_ops, check_latency_options
from ..runtime.latency_table import LatencyTable, LayerOp, RuntimeEnv
from ..runtime.layer_graphs import OrtMeasure, ort_env
from ..lowrank.select import select_layers, set_submodule
from .context import Context, log

TABLE_FILE = "latency_table.json"


def table_path(ctx: Context) -> Path:
    return ctx.artifacts.root / TABLE_FILE


def _load_table(ctx: Context, path: Path) -> LatencyTable:
    """The saved table, or a new one (an unreadable file is said, then re-measured)."""
    if not path.is_file():
        return LatencyTable()
    try:
        return LatencyTable.load(path)
    except ArtifactError as exc:
        ctx.note(f"latency table {path} was not reusable ({exc.problem}): re-measured")
        return LatencyTable()


def _model_key(ctx: Context, batch: int) -> str:
    cfg = ctx.cfg
    return (f"{ctx.loaded.source}|input={list(ctx.loaded.input_shape)}|batch={batch}|opset={cfg.export.opset}|"
            f"{cfg.export.exporter}|{'dynamic' if cfg.export.dynamic_batch else 'static'}")


def latency_model(ctx: Context) -> LatencyModel:
    """Measure (or reuse) everything the latency policy reads; the table is saved before the policy runs."""
    from ..measure._ort import default_threads
    from .bench import example_inputs, shapes_for

    cfg = ctx.cfg
    check_latency_options(cfg.compress.latency_budget, cfg.compress.max_drop)
    threads = cfg.bench.threads if cfg.bench.threads is not None else default_threads()
    batches = tuple(cfg.bench.batch_sizes or (1,))
    batch = batches[0]
    if len(batches) > 1:
        ctx.note(f"--rank-policy latency times batch {batch} (the first of the bench's batch sizes {','.join(map(str, batches))})")
    env = ort_env(threads)
    model = ctx.original()
    modules = dict(select_layers(model, cfg.compress.include, cfg.compress.exclude))
    inputs = example_inputs(ctx, shapes_for(ctx), batch)
    ops = capture_ops(model, modules, inputs, cfg.compress.conv_decomposition)
    path = table_path(ctx)
    table = _load_table(ctx, path)
    shapes = len({op.key for op in ops.values()})
    if cfg.compress.latency_table is not None:
        given, denv = given_table(cfg.compress.latency_table)
        table.merge(given)
        if denv != env:
            return _device_model(ctx, table, denv, ops, _model_key(ctx, batch), path, batch)
    log(f"latency table: {len(ops)} layers, {shapes} distinct shapes, ONNX Runtime CPU {env.version}, "
        f"{threads} thread(s), batch {batch}")
    taken = table.ensure(ops.values(), env, OrtMeasure(cfg.bench.warmup, cfg.bench.runs), batch,
                         align=cfg.compress.align)
    measure = WholeModel(ctx, inputs, threads)
    key = _model_key(ctx, batch)
    dense_ms = table.model_ms(env, key)
    reused_dense = dense_ms is not None
    if dense_ms is None:
        dense_ms = measure({})
        table.set_model_ms(env, key, dense_ms)
    measure.dense_ms = dense_ms
    table.save(path)
    log(f"latency table {'reused from' if taken == 0 and reused_dense else 'written to'} {path} "
        f"({taken} layer timings taken); dense model {dense_ms:.3f} ms")
    report = {"table": str(path), "layer_timings_taken": taken, "table_reused": taken == 0,
              "dense_model_reused": reused_dense, "batch": batch, "dtype": "float32",
              "shapes": shapes, "whole_model": "exported without simplification, timed with ONNX Runtime CPU in "
                                               f"{ROUNDS} rounds alternating with the dense model (p50 of "
                                               f"{max(cfg.bench.runs // 2, 5)} runs each); measured = median "
                                               "ratio x the dense model's ms"}
    return LatencyModel(env, table, ops, dense_ms, measure, cfg.compress.align, report)


def given_table(file: str) -> tuple[LatencyTable, RuntimeEnv]:
    """``--latency-table FILE`` and the one environment it was measured in (OptionError otherwise)."""
    table = LatencyTable.load(file)
    envs = table.envs()
    if len(envs) != 1:
        held = ("no layer timings" if not envs else
                f"timings from {len(envs)} environments ({'; '.join(e.key for e in envs)})")
        raise OptionError(f"--latency-table {file} holds {held}; the policy needs one device's costs",
                          fix="pass the latency_table.json written by one `pela-export device-latency BUNDLE` run")
    return table, envs[0]


def _device_model(ctx: Context, table: LatencyTable, env: RuntimeEnv, ops: Mapping[str, LayerOp], key: str,
                  path: Path, batch: int) -> LatencyModel:
    """A latency model from a table measured elsewhere: every layer's entry and the whole dense model must be in
    it; nothing can be timed here (the whole-model check is the device's device-bench)."""
    file = ctx.cfg.compress.latency_table
    fix = (f"measure it on the device with `pela-export device-latency BUNDLE`, using the bundle of a `run "
           f"--rank-policy latency` of this model with the same input shape, --batch-sizes {batch}, opset and exporter")
    missing = [n for n, op in ops.items() if table.get(env, op) is None]
    if missing:
        raise OptionError(f"--latency-table {file} has no timing for {len(missing)} of {len(ops)} layers measured on "
                          f"{env.key}, e.g. {missing[0]!r} ({ops[missing[0]].key})", fix=fix)
    dense_ms = table.model_ms(env, key)
    if dense_ms is None:
        raise OptionError(f"--latency-table {file} has no whole-model timing of this model ({key}) on {env.key}",
                          fix=fix)
    table.save(path)
    log(f"latency table from {file}: {len(ops)} layers on {env.key}; dense model {dense_ms:.4f} ms there")
    report = {"table": str(path), "given_table": str(file), "measured_on": env.key, "foreign": True,
              "layer_timings_taken": 0, "table_reused": True, "dense_model_reused": True, "batch": batch,
              "shapes": len({op.key for op in ops.values()}),
              "whole_model": f"not measured here: the costs are {env.key}'s; time the compressed bundle there with "
                             "`pela-export device-bench`"}
    return LatencyModel(env, table, dict(ops), dense_ms, None, ctx.cfg.compress.align, report)


#: Alternating rounds when a candidate is timed against the dense model (each round half the runs of each).
ROUNDS = 3


class WholeModel:
    """``(ranks) -> ms``: the original model with the layers in ``ranks`` (rank >= 1) replaced by factor
    layers of that rank (random values: the timing depends only on shapes), exported and timed.

    A candidate is timed in alternating rounds with the dense model and returned as the measured ratio ×
    the dense model's recorded ms: on a shared machine absolute times drift between calls, more than the
    budget's margin for a sub-millisecond model, while the ratio of interleaved timings stays put."""

    def __init__(self, ctx: Context, inputs: tuple[torch.Tensor, ...], threads: int) -> None:
        self.ctx, self.inputs, self.threads = ctx, inputs, threads
        self._tmp = tempfile.TemporaryDirectory(prefix="pela-latency-")
        self._dense: Path | None = None
        self.dense_ms: float | None = None  # the recorded dense ms ratios are applied to (set by latency_model)

    def __call__(self, ranks: Mapping[str, int]) -> float:
        from ..measure import bench_onnxruntime

        cfg = self.ctx.cfg
        factorized = {n: r for n, r in ranks.items() if r >= 1}
        what = f"{len(factorized)} layers factorized" if factorized else "dense"
        log(f"latency policy: timing the whole model ({what})")
        if self._dense is None:
            self._dense = self._export({}, "dense.onnx")
        feeds = {n: t.detach().cpu().numpy() for n, t in zip(self.ctx.loaded.spec.input_names, self.inputs, strict=True)}

        def p50(path: Path, runs: int) -> float:
            return float(bench_onnxruntime(path, None, feeds, cfg.bench.warmup, runs, self.threads,
                                           allow_few_runs=True).p50_ms)

        if not factorized or self.dense_ms is None:
            return p50(self._dense, cfg.bench.runs)
        candidate = self._export(factorized, "candidate.onnx")
        runs = max(cfg.bench.runs // 2, 5)
        pairs = [(p50(self._dense, runs), p50(candidate, runs)) for _ in range(ROUNDS)]
        ratio = sorted(c / d for d, c in pairs)[len(pairs) // 2]
        return ratio * self.dense_ms

    def _export(self, ranks: Mapping[str, int], name: str) -> Path:
        from ..export import export_onnx
        from ..export.onnx_export import export_example

        cfg, loaded = self.ctx.cfg, self.ctx.loaded
        model = copy.deepcopy(self.ctx.original()).eval()
        conv = cfg.compress.conv_decomposition
        for name, rank in ranks.items():
            if rank >= 1:
                layer = empty_factorized(model.get_submodule(name), rank, conv)
                for p in layer.parameters():
                    nn.init.normal_(p, std=0.02)  # never uninitialised memory (denormals distort timings)
                set_submodule(model, name, layer)
        example = export_example(loaded, 2 if cfg.export.dynamic_batch else 1)
        res = export_onnx(model, example, Path(self._tmp.name) / name, io=loaded.spec, opset=cfg.export.opset,
                          dynamic_batch=cfg.export.dynamic_batch, exporter=cfg.export.exporter,  # type: ignore[arg-type]
                          fallback_exporter=cfg.export.exporter_fallback)
        return Path(res.path)


def note_latency_result(ctx: Context, report: Mapping[str, object]) -> None:
    """Predicted vs measured latency, corrections and kept-dense layers, as notes in the report."""
    decisions = report.get("decisions")
    decisions = decisions if isinstance(decisions, dict) else {}
    dense = [n for n, d in decisions.items() if d.get("rank") is None]
    slower = [n for n in dense if "slower at every grid rank" in str(decisions[n].get("why"))]
    dense_ms, predicted, measured = report.get("dense_model_ms"), report.get("predicted_ms"), report.get("measured_ms")
    budget = report.get("budget_ms")
    kept = (f"; {len(dense)}/{len(decisions)} layers kept dense"
            + (f" ({len(slower)} because factorizing is slower at every rank)" if slower else ""))
    against = f" against a budget of {_ms(budget)}" if budget is not None else ""
    if report.get("foreign"):
        ctx.note(f"--rank-policy latency on {report.get('measured_on')}'s costs (--latency-table "
                 f"{report.get('given_table')}): dense model {_ms(dense_ms)} there, predicted {_ms(predicted)}"
                 f"{against}{kept}; not measurable on this machine: time the bundle there with `pela-export "
                 "device-bench`")
    else:
        ctx.note(f"--rank-policy latency ({report.get('mode')}; loss proxy: {report.get('loss_proxy')}): dense model "
                 f"{_ms(dense_ms)}, predicted {_ms(predicted)}, measured {_ms(measured)}{against} after "
                 f"{report.get('corrections', 0)} correction(s){kept}")
    for attempt in report.get("attempts") or []:
        if isinstance(attempt, dict) and attempt.get("note"):
            ctx.note(f"--rank-policy latency: {attempt['note']}")
    if report.get("met") is False:
        ctx.note(f"--latency-budget not met: measured {_ms(measured)} > budget {_ms(budget)} after "
                 f"{report.get('corrections')} correction(s); kept the fastest measured configuration "
                 "(the per-layer sum model misses whole-graph effects on this runtime: node overheads, fusions)")


def _ms(value: object) -> str:
    return f"{value:.3f} ms" if isinstance(value, (int, float)) else "not measured"
