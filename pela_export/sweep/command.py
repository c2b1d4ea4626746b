"""``pela-export sweep``: expand the grid, run or resume every point, then write ``sweep.json``,
``sweep.md`` and ``sweep.png`` into ``OUT`` (default ``./pela-out/<model>-sweep``)."""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from typing import Any

from .._io import ensure_writable_dir, write_json_atomic, write_text_atomic
from ..errors import DependencyError, OptionError, PelaExportError
from .grid import ORIGINAL, Grid, expand
from .retime import DEFAULT_ROUNDS, Timer, apply, retime
from .run import PointRunner, run_points
from .trained import TrainTop, pick

SWEEP_JSON, SWEEP_MD, SWEEP_PNG = "sweep.json", "sweep.md", "sweep.png"
#: Options that change no measurement, left out of the fingerprint a saved point is matched by.
NOT_MEASURED = ("progress",)


class SweepError(PelaExportError):
    """No point of a sweep could be measured (each point's reason is in sweep.md)."""


def base_from_namespace(ns: argparse.Namespace) -> dict[str, Any]:
    """The ``RunConfig.of`` keywords every point shares, from the parsed model/output/export/bench/sweep flags."""
    from ..pipeline.groups import BenchOptions, ExportOptions, ModelOptions, OutputOptions

    base: dict[str, Any] = {}
    for group in (ModelOptions, ExportOptions):
        base.update(asdict(group.from_namespace(ns)))
    output = OutputOptions.from_namespace(ns)
    bench = BenchOptions.from_namespace(ns)
    base.update(device=output.device, progress=output.progress, runs=bench.runs, warmup=bench.warmup,
                threads=bench.threads, eval_data=ns.eval_data, eval_samples=ns.eval_samples or None,
                calib_data=ns.calib_data, calib_samples=ns.calib_samples, text_column=ns.text_column,
                label_column=ns.label_column)
    return base


def sweep(base: dict[str, Any], grid: Grid, out: str | None = None, *, budget_minutes: float | None = None,
          timing_rounds: int = DEFAULT_ROUNDS, train: TrainTop | None = None, runner: PointRunner | None = None,
          model_name: str | None = None, timer: Timer | None = None) -> dict[str, Any]:
    """Run the sweep; returns sweep.json's content plus ``paths`` (json, md, png or None).

    ``base``: ``RunConfig.of`` keywords shared by every point. ``timing_rounds``: rounds of the final timing
    with every point called in turn (0: keep each point's own timing). ``train``: PELA-train the fastest
    front points that lose accuracy as new points (:mod:`.trained`). ``runner``/``model_name``/``timer``
    replace the pipeline and ONNX Runtime (tests; an injected runner without a timer is not re-timed).
    Raises :class:`SweepError` (after writing the files) when no point was measured.
    """
    from ..pipeline.config import RunConfig, default_out_dir
    from ..pipeline.context import log
    from .measure import PipelineRunner
    from .report import latency_policy_options, markdown, summarize, table_rows
    from .run import plain

    if isinstance(timing_rounds, bool) or not isinstance(timing_rounds, int) or timing_rounds < 0:
        raise OptionError(f"--timing-rounds must be an integer >= 0, got {timing_rounds!r}",
                          fix="pass --timing-rounds 3 (0 keeps each point's own timing)")
    plan = expand(grid, base.get("calib_data"))
    for point in plan.points:  # every point's options checked before anything runs
        RunConfig.of(**base, **point.compress_kwargs(), precisions=(point.precision,), batch_sizes=(1,))
    if train is not None:
        check_train(train, base, plan.points)
    if runner is None:
        pipeline = PipelineRunner(dict(base), train=train)
        if model_name is None:
            from ..models.sources import resolve_model

            log(f"resolving model {base.get('spec') or 'default (embedded digits ViT)'}")
            pipeline.loaded = resolve_model(base.get("spec"), base.get("checkpoint"), base.get("input_shape"),
                                            max_length=base.get("max_length"), hidden_state=bool(base.get("hidden_state")),
                                            pretrained=bool(base.get("pretrained")))
            model_name = pipeline.loaded.name
        runner = pipeline
    name = model_name or str(base.get("spec") or "model")
    root = ensure_writable_dir(out or default_out_dir(f"{name}-sweep"))
    log(f"sweep of {name}: {len(plan.points)} points into {root} (budget {budget_minutes:g} min)" if budget_minutes
        else f"sweep of {name}: {len(plan.points)} points into {root}")
    for what, why in plan.skipped:
        log(f"sweep: skipping {what}: {why}")
    fingerprint = {k: v for k, v in plain(base).items() if k not in NOT_MEASURED}
    t0 = time.monotonic()
    result = run_points(plan.points, root, runner, fingerprint=fingerprint,
                        budget_s=None if budget_minutes is None else 60.0 * budget_minutes, log=log)
    if timing_rounds and result.records and timer is None and isinstance(runner, PipelineRunner):
        first_id = next(iter(result.records))
        first_point = next(p for p in plan.points if p.id == first_id)
        timer = runner.timer(first_point, root / "points" / first_id, timing_rounds)
    if train is not None and train.top > 0 and result.records:
        timed, _ = _timed(result.records, timer, timing_rounds)  # the pick compares timings of one moment too
        chosen, why = pick(table_rows(timed), {p.id: p for p in plan.points}, train.top)
        plan.choices.append(why)
        plan.points += chosen
        left = None if budget_minutes is None else max(0.0, 60.0 * budget_minutes - (time.monotonic() - t0))
        more = run_points(chosen, root, runner, fingerprint=fingerprint | train.fingerprint(), budget_s=left, log=log,
                          extra_flags=train.flags())
        result.records.update(more.records)
        for field in ("measured", "reused", "failed", "not_run", "stale"):
            getattr(result, field).extend(getattr(more, field))
    records, timing = _timed(result.records, timer, timing_rounds)
    first = next(iter(records.values()), {})
    settings = {"spec": base.get("spec"),  # as given: the recommendation's `pela-export run SPEC ...` reproduces it
                "threads": (first.get("latency") or {}).get("threads", base.get("threads")), "runs": base.get("runs"),
                "warmup": base.get("warmup"), "data": (first.get("accuracy") or {}).get("data"),
                "budget_minutes": budget_minutes, "grid": plain(asdict(grid)), "timing": timing,
                "elapsed_s": round(time.monotonic() - t0, 1)}
    summary = summarize(records, model=name, settings=settings, skipped=plan.skipped, failed=result.failed,
                        not_run=result.not_run, reused=result.reused,
                        choices=plan.choices + [why for _, why in result.stale],
                        latency_options=latency_policy_options())
    summary["environment"] = measured_with()
    if summary["points"]:
        try:
            from .chart import draw

            draw(summary, root / SWEEP_PNG)
            summary["chart"] = SWEEP_PNG
        except DependencyError as exc:
            summary["chart_skipped"] = f"{exc.problem}; install it with `pip install matplotlib`"
    paths = {"json": str(write_json_atomic(root / SWEEP_JSON, summary)),
             "md": str(write_text_atomic(root / SWEEP_MD, markdown(summary))),
             "png": str(root / SWEEP_PNG) if summary.get("chart") else None}
    if not result.records:
        reasons = [f"{x['id']}: {x['why'].splitlines()[0]}" for x in summary["failed"] + summary["not_run"]]
        raise SweepError("no point of the sweep was measured:\n" + "\n".join(f"  {r}" for r in reasons[:8]),
                         fix="fix the first reason above (or raise --budget-minutes) and run the same command "
                             "again: measured points are reused", where=paths["md"])
    return summary | {"paths": paths}


def _timed(records: dict[str, dict[str, Any]], timer: Timer | None,
           rounds: int) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The records with the interleaved timing applied (:mod:`.retime`), and how they were timed."""
    from ..pipeline.context import log
    from .report import baseline_of, table_rows

    timing: dict[str, Any] = {"interleaved": False, "rounds": rounds}
    if not rounds:
        return dict(records), timing | {"why": "--timing-rounds 0"}
    if timer is None or not records:
        return dict(records), timing
    base_row = baseline_of(table_rows(records))
    log(f"sweep: timing the {len(records)} measured points again, all called in turn ({rounds} rounds)")
    timings = retime(records, None if base_row is None else base_row["id"], timer)
    if not timings:
        timing["why"] = "no original, or nothing to time with it, among the points with an ONNX file"
    return apply(records, timings), timing | {"interleaved": bool(timings)}


def check_train(train: TrainTop, base: dict[str, Any], points: list[Any]) -> None:
    """``--train-top``'s count and training options, checked before any point runs."""
    from ..pipeline.config import RunConfig

    if isinstance(train.top, bool) or not isinstance(train.top, int) or train.top < 0:
        raise OptionError(f"--train-top must be an integer >= 0, got {train.top!r}",
                          fix="pass --train-top 2 to train the two fastest front points (0: train none)")
    first = next(p for p in points if p.model != ORIGINAL)
    RunConfig.of(**base, **first.compress_kwargs(), precisions=(first.precision,), batch_sizes=(1,),
                 train=train.config, train_data=train.data)


def measured_with() -> dict[str, Any]:
    """Where and with what the sweep measured (versions, CPUs, date): a committed sweep.json says what reproduces it."""
    from .. import __version__
    from ..measure import environment_info

    return {"pela_export": __version__, **environment_info()}


def print_summary(summary: dict[str, Any]) -> None:
    """The recommendation and where the files are, on stdout."""
    paths = summary["paths"]
    print(f"sweep: {paths['md']}\n       {paths['json']}" + (f"\n       {paths['png']}" if paths["png"] else ""))
    print(f"front ({summary['metric']} vs latency p50): {', '.join(summary['front'])}")
    for rec in summary["recommendations"]:
        if rec["id"] is None:
            print(f"  drop <= {rec['max_drop']:g}: {rec['why']}")
        else:
            print(f"  drop <= {rec['max_drop']:g}: {rec['id']} ({rec['latency_ms']:.3f} ms, score {rec['score']:.2f}, "
                  f"drop {rec['drop']:.2f}): {' '.join(rec['flags'])}")
    left = len(summary["failed"]) + len(summary["not_run"]) + len(summary["skipped"])
    if left:
        print(f"  {left} point(s)/policies not measured: see {paths['md']}")
