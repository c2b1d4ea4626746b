"""Options of a pipeline run and where each stage's artifacts live.

One dataclass of option groups is shared by the CLI and the Python API, so every
stage can be called alone with the same options and restart from the files of the
previous one.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import OptionError
from .compress_options import DATA_AWARE_METHOD, DATA_AWARE_WHY, CompressOptions  # noqa: F401  (re-exported)
from .groups import (EXPORTERS, BenchOptions, DataOptions, ExportOptions, ModelOptions, OutputOptions,
                     PrecisionOptions, TensorRTOptions, group_kwargs)
from .stages import STAGE_NAMES
from .structured_options import StructureOptions

#: The stage order, from the one registered tuple (:data:`.stages.PIPELINE`).
STAGES: tuple[str, ...] = STAGE_NAMES


@dataclass
class RunConfig:
    """All user options of a run, in groups that own their flags; each stage reads its group(s).

    ``RunConfig.of(model=..., ratio=3, precisions=("fp16",))`` builds one from flat keywords
    (the Python API's spelling); :meth:`value` reads one option by its flat name.
    """

    model: ModelOptions = field(default_factory=ModelOptions)
    output: OutputOptions = field(default_factory=OutputOptions)
    data: DataOptions = field(default_factory=DataOptions)
    compress: CompressOptions = field(default_factory=CompressOptions)
    structure: StructureOptions = field(default_factory=StructureOptions)
    export: ExportOptions = field(default_factory=ExportOptions)
    precision: PrecisionOptions = field(default_factory=PrecisionOptions)
    tensorrt: TensorRTOptions = field(default_factory=TensorRTOptions)
    bench: BenchOptions = field(default_factory=BenchOptions)
    train: Any = None  # a pela_export.train.TrainConfig; None = no PELA training
    skip: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        self.skip = tuple(self.skip)
        unknown = [s for s in self.skip if s not in STAGES]
        if unknown:
            raise OptionError(f"unknown stage(s) to skip: {', '.join(unknown)}",
                              fix=f"pass --skip with any of: {', '.join(STAGES)}")
        self.output.validate()
        self.data.validate()
        self.compress.choose_method(self.data, self.structure)
        self.bench.resolve(self.export)
        from .compress_options import check_compression_options

        check_compression_options(self)  # never ignore a user's option silently (derived from the specs)
        self.precision.validate()
        from .structured_options import check_structured_options

        check_structured_options(self)
        if self.train is not None:
            self.train.validate()

    @classmethod
    def of(cls, **flat: Any) -> RunConfig:
        """A run config from flat option names (``ratio=3``, ``precisions=("fp16",)``, ``trt=BuildOptions()``)."""
        flat = dict(flat)
        for old, new in FLAT_ALIASES.items():
            if old in flat:
                flat[new] = flat.pop(old)
        if "exporter" in flat:
            exporter = flat.pop("exporter")
            if exporter not in EXPORTERS:
                raise OptionError(f"unknown exporter {exporter!r}", fix="use the default, or --legacy-exporter")
            flat["legacy_exporter"] = exporter == "legacy"
        if "dynamic_batch" in flat:
            flat["static_shapes"] = not flat.pop("dynamic_batch")
        groups = {name: kind(**group_kwargs(kind, flat)) for name, kind in GROUPS.items()}
        train, skip = flat.pop("train", None), tuple(flat.pop("skip", ()) or ())
        if flat:
            raise TypeError(f"RunConfig.of() got unknown options: {', '.join(sorted(flat))}")
        return cls(**groups, train=train, skip=skip)

    def value(self, name: str) -> Any:
        """One option by its flat name (``threads``, ``trt_version``, ...), from whichever group owns it."""
        for group in GROUPS:
            owner = getattr(self, group)
            if name in {f.name for f in fields(owner)}:
                return getattr(owner, name)
        raise KeyError(f"no run option {name!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # groups and a nested TrainConfig become dicts too

    def settings(self) -> dict[str, Any]:
        """Every option under its flat API name (report.json's ``settings``, unchanged by the grouping)."""
        back = {v: k for k, v in FLAT_ALIASES.items()}
        out: dict[str, Any] = {}
        for group in GROUPS:
            for key, value in asdict(getattr(self, group)).items():
                out[back.get(key, key)] = value
        export = self.export
        out.pop("legacy_exporter"), out.pop("static_shapes")
        out.update(exporter=export.exporter, dynamic_batch=export.dynamic_batch,
                   train=asdict(self.train) if self.train is not None else None, skip=list(self.skip))
        return out


#: The option groups of a run, by RunConfig attribute (each a dataclass whose fields own their flags).
GROUPS: dict[str, type] = {"model": ModelOptions, "output": OutputOptions, "data": DataOptions,
                           "compress": CompressOptions, "structure": StructureOptions, "export": ExportOptions,
                           "precision": PrecisionOptions, "tensorrt": TensorRTOptions, "bench": BenchOptions}

#: Flat API names whose field is named differently inside its group (the group attribute took the name).
FLAT_ALIASES: dict[str, str] = {"model": "spec", "data": "eval_data", "structure": "kind", "trt": "build",
                                "precision_options": "options"}


def default_out_dir(model_name: str) -> Path:
    """``./pela-out/<model-name>`` with path-unsafe characters replaced."""
    return Path("pela-out") / re.sub(r"[^A-Za-z0-9._-]+", "_", model_name)


@dataclass(frozen=True)
class Artifacts:
    """Fixed file names inside the output directory (the restart points)."""

    root: Path

    @property
    def compressed_ckpt(self) -> Path:
        return self.root / "compressed.pt"

    @property
    def lowrank_spec(self) -> Path:
        return self.root / "lowrank.json"

    @property
    def rank_table(self) -> Path:
        return self.root / "ranks.md"

    @property
    def structured_ckpt(self) -> Path:
        """State dict of a structured model (``--structure``); see :mod:`pela_export.structured.saved`."""
        return self.root / "structured.pt"

    @property
    def structured_spec(self) -> Path:
        """Layer kinds, configs, shared tensors, the run's options and (after export) the lowering plan."""
        return self.root / "structured.json"

    def onnx(self, variant: str, simplified: bool = False) -> Path:
        return self.root / f"{variant}{'.sim' if simplified else ''}.onnx"

    def stage_record(self, stage: str) -> Path:
        return self.root / "stages" / f"{stage}.json"
