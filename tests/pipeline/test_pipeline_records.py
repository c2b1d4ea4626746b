"""Typed stage records (pela_export.pipeline.records) and the registered stage order (pipeline.stages):
round trips, the errors a stale/corrupt/newer record gives, old records without a schema field,
and --skip of a stage a later one needs failing before anything runs."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from pela_export.errors import ArtifactError
from pela_export.models.io import io_to_dict, single_input
from pela_export.pipeline.config import STAGES, Artifacts, RunConfig
from pela_export.pipeline.records import (RECORD_SCHEMA_VERSION, RECORD_TYPES, BenchRecord, BuildRecord, BuildVariant,
                                          CompressRecord, ExportRecord, PackageRecord, PrecisionRecord,
                                          PrecisionVariant, Record, ReportRecord, load_record, save_record)
from pela_export.pipeline.stages import PIPELINE, missing_inputs

OLD_RECORDS = Path(__file__).parent.parent / "fixtures" / "records_v0"
IO = single_input("input", (1, 16, 16))


def samples() -> list[Record]:
    """One filled record of every type."""
    return [
        CompressRecord(compression={"ratio": 2.0, "layers": [], "totals": {}}, params={"original": 10, "compressed": 5},
                       calibration={"source": "digits"}, training=None, artifacts={"checkpoint": "/o/compressed.pt"},
                       automatic_choices=["a choice"], finished_at="2026-01-01T00:00:00+0000"),
        ExportRecord(final_onnx={"original": "/o/original.sim.onnx"}, raw_onnx={"original": "/o/original.onnx"},
                     export={"exports": {}, "simplify": {}}, verification={"ok": True}, io=IO),
        PrecisionRecord(precisions=["fp16"], fp32={"original": "/o/original.sim.onnx"}, calibration={"samples": 16},
                        variants={"original.fp16": PrecisionVariant(model="original", precision="fp16",
                                                                    onnx="/o/original.fp16.onnx", onnx_bytes=3,
                                                                    accuracy={"top1_agreement": 1.0},
                                                                    conversion={"kept_fp32": []})}),
        BuildRecord(tensorrt_installed=None, target_versions=["10.3"], skipped="no TensorRT",
                    variants={"original": BuildVariant(onnx="/o/original.sim.onnx", parse_check={"10.3": []},
                                                       trtexec={"10.3": "/o/x.sh"})}),
        BenchRecord(benchmarks={"original": {}}, device="cpu", shapes={"batch": [1]}, accuracy=None,
                    onnx={"original": "/o/original.sim.onnx"}),
        ReportRecord(report_json="/o/report.json", report_md="/o/report.md"),
        PackageRecord(bundle="/o/bundle", archive="/o/bundle.tar.gz", archive_sha256="ab", archive_bytes=9, files=3,
                      variants=["original.fp32"], golden_batch=4, trtexec_versions=["10.3"]),
    ]


def test_every_record_type_has_a_sample_and_a_stage() -> None:
    assert {type(r) for r in samples()} == set(RECORD_TYPES)
    assert {t.STAGE for t in RECORD_TYPES} <= set(STAGES)


@pytest.mark.parametrize("record", samples(), ids=lambda r: r.STAGE)
def test_round_trip(record: Record, tmp_path: Path) -> None:
    data = record.to_dict()
    assert data["stage"] == record.STAGE and data["schema"] == RECORD_SCHEMA_VERSION
    assert list(data)[-1] == "automatic_choices"
    assert type(record).from_dict(json.loads(json.dumps(data))) == record
    arts = Artifacts(tmp_path)
    path = save_record(arts, record)
    assert path == tmp_path / "stages" / f"{record.STAGE}.json"
    assert load_record(arts, type(record), needed_by="test") == record


def test_export_record_carries_the_io_spec() -> None:
    data = samples()[1].to_dict()
    assert data["io"] == io_to_dict(IO)
    assert ExportRecord.from_dict(data).io == IO
    data["io"] = {"inputs": [{"name": "x"}]}  # no dtype/shape
    with pytest.raises(ArtifactError, match=r"export.json: 'io' is not an I/O description") as exc:
        ExportRecord.from_dict(data)
    assert "re-run the export stage" in str(exc.value)


def test_unknown_keys_are_kept() -> None:
    data = {**samples()[0].to_dict(), "added_later": {"x": 1}}
    record = CompressRecord.from_dict(data)
    assert record.extra == {"added_later": {"x": 1}} and record.to_dict()["added_later"] == {"x": 1}


def _write(tmp_path: Path, stage: str, content: str) -> Artifacts:
    path = tmp_path / "stages" / f"{stage}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return Artifacts(tmp_path)


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", r"stage record .*export.json is corrupt"),
    (json.dumps({"stage": "export", "raw_onnx": {}}), r"export.json: the export record has no 'final_onnx' key"),
    (json.dumps({"stage": "export", "final_onnx": ["a.onnx"]}),
     r"export.json: 'final_onnx' must be a JSON object.*, got list"),
    (json.dumps({"stage": "export", "final_onnx": {"original": 3}}), r"'final_onnx' must be a JSON object whose values are a string, got dict"),
    (json.dumps({"stage": "export", "schema": RECORD_SCHEMA_VERSION + 1, "final_onnx": {}}),
     r"export.json: the record was written by a newer pela-export \(record schema 2"),
    (json.dumps({"stage": "export", "schema": "1", "final_onnx": {}}), r"'schema' must be an integer, got str"),
    (json.dumps({"stage": "bench", "final_onnx": {}}), r"the record is of stage 'bench', not 'export'"),
    (json.dumps([1, 2]), r"the export record must be a JSON object, got list"),
])
def test_bad_record_is_named(tmp_path: Path, content: str, message: str) -> None:
    arts = _write(tmp_path, "export", content)
    with pytest.raises(ArtifactError, match=message) as exc:
        load_record(arts, ExportRecord, needed_by="bench")
    assert "re-run the export stage" in str(exc.value)


def test_missing_record_names_the_stage(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"bench needs the saved result of stage 'export' .* does not exist"):
        load_record(Artifacts(tmp_path), ExportRecord, needed_by="bench")


def test_nested_variant_errors_name_the_variant(tmp_path: Path) -> None:
    arts = _write(tmp_path, "precision", json.dumps({"variants": {"original.int8": {"model": "original"}}}))
    with pytest.raises(ArtifactError, match=r"precision.json: variant 'original.int8' has no 'precision' key"):
        load_record(arts, PrecisionRecord, needed_by="build")


@pytest.mark.parametrize("kind", RECORD_TYPES, ids=lambda t: t.STAGE)
def test_old_format_records_load(kind: type[Record], tmp_path: Path) -> None:
    """Records a previous pela-export wrote (no ``schema`` field) from a real run's ``stages/``."""
    path = OLD_RECORDS / f"{kind.STAGE}.json"
    if kind is ReportRecord:  # the previous version wrote no report record
        assert not path.exists()
        return
    data = json.loads(path.read_text())
    assert "schema" not in data
    shutil.copytree(OLD_RECORDS, tmp_path / "stages")
    record = load_record(Artifacts(tmp_path), kind, needed_by="test")
    assert record.automatic_choices == data["automatic_choices"]
    assert record.finished_at == data["finished_at"] and record.extra == {}
    again = record.to_dict()
    assert {k: v for k, v in again.items() if k in data} == data  # nothing read was changed or lost


def test_old_export_record_has_no_io_and_is_trusted() -> None:
    record = ExportRecord.from_dict(json.loads((OLD_RECORDS / "export.json").read_text()))
    assert record.io is None and set(record.final_onnx) == {"original", "compressed"}


def test_stage_order_is_the_registered_tuple() -> None:
    assert tuple(s.name for s in PIPELINE) == STAGES
    assert STAGES[:2] == ("compress", "export") and STAGES[-2:] == ("report", "package")
    with_records = {t.STAGE for t in RECORD_TYPES}
    for i, stage in enumerate(PIPELINE):
        earlier = {s.name for s in PIPELINE[:i]}
        assert set(stage.needs) | set(stage.uses) <= earlier & with_records, stage.name
        assert (stage.part_of is None) == (stage.name in with_records), stage.name
        if stage.part_of:
            assert stage.part_of in earlier


def _skip_choices(parser: argparse.ArgumentParser) -> tuple[str, ...]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    run = sub.choices["run"]
    return tuple(next(a for a in run._actions if a.dest == "skip").choices)


def test_cli_skip_choices_are_the_stages() -> None:
    from pela_export.cli.main import build_parser

    assert _skip_choices(build_parser()) == STAGES


def test_skip_of_a_needed_stage_without_record_fails_first(tmp_path: Path) -> None:
    path = lambda s: tmp_path / "stages" / f"{s}.json"  # noqa: E731
    running = [s for s in PIPELINE if s.name != "bench"]
    lines = missing_inputs(running, ("bench",), path)
    assert lines == [f"report needs the saved result of stage 'bench' ({path('bench')}), which does not exist "
                     "(--skip bench was given)"]
    _write(tmp_path, "bench", "{}")
    assert missing_inputs(running, ("bench",), path) == []
    assert missing_inputs(running, ("bench", "report"), path) == []


def test_run_pipeline_refuses_before_any_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No stage runs (compress would write compressed.pt) when report needs a skipped, never-run bench."""
    from pela_export.pipeline import run as run_mod
    from pela_export.pipeline.context import Context

    ran: list[str] = []
    monkeypatch.setattr(run_mod, "PIPELINE", tuple(_Spy(s, ran) for s in PIPELINE))
    cfg = RunConfig.of(out=str(tmp_path), skip=("bench",), progress=False)
    ctx = Context(cfg, object(), Artifacts(tmp_path))  # type: ignore[arg-type]
    with pytest.raises(ArtifactError, match=r"report needs the saved result of stage 'bench'.*does not exist") as exc:
        run_mod.run_pipeline(cfg, ctx)
    assert ran == [] and "--skip" in str(exc.value)


class _Spy:
    """A registered stage that records that it ran (or was pre-checked) instead of doing work."""

    def __init__(self, stage: Any, ran: list[str]) -> None:
        self.name, self.needs, self.uses, self.part_of = stage.name, stage.needs, stage.uses, stage.part_of
        self._ran = ran

    def precheck(self, ctx: Any) -> None:
        self._ran.append(f"check {self.name}")

    def run(self, ctx: Any) -> None:
        self._ran.append(self.name)
