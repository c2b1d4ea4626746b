"""The sweep's one per-layer latency table: copied into a point before it compresses and back after (never an
empty file back), each copy complete or absent."""
from __future__ import annotations

from pathlib import Path

from pela_export.pipeline.latency import TABLE_FILE
from pela_export.sweep.measure import _share_latency_table


def test_the_shared_table_goes_into_a_point_and_back(tmp_path: Path) -> None:
    point = tmp_path / "points" / "L0.7-latency-svd-fp32"
    _share_latency_table(point, into_point=True)  # nothing shared yet: nothing copied
    assert not (point / TABLE_FILE).exists()
    (tmp_path / TABLE_FILE).write_text('{"entries": [1]}')
    _share_latency_table(point, into_point=True)
    assert (point / TABLE_FILE).read_text() == '{"entries": [1]}'
    (point / TABLE_FILE).write_text('{"entries": [1, 2]}')  # the point measured one more shape
    _share_latency_table(point, into_point=False)
    assert (tmp_path / TABLE_FILE).read_text() == '{"entries": [1, 2]}'
    (point / TABLE_FILE).write_text("")
    _share_latency_table(point, into_point=False)  # an empty table never replaces the shared one
    assert (tmp_path / TABLE_FILE).read_text() == '{"entries": [1, 2]}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latency_table.json", "points"]  # no temporary left
