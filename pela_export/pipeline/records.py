"""Typed stage records: what each stage writes to ``stages/<stage>.json`` and later stages read back.

Stages talk only through files, so a record is an interface between runs (a user restarts
from an output directory an older pela-export wrote): every record carries a ``schema``
version, is checked key by key when read (a missing or wrong-typed required key names the
file, the key and the stage to re-run), and a record from a newer schema is refused rather
than misread. Records written before the schema field existed still load when they hold
the keys a reader needs. Keys a record does not know are kept in ``extra`` and written back.
Converter-specific nested parts stay ``dict[str, Any]``.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar, Union

from .._io import write_json_atomic
from ..errors import ArtifactError, OptionError
from ..models.io import IOSpec, io_from_dict, io_to_dict
from .config import Artifacts

#: Version of the stage-record layout; bump when a key changes meaning or a required key is added.
RECORD_SCHEMA_VERSION = 1
#: Keys every record file holds besides its fields (``stage`` and ``schema`` are written, never stored as fields).
_HEADER = ("stage", "schema")

R = TypeVar("R", bound="Record")
N = TypeVar("N", bound="_Nested")


def _kind(value: Any) -> str:
    return type(value).__name__


def _fits(value: Any, tp: Any) -> bool:
    """Whether a JSON value fits a field annotation (containers checked element by element)."""
    if tp is Any:
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if tp is type(None):
        return value is None
    if origin is dict:
        return isinstance(value, dict) and all(_fits(v, args[1]) for v in value.values())
    if origin is list:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type) and issubclass(tp, _Nested):
        return True  # its own from_dict checks it and names the item
    if tp is IOSpec:
        return isinstance(value, dict)
    return isinstance(tp, type) and isinstance(value, tp)


def _expected(tp: Any) -> str:
    """How a field annotation reads in an error message."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_expected(a) for a in args)
    if tp is type(None):
        return "null"
    if origin is dict and args[1] is not Any and not (isinstance(args[1], type) and issubclass(args[1], _Nested)):
        return f"a JSON object whose values are {_expected(args[1])}"
    if origin is dict or (isinstance(tp, type) and issubclass(tp, (_Nested, IOSpec))):
        return "a JSON object"
    if origin is list:
        return "a JSON array" + (f" whose items are {_expected(args[0])}" if args[0] is not Any else "")
    return {str: "a string", int: "an integer", float: "a number", bool: "true/false"}.get(tp, str(tp))


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


class _Nested:
    """Shared reading/writing of a record or a typed part of one (fields ↔ JSON keys)."""

    WHAT: ClassVar[str] = "record"
    STAGE: ClassVar[str] = ""

    @classmethod
    def _bad(cls, problem: str, source: str) -> ArtifactError:
        return ArtifactError(problem, where=source,
                             fix=f"re-run the {cls.STAGE} stage (drop --skip {cls.STAGE}) to regenerate its record "
                                 "(it is stale, from another version, or was edited)")

    @classmethod
    def _read_fields(cls, data: Any, source: str, label: str, prefix: str = "") -> dict[str, Any]:
        """Checked field values of ``data``; ``prefix`` names a nested part in messages about its keys."""
        if not isinstance(data, dict):
            raise cls._bad(f"{label} must be a JSON object, got {_kind(data)}", source)
        hints = _hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name == "extra":
                continue
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if f.name not in data:
                if required:
                    raise cls._bad(f"{label} has no {f.name!r} key, which this version needs", source)
                continue
            value, tp = data[f.name], hints[f.name]
            if not _fits(value, tp):
                raise cls._bad(f"{prefix}{f.name!r} must be {_expected(tp)}, got {_kind(value)}", source)
            values[f.name] = _typed(value, tp, f.name, source, cls)
        return values

    def _write_fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.name != "extra":
                out[f.name] = _plain(getattr(self, f.name))
        return out


def _typed(value: Any, tp: Any, key: str, source: str, owner: type[_Nested]) -> Any:
    """A checked JSON value as the field's type (typed parts and IOSpec are built, the rest is as read)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) in (
        Union, types.UnionType) else [tp]
    inner = args[0] if len(args) == 1 else None
    if value is None:
        return None
    if inner is IOSpec:
        try:
            return io_from_dict(value)
        except OptionError as exc:
            raise owner._bad(f"{key!r} is not an I/O description ({exc.problem})", source) from None
    if typing.get_origin(inner) is dict:
        item = typing.get_args(inner)[1]
        if isinstance(item, type) and issubclass(item, _Nested):
            return {str(k): item.from_dict(v, source=source, label=f"{item.WHAT} {k!r}") for k, v in value.items()}
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, IOSpec):
        return io_to_dict(value)
    if isinstance(value, _Nested):
        return value.to_dict()  # type: ignore[attr-defined]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass(kw_only=True)
class _Part(_Nested):
    """A typed nested part of a record; unknown keys kept in ``extra``."""

    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls: type[N], data: Any, *, source: str, label: str) -> N:
        values = cls._read_fields(data, source, label, prefix=f"{label}: ")
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        return {**self._write_fields(), **self.extra}


@dataclass(kw_only=True)
class PrecisionVariant(_Part):
    """One FP16/INT8 file the precision stage wrote and measured."""

    WHAT: ClassVar[str] = "variant"
    STAGE: ClassVar[str] = "precision"
    model: str
    precision: str
    onnx: str
    onnx_bytes: int | None = None
    accuracy: dict[str, Any] | None = None
    conversion: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class BuildVariant(_Part):
    """One ONNX file the build stage checked, scripted and (with TensorRT) built."""

    WHAT: ClassVar[str] = "variant"
    STAGE: ClassVar[str] = "build"
    onnx: str
    parse_check: dict[str, Any] = field(default_factory=dict)
    trtexec: dict[str, str] = field(default_factory=dict)
    engine: dict[str, Any] | None = None  # only where TensorRT is installed (the key is absent otherwise)
    precision_mode: dict[str, str] = field(default_factory=dict)  # per target version: how the graph's precision holds

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if not self.precision_mode:  # records from before the field, and builds that planned nothing
            out.pop("precision_mode", None)
        if self.engine is None:
            del out["engine"]
        return out


@dataclass(kw_only=True)
class Record(_Nested):
    """Fields every stage record has; subclasses name their stage in ``STAGE``."""

    finished_at: str | None = None
    automatic_choices: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        body = {k: v for k, v in self._write_fields().items() if k not in ("finished_at", "automatic_choices")}
        return {"stage": self.STAGE, "schema": RECORD_SCHEMA_VERSION, "finished_at": self.finished_at, **body,
                **self.extra, "automatic_choices": list(self.automatic_choices)}

    @classmethod
    def from_dict(cls: type[R], data: Any, *, source: str | None = None) -> R:
        """Check and read a record; ``source`` (default ``stages/<stage>.json``) is named in errors."""
        source = source or f"stages/{cls.STAGE}.json"
        if isinstance(data, dict):
            schema = data.get("schema")
            if schema is not None and (not isinstance(schema, int) or isinstance(schema, bool)):
                raise cls._bad(f"'schema' must be an integer, got {_kind(schema)}", source)
            if isinstance(schema, int) and schema > RECORD_SCHEMA_VERSION:
                raise cls._bad(f"the record was written by a newer pela-export (record schema {schema}; this "
                               f"version reads up to {RECORD_SCHEMA_VERSION})", source)
            stage = data.get("stage")
            if stage is not None and stage != cls.STAGE:
                raise cls._bad(f"the record is of stage {stage!r}, not {cls.STAGE!r}", source)
        values = cls._read_fields(data, source, f"the {cls.STAGE} record")
        known = {f.name for f in dataclasses.fields(cls)} | set(_HEADER)  # type: ignore[arg-type]
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    def outputs(self) -> dict[str, str]:
        """What ``run_pipeline`` returns from this record (beyond timings)."""
        return {}


@dataclass(kw_only=True)
class CompressRecord(Record):
    STAGE: ClassVar[str] = "compress"
    compression: dict[str, Any]
    structured: dict[str, Any] | None = None  # --structure runs: kind, hyper-parameters, sharing, layers
    params: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    artifacts: dict[str, str] = field(default_factory=dict)


@dataclass(kw_only=True)
class ExportRecord(Record):
    """Export, simplify and verify: one record, since simplify and verify are parts of the export stage."""

    STAGE: ClassVar[str] = "export"
    final_onnx: dict[str, str]
    raw_onnx: dict[str, str] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    structured: dict[str, Any] | None = None
    io: IOSpec | None = None  # the graphs' inputs/outputs (absent in records written before the schema field)


@dataclass(kw_only=True)
class PrecisionRecord(Record):
    STAGE: ClassVar[str] = "precision"
    variants: dict[str, PrecisionVariant]
    precisions: list[str] = field(default_factory=list)
    fp32: dict[str, str] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None


@dataclass(kw_only=True)
class BuildRecord(Record):
    STAGE: ClassVar[str] = "build"
    variants: dict[str, BuildVariant]
    tensorrt_installed: str | None = None
    target_versions: list[str] = field(default_factory=list)
    skipped: str | None = None


@dataclass(kw_only=True)
class BenchRecord(Record):
    STAGE: ClassVar[str] = "bench"
    benchmarks: dict[str, Any]
    precision_latency: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    shapes: dict[str, Any] | None = None
    onnxruntime_session: dict[str, Any] | None = None
    accuracy: dict[str, Any] | None = None
    onnx: dict[str, str] = field(default_factory=dict)


@dataclass(kw_only=True)
class ReportRecord(Record):
    STAGE: ClassVar[str] = "report"
    report_json: str
    report_md: str

    def outputs(self) -> dict[str, str]:
        return {"report_json": self.report_json, "report_md": self.report_md}


@dataclass(kw_only=True)
class PackageRecord(Record):
    STAGE: ClassVar[str] = "package"
    bundle: str
    archive: str
    archive_sha256: str | None = None
    archive_bytes: int | None = None
    files: int | None = None
    variants: list[str] = field(default_factory=list)
    golden_batch: int | None = None
    trtexec_versions: list[str] = field(default_factory=list)

    def outputs(self) -> dict[str, str]:
        return {"bundle": self.bundle, "bundle_archive": self.archive}


RECORD_TYPES: tuple[type[Record], ...] = (CompressRecord, ExportRecord, PrecisionRecord, BuildRecord, BenchRecord,
                                          ReportRecord, PackageRecord)


def save_record(artifacts: Artifacts, record: Record) -> Path:
    """Write ``stages/<stage>.json`` atomically (temporary name, then rename)."""
    return write_json_atomic(artifacts.stage_record(record.STAGE), record.to_dict())


def has_record(artifacts: Artifacts, kind: type[Record]) -> bool:
    return artifacts.stage_record(kind.STAGE).is_file()


def load_record(artifacts: Artifacts, kind: type[R], *, needed_by: str) -> R:
    """Read and check ``stages/<stage>.json``; every problem is an ArtifactError naming the file."""
    stage, path = kind.STAGE, artifacts.stage_record(kind.STAGE)
    if not path.is_file():
        raise ArtifactError(f"{needed_by} needs the saved result of stage {stage!r} ({path}), which does not exist",
                            fix=f"run the {stage} stage first (drop --skip {stage}), or pass the --out of an "
                                "earlier run")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"stage record {path} is corrupt ({exc})", fix=f"re-run the {stage} stage") from None
    return kind.from_dict(data, source=str(path))


def optional_record(artifacts: Artifacts, kind: type[R], *, needed_by: str) -> R | None:
    """The record when its stage ran in this output directory, else None."""
    return load_record(artifacts, kind, needed_by=needed_by) if has_record(artifacts, kind) else None
