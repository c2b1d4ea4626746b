"""report.json schema 2 for a model with several inputs (stated I/O and shapes) and the
version-1 reader."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from pela_export.errors import ArtifactError
from pela_export.measure.shapes import bench_shapes
from text_specs import VOCAB, text_spec  # noqa: E402  (tests/fixtures)
from pela_export.report.document import REPORT_SCHEMA_VERSION, load_report, upgrade_report, validate_report, write_report
from pela_export.report.markdown import render_markdown




# -- report.json schema 2 -------------------------------------------------------------------------------
def _report(**overrides):
    from test_report_document import fake_report  # the image-model report of the report tests

    return fake_report(**overrides)


@pytest.fixture()
def report_module_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


def test_text_report_states_io_and_shapes(report_module_path: None, tmp_path: Path) -> None:
    from pela_export.models.io import io_to_dict

    spec = text_spec()
    shapes = bench_shapes(spec, (1, 8)).to_dict()
    report = _report(shapes=shapes, io=io_to_dict(spec))
    assert report["schema_version"] == REPORT_SCHEMA_VERSION == 2
    assert [t["name"] for t in report["model"]["io"]["inputs"]] == ["input_ids", "attention_mask"]
    labels = [r["metric"] for r in report["comparison"]]
    assert "onnxruntime batch 1 × sequence 128 p50 (ms)" in labels
    assert "torch_eager batch 8 × sequence 128 throughput (samples/s)" in labels
    assert "FLOPs / sample (sequence 128)" in labels
    json_path, md_path = write_report(report, tmp_path)
    md = md_path.read_text()
    assert "Measured at: latency batch 1 × sequence 128, throughput batch 8 × sequence 128, FLOPs batch 1 × sequence 128" in md
    assert "input_ids int64 [batch, sequence]; attention_mask int64 [batch, sequence]" in md
    assert "sequence 1..512 (opt 128)" in md
    assert load_report(tmp_path)["shapes"]["flops"]["inputs"]["input_ids"] == [1, 128]


def test_version_1_report_is_read_and_upgraded(report_module_path: None, tmp_path: Path) -> None:
    v1 = copy.deepcopy(_report())
    v1["schema_version"] = 1
    del v1["model"]["io"], v1["shapes"]
    validate_report(v1)  # a version-1 report needs no io
    (tmp_path / "report.json").write_text(json.dumps(v1))
    up = load_report(tmp_path)
    assert up["schema_version"] == 2 and up["upgraded_from_schema_version"] == 1 and up["shapes"] is None
    assert up["model"]["io"]["inputs"] == [{"name": "input", "dtype": "float32", "shape": ["batch", 3, 224, 224],
                                            "role": "tensor"}]
    assert upgrade_report(up) == up
    assert "b=1" in render_markdown(up)  # an image model's labels stay as they were
    with pytest.raises(ArtifactError, match="model.io"):
        validate_report({**up, "model": {**up["model"], "io": {"inputs": "x"}}})
