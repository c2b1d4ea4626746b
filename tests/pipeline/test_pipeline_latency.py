"""``--rank-policy latency`` through the run config and the CLI: option errors, and one compress of the embedded
digits default whose latency table is written to the output dir and reused by the next run."""
import json

import pytest

from pela_export.errors import OptionError
from pela_export.pipeline.config import RunConfig


@pytest.mark.parametrize("kw, match", [
    ({"rank_policy": "latency"}, "neither --latency-budget nor --max-drop"),
    ({"rank_policy": "latency", "latency_budget": 0.5, "max_drop": 0.1}, "both --latency-budget and --max-drop"),
    ({"rank_policy": "latency", "latency_budget": 1.5}, r"--latency-budget must be in \(0, 1\]"),
    ({"rank_policy": "latency", "latency_budget": 0.0}, r"--latency-budget must be in \(0, 1\]"),
    ({"rank_policy": "latency", "max_drop": float("nan")}, "--max-drop must be"),
    ({"latency_budget": 0.9}, "--latency-budget is only used with --rank-policy latency"),
    ({"rank_policy": "sensitivity", "max_drop": 0.1}, "--max-drop is only used with --rank-policy latency"),
    ({"rank_policy": "latency", "latency_budget": 0.9, "ratio": 2.0}, "--ratio is only used with"),
    ({"rank_policy": "latency", "latency_budget": 0.9, "sensitivity_loss": "kl"}, "--calib-data"),
])
def test_option_errors_name_the_flag(kw, match):
    with pytest.raises(OptionError, match=match):
        RunConfig.of(**kw)


def test_the_flags_are_on_the_cli():
    from pela_export.cli.main import main

    with pytest.raises(SystemExit):
        main(["compress", "--help"])


def test_compress_digits_within_a_latency_budget(tmp_path, default_cache, monkeypatch, capsys):
    from pela_export.cli.main import main

    monkeypatch.setenv("PELA_EXPORT_CACHE", str(default_cache))
    out = tmp_path / "run"
    args = ["compress", "--out", str(out), "--rank-policy", "latency", "--latency-budget", "0.9"]
    assert main(args) == 0
    table = json.loads((out / "latency_table.json").read_text())
    assert table["entries"] and {e["threads"] for e in table["entries"]} == {table["entries"][0]["threads"]}
    assert all(e["batch"] == 1 and e["runtime"] == "onnxruntime-cpu" for e in table["entries"])
    record = json.loads((out / "stages" / "compress.json").read_text())
    lat = record["compression"]["policy_inputs"]["latency"]
    assert lat["mode"] == "latency-budget" and lat["budget_ms"] == pytest.approx(0.9 * lat["dense_model_ms"])
    assert lat["predicted_ms"] > 0 and lat["measured_ms"] > 0 and 0 <= lat["corrections"] <= 2
    assert lat["met"] in (True, False) and lat["measured_ms"] == min(
        a["measured_ms"] for a in lat["attempts"] if "measured_ms" in a) or lat["met"]
    fits = [a for a in lat["attempts"] if "predicted_ms" in a]
    assert all(a["predicted_ms"] <= a["target_ms"] + 1e-9 for a in fits) or any("note" in a for a in lat["attempts"])
    assert set(lat["decisions"]) == {r["name"] for r in record["compression"]["layers"] if r["status"] == "factorized"
                                     or "kept dense" in r["reason"]}
    assert record["compression"]["ratio"] is None and record["compression"]["rank_policy"] == "latency"
    assert any(c.startswith("--rank-policy latency") and "predicted" in c and "measured" in c
               for c in record["automatic_choices"])
    assert "rank " in (out / "ranks.md").read_text()
    assert not lat["table_reused"]
    # a second run in the same output dir reuses the table and the dense model's timing: nothing re-measured
    assert main(args) == 0
    again = json.loads((out / "stages" / "compress.json").read_text())["compression"]["policy_inputs"]["latency"]
    assert again["layer_timings_taken"] == 0 and again["table_reused"] and again["dense_model_reused"]
    # a saved compression is never reused for another budget: the run refuses it, naming the flag
    capsys.readouterr()
    code = main(["run", "--out", str(out), "--skip", "compress", "--rank-policy", "latency", "--latency-budget", "0.5",
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "saved compression used latency_budget=0.9" in err and "--latency-budget" in err
