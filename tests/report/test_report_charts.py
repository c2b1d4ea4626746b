"""PNG charts of the report: valid files, only measured numbers plotted, and the
report still written (saying how to get charts) when matplotlib is missing."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from bench_records import PARAMS, workstation_report
from PIL import Image

from pela_export.report import render_markdown, validate_report, write_report
from pela_export.report.charts import (
    DPI,
    _variants_chart,
    chart_notes,
    charts_record,
    latency_panel,
    new_figure,
    write_charts,
)
from pela_export.errors import DependencyError, PelaExportError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 2000, path  # not an empty canvas
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG"
        return img.size


def hide_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every matplotlib import fail, even of submodules already loaded in this process."""
    names = [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")]
    for name in {*names, "matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"}:
        monkeypatch.setitem(sys.modules, name, None)


def test_write_charts_writes_valid_small_pngs(tmp_path: Path) -> None:
    out = tmp_path / "charts"
    paths = write_charts(workstation_report(), out)
    assert [p.name for p in paths] == ["variants.png", "ranks.png", "latency.png"]
    for path in paths:
        width, height = assert_png(path)
        assert 300 < width < 2000 and 200 < height < 2200, (path.name, width, height)
    assert sorted(p.name for p in out.iterdir()) == ["latency.png", "ranks.png", "variants.png"]  # no temp files left
    assert DPI == 100


def _points(ax: Any) -> list[tuple[float, float]]:
    return [tuple(map(float, xy)) for c in ax.collections for xy in c.get_offsets()]


def test_variants_chart_plots_measured_numbers_only() -> None:
    fig = _variants_chart(workstation_report())
    timed, untimed = fig.axes
    # FP32 graphs: ONNX Runtime p50 at batch 1 vs their top-1
    assert sorted(_points(timed)) == sorted([(2.0, 96.0), (1.6, 95.5)])
    assert "batch 1" in timed.get_xlabel()
    # FP16/INT8 have no workstation latency: parameters vs top-1 instead, nothing estimated
    assert sorted(_points(untimed)) == sorted([(PARAMS["original"], 95.0), (PARAMS["original"], 95.5),
                                               (PARAMS["compressed"], 95.5), (PARAMS["compressed"], 94.5)])
    assert untimed.get_xlabel() == "parameters"
    labels = sorted(t.get_text() for t in untimed.texts)
    assert labels == ["compressed.fp16", "compressed.int8", "original.fp16", "original.int8"]


def test_variants_without_any_latency(tmp_path: Path) -> None:
    report = workstation_report(latency=False)
    fig = _variants_chart(report)
    assert len(fig.axes) == 1 and len(_points(fig.axes[0])) == 6
    paths = write_charts(report, tmp_path)
    assert [p.stem for p in paths] == ["variants", "ranks"]  # no latency chart without latencies
    assert chart_notes(report) and "original.fp32" in chart_notes(report)[0]


def test_ranks_chart_needs_a_factorized_layer(tmp_path: Path) -> None:
    report = workstation_report(compression={"ratio": 2.0, "layers": [
        {"name": "head", "rank": None, "status": "skipped", "params_before": 650, "params_after": 650}]})
    assert [p.stem for p in write_charts(report, tmp_path)] == ["variants", "latency"]


def test_latency_panel_box_plots_samples_else_percentiles() -> None:
    ax = new_figure(4, 3).subplots()
    latency_panel(ax, [("sampled", {"samples_ms": [1.0, 2.0, 3.0, 4.0], "p50_ms": 99.0}),
                       ("summary", {"p50_ms": 1.5, "p90_ms": 2.5, "p99_ms": 3.5})], "t")
    ys = [list(map(float, line.get_ydata())) for line in ax.lines]
    assert [2.5, 2.5] in ys  # the box plot's median of the raw samples (not the recorded p50)
    assert [1.5] in ys and [2.5] in ys and [3.5] in ys  # p50/p90/p99 markers of the summary-only series
    assert [99.0] not in ys
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["p50", "p90", "p99"]


def test_charts_record_and_markdown_links(tmp_path: Path) -> None:
    report = workstation_report(str(tmp_path))
    record = charts_record(report, tmp_path)
    assert record["skipped"] is None
    assert [f["path"] for f in record["files"]] == ["charts/variants.png", "charts/ranks.png", "charts/latency.png"]
    for f in record["files"]:
        assert_png(tmp_path / f["path"])
    report["charts"] = record
    _, md_path = write_report(report, tmp_path)
    md = md_path.read_text()
    assert "![Parameters vs accuracy vs latency per variant](charts/variants.png)" in md
    assert "![Latency distribution](charts/latency.png)" in md
    assert "No workstation latency for original.fp16, original.int8, compressed.fp16, compressed.int8" in md


def test_without_matplotlib_report_still_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hide_matplotlib(monkeypatch)
    report = workstation_report(str(tmp_path))
    with pytest.raises(DependencyError, match="pip install matplotlib") as info:
        write_charts(report, tmp_path / "charts")
    assert isinstance(info.value, PelaExportError)
    record = charts_record(report, tmp_path)
    assert record["files"] == [] and "matplotlib is not installed" in record["skipped"]
    assert "`pip install matplotlib`" in record["skipped"]
    assert not (tmp_path / "charts").exists()
    report["charts"] = record
    json_path, md_path = write_report(report, tmp_path)
    validate_report(json.loads(json_path.read_text()))
    md = md_path.read_text()
    assert "_Charts skipped: matplotlib is not installed" in md and "pip install matplotlib" in md
    assert "![" not in md
    assert "| `compressed.int8` | 100,000 | 0.430 | 94.50% | -1.00 |" in render_markdown(report)
