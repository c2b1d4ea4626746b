"""The stages of a run, in order, in one place: ``config.STAGES`` (``--skip`` choices and
validation), :func:`~.run.run_pipeline`'s loop and the API all derive from :data:`PIPELINE`.

Each stage says which earlier stages' records it ``needs`` (and which it ``uses`` when they
exist), so a ``--skip`` that leaves a later stage without its input fails before anything runs.
This module imports no stage code until a stage runs (``config`` imports it, and the device
side of the package has no PyTorch).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .context import Context
    from .records import Record


class Stage(Protocol):
    """One step of the pipeline: reads the records of ``needs``, returns (and saves) its own."""

    name: str
    needs: tuple[str, ...]

    def run(self, ctx: Context) -> Record | None: ...


@dataclass(frozen=True)
class PipelineStage:
    """A registered stage. ``part_of``: an option of another stage (simplify and verify run inside export,
    which writes one record for all three), so it has no record and is never run on its own."""

    name: str
    needs: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()  # records read when present (never required)
    runner: Callable[[Context], Record] | None = None
    check: Callable[[Context], Any] | None = None  # option checks before any stage runs
    part_of: str | None = None

    def run(self, ctx: Context) -> Record | None:
        return None if self.runner is None else self.runner(ctx)

    def precheck(self, ctx: Context) -> None:
        if self.check is not None:
            self.check(ctx)


def _compress(ctx: Context) -> Record:
    from .compress import compress_stage

    return compress_stage(ctx)


def _export(ctx: Context) -> Record:
    from .export import export_stage

    return export_stage(ctx, simplify="simplify" not in ctx.cfg.skip, verify="verify" not in ctx.cfg.skip)


def _precision(ctx: Context) -> Record:
    from .precision import precision_stage

    return precision_stage(ctx)


def _build(ctx: Context) -> Record:
    from .build import build_stage

    return build_stage(ctx)


def _build_options(ctx: Context) -> Any:
    from .build import run_build_options

    return run_build_options(ctx)  # a bad --profile fails now, not after compress and export


def _bench(ctx: Context) -> Record:
    from .bench import bench_stage

    return bench_stage(ctx)


def _report(ctx: Context) -> Record:
    from .report import run_report

    return run_report(ctx)


def _package(ctx: Context) -> Record:
    from .package import package_stage

    return package_stage(ctx)


PIPELINE: tuple[PipelineStage, ...] = (
    PipelineStage("compress", runner=_compress),
    PipelineStage("export", runner=_export),
    PipelineStage("simplify", part_of="export"),
    PipelineStage("verify", part_of="export"),
    PipelineStage("precision", needs=("export",), runner=_precision),
    PipelineStage("build", needs=("export",), uses=("precision",), runner=_build, check=_build_options),
    PipelineStage("bench", needs=("export",), uses=("precision",), runner=_bench),
    PipelineStage("report", needs=("compress", "export", "bench"), uses=("precision", "build"), runner=_report),
    PipelineStage("package", needs=("compress", "export"), uses=("precision", "bench"), runner=_package),
)

STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in PIPELINE)


def missing_inputs(stages: Iterable[Stage], skip: Iterable[str], record_path: Callable[[str], Path]) -> list[str]:
    """One line per (stage that runs, skipped stage it needs whose record is not on disk)."""
    skipped = set(skip)
    lines = []
    for stage in stages:
        if stage.name in skipped or getattr(stage, "part_of", None):
            continue
        for need in stage.needs:
            path = record_path(need)
            if need in skipped and not path.is_file():
                lines.append(f"{stage.name} needs the saved result of stage {need!r} ({path}), which does not exist "
                             f"(--skip {need} was given)")
    return lines
