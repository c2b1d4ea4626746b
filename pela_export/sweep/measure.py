"""One sweep point through the real pipeline: compress → export (simplify, verify) → precision, then
the numbers the front needs - parameters, FLOPs, ONNX bytes, ONNX Runtime CPU latency at batch 1 and
the score against the original FP32 model.

Each compressed point's directory is a complete run output (``compressed.pt``, ``*.onnx``,
``stages/*.json``), so ``pela-export package --out OUT/points/<id>`` bundles it for the device. The
original is not exported again per precision: it is measured from the ``original*.onnx`` a compressed
point of the same precision already wrote (its export is identical in every point).
"""
from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ArtifactError
from .grid import COMPRESSED, ORIGINAL, SweepPoint
from .retime import Timer, ort_timer
from .trained import TrainTop
from .run import POINT_FILE, PointDeferred

if TYPE_CHECKING:
    import numpy as np

    from ..models.base import LoadedModel
    from ..pipeline.context import Context

LATENCY_BATCH = 1
EVAL_BATCH = 64


def headline(accuracy: Mapping[str, Any]) -> tuple[str, float | None]:
    """(what the score is, its value in points): top-1 with labels, else agreement with the original's
    predictions, else (embeddings) mean cosine with the original's embeddings, ×100."""
    if accuracy.get("top1_candidate") is not None:
        return "top-1 accuracy (%)", 100.0 * float(accuracy["top1_candidate"])
    if accuracy.get("top1_agreement") is not None:
        return "top-1 agreement with the original (%)", 100.0 * float(accuracy["top1_agreement"])
    if accuracy.get("cosine_mean") is not None:
        return "output cosine with the original (x100)", 100.0 * float(accuracy["cosine_mean"])
    return "none", None


@dataclass
class PipelineRunner:
    """The real :data:`~.run.PointRunner`: ``base`` are the ``RunConfig.of`` keywords shared by every point
    (model, data, export, runs/warm-up/threads); the model is resolved once and reused."""

    base: dict[str, Any]
    loaded: LoadedModel | None = None
    notes: list[str] = field(default_factory=list)
    train: TrainTop | None = None  # the training of ``trained`` points (``--train-top``)

    def config(self, point: SweepPoint, out: Path) -> Any:
        from ..pipeline.config import RunConfig

        precisions = (point.precision,)
        trained = {} if not point.trained or self.train is None else \
            {"train": self.train.config, "train_data": self.train.data}
        return RunConfig.of(**self.base, **point.compress_kwargs(), **trained, precisions=precisions,
                            batch_sizes=(LATENCY_BATCH,), out=str(out))

    def context(self, point: SweepPoint, out: Path) -> Context:
        from ..pipeline.context import prepare

        ctx = prepare(self.config(point, out), self.loaded)
        self.loaded = ctx.loaded
        return ctx

    def timer(self, point: SweepPoint, out: Path, rounds: int) -> Timer:
        """The final interleaved timing with the inputs every point was timed with (any point gives them)."""
        from ..pipeline.bench import example_inputs, shapes_for

        ctx = self.context(point, out)
        inputs = example_inputs(ctx, shapes_for(ctx), LATENCY_BATCH)
        feeds = {n: t.numpy() for n, t in zip(ctx.loaded.spec.input_names, inputs, strict=True)}
        bench = ctx.cfg.bench
        return ort_timer(feeds, warmup=bench.warmup, runs=bench.runs, threads=bench.threads, rounds=rounds)

    def __call__(self, point: SweepPoint, out: Path, done: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        if point.model == ORIGINAL:
            return self.original(point, out, done)
        from ..pipeline.compress import compress_stage
        from ..pipeline.export import export_stage
        from ..pipeline.precision import precision_stage
        from ..pipeline.records import ExportRecord
        from ..precision.spec import precision_spec, variant_name

        ctx = self.context(point, out)
        if point.trained:
            train_saved(ctx, out.parent / dataclasses.replace(point, trained=False).id)
        else:
            _share_latency_table(out, into_point=True)
            with contextlib.redirect_stdout(sys.stderr):  # the rank table goes to ranks.md; stdout keeps the summary
                compress_stage(ctx)
            _share_latency_table(out, into_point=False)
        export_stage(ctx)
        exported = ctx.load_record(ExportRecord, needed_by="sweep")
        onnx = Path(exported.final_onnx[COMPRESSED])
        if precision_spec(point.precision).converter is not None:
            precision_stage(ctx)
            onnx = ctx.artifacts.onnx(variant_name(COMPRESSED, point.precision))
        return measure(ctx, ctx.compressed(), onnx, Path(exported.final_onnx[ORIGINAL]), point.precision)

    def original(self, point: SweepPoint, out: Path, done: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """The uncompressed model, from the export of a measured compressed point of the same precision."""
        from ..precision.spec import precision_spec, variant_name

        donors = [pid for pid, rec in done.items()
                  if rec["point"]["model"] == COMPRESSED and rec["point"]["precision"] == point.precision]
        if not donors:
            raise PointDeferred(f"no compressed {point.precision} point was measured, and the original is measured "
                                "from its export")
        donor = out.parent / donors[0]
        ref = _final_onnx(donor, ORIGINAL)
        onnx = ref if precision_spec(point.precision).converter is None else \
            donor / f"{variant_name(ORIGINAL, point.precision)}.onnx"
        if not onnx.is_file():
            raise ArtifactError(f"{onnx} (written by sweep point {donors[0]}) is missing",
                                fix=f"delete {donor / POINT_FILE} so the sweep measures that point again")
        ctx = self.context(point, out)
        record = measure(ctx, ctx.original(), onnx, ref, point.precision)
        record["measured_from"] = donors[0]
        return record


def train_saved(ctx: Context, parent: Path) -> None:
    """A ``--train-top`` point: the untrained point's own compression (ranks, factors) PELA-trained, not a new
    compression - a latency-policy point compressed again could pick other ranks from other timings."""
    import torch

    from .._io import atomic_path, write_json_atomic
    from ..lowrank import read_spec
    from ..pipeline.config import Artifacts
    from ..pipeline.records import CompressRecord, load_record
    from ..pipeline.train import train_stage

    arts = ctx.artifacts
    for own in (arts.compressed_ckpt, arts.lowrank_spec, arts.rank_table):
        src = parent / own.name
        if not src.is_file():
            raise ArtifactError(f"{src} (the compression of the point being trained) is missing",
                                fix=f"delete {parent / POINT_FILE} so the sweep measures that point again")
        _copy_atomic(src, own)
    record = load_record(Artifacts(parent), CompressRecord, needed_by="--train-top")
    model = ctx.compressed()
    training = train_stage(ctx, model)
    with atomic_path(arts.compressed_ckpt) as tmp:
        torch.save(model.state_dict(), tmp)
    spec = read_spec(arts.lowrank_spec)
    write_json_atomic(arts.lowrank_spec, spec | {"source": spec.get("source", {}) | {"trained": True}})
    ctx.set_compressed(model)
    ctx.note(f"--train-top: the compression of {parent.name} (copied from {parent}), PELA-trained")
    ctx.save_record(CompressRecord(compression=record.compression, params=record.params,
                                   calibration=record.calibration, training=training,
                                   artifacts={"checkpoint": str(arts.compressed_ckpt), "spec": str(arts.lowrank_spec),
                                              "rank_table": str(arts.rank_table)}))


def _share_latency_table(point_dir: Path, *, into_point: bool) -> None:
    """One per-layer latency table for the whole sweep (``OUT/latency_table.json``): copied into a point
    before it compresses, where the latency policy reuses the entries still valid for this machine and
    threads (it re-measures the others), and back after, so later points measure nothing twice."""
    from ..pipeline.latency import TABLE_FILE

    shared, own = point_dir.parent.parent / TABLE_FILE, point_dir / TABLE_FILE
    src, dst = (shared, own) if into_point else (own, shared)
    if src.is_file() and (into_point or src.stat().st_size > 0):
        _copy_atomic(src, dst)


def _copy_atomic(src: Path, dst: Path) -> None:
    """``src`` copied to ``dst`` under a temporary name, renamed into place only once complete."""
    import shutil

    from .._io import atomic_path

    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _final_onnx(run_dir: Path, variant: str) -> Path:
    """The final (simplified) FP32 ONNX of ``variant`` that a point's export stage recorded."""
    import json

    record = run_dir / "stages" / "export.json"
    try:
        path = Path(json.loads(record.read_text(encoding="utf-8"))["final_onnx"][variant])
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactError(f"cannot read the {variant} ONNX path from {record} ({exc})",
                            fix=f"delete {run_dir / POINT_FILE} so the sweep measures that point again") from None
    if not path.is_file():
        raise ArtifactError(f"{path} recorded in {record} is missing",
                            fix=f"delete {run_dir / POINT_FILE} so the sweep measures that point again")
    return path


def measure(ctx: Context, model: Any, onnx: Path, reference: Path, precision: str) -> dict[str, Any]:
    """Parameters, FLOPs, bytes, ONNX Runtime CPU latency at batch 1 and the score of ``onnx`` against ``reference``."""
    from ..measure import bench_onnxruntime, count_flops, count_params, onnx_file_size
    from ..pipeline.bench import example_inputs, shapes_for
    from ..pipeline.context import log

    cfg = ctx.cfg
    shapes = shapes_for(ctx)
    inputs = example_inputs(ctx, shapes, LATENCY_BATCH)
    feeds = {n: t.numpy() for n, t in zip(ctx.loaded.spec.input_names, inputs, strict=True)}
    log(f"sweep: timing {onnx.name} (ONNX Runtime CPU, {shapes.describe(LATENCY_BATCH)}, {cfg.bench.runs} runs)")
    latency = bench_onnxruntime(onnx, None, feeds, cfg.bench.warmup, cfg.bench.runs, cfg.bench.threads).to_dict()
    accuracy = score(ctx, reference, onnx, precision)
    metric, value = headline(accuracy)
    return {"params": count_params(model), "flops": count_flops(model, inputs).flops,
            "onnx_bytes": onnx_file_size(onnx).bytes, "onnx": str(onnx), "latency_ms": latency["p50_ms"],
            "latency": latency | {"backend": "onnxruntime CPU", "shape": shapes.describe(LATENCY_BATCH)},
            "metric": metric, "score": value, "accuracy": accuracy, "automatic_choices": list(ctx.choices)}


def score(ctx: Context, reference: Path, candidate: Path, precision: str) -> dict[str, Any]:
    """The candidate's outputs against the original FP32 model's on the evaluation data.

    Logits: top-1 (labels) and agreement, with the candidate run at its precision's ONNX Runtime level
    (as the precision stage checks it); an embedding output: the bench's linear probe / cosine.
    """
    from ..measure.outputs import EMBEDDING_ROLES, evaluate_outputs
    from ..pipeline.evaldata import accuracy_record, evaluation_data, output_role
    from ..precision.spec import precision_spec

    threads = ctx.cfg.bench.threads
    name, role = output_role(ctx.loaded)
    if role in EMBEDDING_ROLES:
        return accuracy_record(ctx, {"original": reference, "candidate": candidate}, EVAL_BATCH, threads=threads)
    data = evaluation_data(ctx)
    level = precision_spec(precision).ort_level
    ref = _outputs(ctx, reference, data.x, name, "all")
    cand = ref if candidate == reference and level == "all" else _outputs(ctx, candidate, data.x, name, level)
    out = evaluate_outputs(ref, cand, role, data.labels, num_classes=data.num_classes)
    return out | {"data": data.source, "output": name, "onnxruntime_optimization": level}


def _outputs(ctx: Context, path: Path, x: Any, output: str, level: str) -> np.ndarray:
    from ..measure import collect_logits_onnx

    names = ctx.loaded.spec.input_names
    return collect_logits_onnx(path, names if isinstance(x, Mapping) else names[0], x, EVAL_BATCH,
                               output_name=output, threads=ctx.cfg.bench.threads, optimization=level)
