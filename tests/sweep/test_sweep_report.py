"""The recommendation (fastest front point within each allowed drop), the table and the chart."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pela_export.sweep.report import markdown, policy_hint, recommend, summarize, table_rows


def _record(pid: str, model: str, latency: float | None, score: float | None, params: int,
            ratio: float | None = None, precision: str = "fp32") -> dict[str, Any]:
    options = {} if ratio is None else {"ratio": ratio}
    flags = ([] if ratio is None else ["--ratio", f"{ratio:g}", "--rank-policy", "ratio", "--method", "svd"])
    return {"point": {"model": model, "precision": precision, "policy": "ratio" if ratio else None,
                      "method": "svd" if ratio else None, "options": options, "id": pid},
            "flags": flags + ["--precision", precision], "latency_ms": latency, "score": score, "params": params,
            "flops": params * 20, "onnx_bytes": params * 4, "metric": "top-1 accuracy (%)"}


RECORDS = {
    "k2": _record("k2", "compressed", 6.0, 98.8, 500, 2),      # drop 0.4
    "original-fp32": _record("original-fp32", "original", 10.0, 99.2, 1000),
    "k3": _record("k3", "compressed", 4.0, 98.0, 333, 3),      # drop 1.2
    "k4": _record("k4", "compressed", 5.0, 97.0, 250, 4),      # dominated by k3 (slower, less accurate)
    "k6": _record("k6", "compressed", 2.0, 90.0, 166, 6),      # drop 9.2
}


def test_rows_mark_the_front_and_drops_from_the_original() -> None:
    rows = {r["id"]: r for r in table_rows(RECORDS)}
    assert {i for i, r in rows.items() if r["on_front"]} == {"original-fp32", "k2", "k3", "k6"}
    assert rows["k2"]["drop"] == pytest.approx(0.4) and rows["original-fp32"]["drop"] == 0
    assert rows["k3"]["latency_ratio"] == pytest.approx(0.4)


def test_recommendation_is_the_fastest_front_point_within_each_drop() -> None:
    recs = {r["max_drop"]: r for r in recommend(table_rows(RECORDS), (0.1, 0.5, 1.0, 2.0, 10.0))}
    assert recs[0.1]["id"] == "original-fp32" and "original itself" in recs[0.1]["why"]
    assert recs[0.5]["id"] == recs[1.0]["id"] == "k2"
    assert recs[2.0]["id"] == "k3" and recs[2.0]["flags"][:2] == ["--ratio", "3"]
    assert recs[10.0]["id"] == "k6"


def test_without_the_original_no_drop_can_be_judged() -> None:
    recs = recommend(table_rows({k: v for k, v in RECORDS.items() if k != "original-fp32"}), (1.0,))
    assert recs[0]["id"] is None and "no measured original" in recs[0]["why"]


def test_latency_policy_hint_uses_only_the_options_it_declares() -> None:
    assert policy_hint(1.0, 0.6, None) is None
    # --max-drop is in the policy's loss-proxy units, not accuracy points: never suggested for a points allowance
    assert policy_hint(1.0, 0.6, frozenset({"max_drop"})) is None
    both = policy_hint(0.5, 0.604, frozenset({"max_drop", "latency_budget"}))
    assert both == "--rank-policy latency --latency-budget 0.60"


def _summary() -> dict[str, Any]:
    return summarize(RECORDS, model="toy", settings={"threads": 2, "runs": 30, "warmup": 5, "data": "digits"},
                     skipped=[("policy energy", "reads --energy")], failed=[("k8", "boom")],
                     not_run=[("k9", "time budget spent")], reused=["k2"], choices=["--methods svd"])


def test_summary_and_markdown_list_every_point_and_what_was_not_measured() -> None:
    s = _summary()
    assert s["front"] == ["k6", "k3", "k2", "original-fp32"] and s["baseline"] == "original-fp32"
    md = markdown(s)
    for pid in RECORDS:
        assert f"| {pid} |" in md
    assert "skipped policy energy" in md and "failed k8: boom" in md and "not run k9" in md
    assert "`pela-export run MODEL --ratio 2 --rank-policy ratio --method svd --precision fp32`" in md  # no spec recorded
    # the model as the sweep was given it: a spec, or nothing for the embedded default
    spec = summarize(RECORDS, model="toy", settings={"spec": "hf:/m y", "threads": 2, "runs": 30, "warmup": 5})
    assert "`pela-export run 'hf:/m y' --ratio 2 --rank-policy ratio" in markdown(spec)
    default = summarize(RECORDS, model="toy", settings={"spec": None, "threads": 2, "runs": 30, "warmup": 5})
    assert "`pela-export run --ratio 2 --rank-policy ratio" in markdown(default)


def test_chart_is_a_900_by_600_png_linked_from_the_markdown(tmp_path: Path) -> None:
    from PIL import Image

    from pela_export.sweep.chart import draw

    s = _summary()
    path = draw(s, tmp_path / "sweep.png")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (900, 600)
    assert [p.name for p in tmp_path.iterdir()] == ["sweep.png"]  # no temporary file left
    s["chart"] = "sweep.png"
    assert "![latency vs score](sweep.png)" in markdown(s)
