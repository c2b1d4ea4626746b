"""``--rank-policy latency`` through the run config and the CLI: option errors, and one compress of the embedded
digits default whose latency table is written to the output dir and reused by the next run."""
import json

import pytest

from pela_export.errors import OptionError
from pela_export.pipeline.config import RunConfig
from pela_export.runtime.latency_table import LatencyTable, RuntimeEnv


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
    ({"latency_table": "t.json"}, "--latency-table is only used with --rank-policy latency"),
    ({"rank_policy": "latency", "latency_budget": 0.9, "latency_table": "/nonexistent/t.json"}, "no such file"),
])
def test_option_errors_name_the_flag(kw, match):
    with pytest.raises(OptionError, match=match):
        RunConfig.of(**kw)


def test_the_flags_are_on_the_cli():
    from pela_export.cli.main import main

    with pytest.raises(SystemExit):
        main(["compress", "--help"])


ARGS = ["compress", "--rank-policy", "latency", "--latency-budget", "0.9"]


@pytest.fixture(scope="module")
def latency_run(tmp_path_factory, default_cache):
    """One compress of the digits default with the latency policy (its table measured here)."""
    from pela_export.cli.main import main

    out = tmp_path_factory.mktemp("latency") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PELA_EXPORT_CACHE", str(default_cache))
        assert main([*ARGS, "--out", str(out)]) == 0
    return out


def test_compress_digits_within_a_latency_budget(latency_run, default_cache, monkeypatch, capsys):
    from pela_export.cli.main import main

    monkeypatch.setenv("PELA_EXPORT_CACHE", str(default_cache))
    out = latency_run
    args = [*ARGS, "--out", str(out)]
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


DEVICE = RuntimeEnv("tensorrt-fp16", "10.3.0", "Orin (nvgpu)", 0)


def _device_table(run, slower: str) -> tuple[LatencyTable, dict]:
    """The run's layer shapes "measured on a device" where factorizing layers named ``*slower`` never pays."""
    from pela_export.runtime.latency_table import Entry

    host = LatencyTable.load(run / "latency_table.json")
    (henv,) = host.envs()
    layers = json.loads((run / "stages" / "compress.json").read_text())["compression"]["layers"]
    slow_keys = set()
    table = LatencyTable()
    for key, (op, ranks, batch) in host.layers().items():
        shape = (op.in_features, op.out_features)
        slow = any(r["name"].endswith(slower) and (r["in_features"], r["out_features"]) == shape for r in layers)
        slow_keys |= {key} if slow else set()
        table.entries[f"{DEVICE.key}|{key}"] = Entry(op, DEVICE, batch, 1.0,
                                                     {r: (1.5 + r / 1000 if slow else 0.1 + r / 1000) for r in ranks})
    (model_key,) = host.models_of(henv)
    table.set_model_ms(DEVICE, model_key, 20.0)
    return table, {"slow": slow_keys, "model_key": model_key}


def test_a_device_table_ranks_by_the_devices_costs(latency_run, tmp_path, default_cache, monkeypatch, capsys):
    """--latency-table: the policy reads the device's costs (keeping dense what is slower there), times nothing here
    and says the whole-model check belongs to device-bench; an incomplete or mixed table is refused."""
    from pela_export.cli.main import main

    monkeypatch.setenv("PELA_EXPORT_CACHE", str(default_cache))
    table, facts = _device_table(latency_run, slower="fc2")
    assert facts["slow"]  # the digits ViT has fc2 layers whose shape only they have
    path = table.save(tmp_path / "device_table.json")
    out = tmp_path / "run"
    # budget 10 ms of 20: the 12 layers that are fast there must all be factorized (each saves <= 0.9 ms)
    assert main(["compress", "--out", str(out), "--rank-policy", "latency", "--latency-budget", "0.5",
                 "--latency-table", str(path)]) == 0
    record = json.loads((out / "stages" / "compress.json").read_text())
    lat = record["compression"]["policy_inputs"]["latency"]
    assert lat["foreign"] and lat["measured_on"] == DEVICE.key and lat["layer_timings_taken"] == 0
    assert lat["runtime"] == "tensorrt-fp16" and lat["dense_model_ms"] == 20.0 and lat["budget_ms"] == 10.0
    assert lat["measured_ms"] is None and lat["met"] is None and lat["predicted_ms"] <= 10.0
    for name, d in lat["decisions"].items():
        assert (d["rank"] is None) == name.endswith("fc2"), (name, d)
    assert any("device-bench" in c and DEVICE.key in c for c in record["automatic_choices"])
    saved = LatencyTable.load(out / "latency_table.json")  # the bundle carries the device's entries too
    assert DEVICE in saved.envs()
    # a layer the device table lacks, or timings from two environments: refused with the fix
    first = next(iter(table.entries))
    partial = LatencyTable({k: e for k, e in table.entries.items() if k != first}, table.models)
    mixed = LatencyTable.load(latency_run / "latency_table.json")
    mixed.merge(table)
    for bad, needle in ((partial, "has no timing for"), (mixed, "timings from 2 environments")):
        capsys.readouterr()
        assert main(["compress", "--out", str(tmp_path / "bad"), "--rank-policy", "latency", "--latency-budget", "0.9",
                     "--latency-table", str(bad.save(tmp_path / "bad.json"))]) == 2
        err = capsys.readouterr().err
        assert needle in err and "device-latency" in err, err


def test_bundle_carries_the_table_the_device_measures_and_the_run_reads_back(latency_run, tmp_path, default_cache,
                                                                              monkeypatch):
    """The whole loop on this machine: run → bundle with the layer shapes → device-latency (ONNX Runtime here, its
    own environment) → a new run ranking by that table."""
    from pela_export.cli.main import main
    from pela_export.runtime import verify_bundle
    from pela_export.runtime.device_latency import device_latency

    monkeypatch.setenv("PELA_EXPORT_CACHE", str(default_cache))
    assert main(["run", *ARGS[1:], "--out", str(latency_run), "--skip", "bench", "--skip", "report", "--precision",
                 "fp32", "--no-progress"]) == 0
    bundle = latency_run / "bundle"
    assert json.loads((bundle / "deploy.json").read_text())["latency_table"] == "latency_table.json"
    assert verify_bundle(bundle) == []  # the table is hashed like every other file
    (henv,) = LatencyTable.load(latency_run / "latency_table.json").envs()
    path = device_latency(bundle, tmp_path / "dev", backend="onnxruntime", runs=30, warmup=1, threads=henv.threads + 1,
                          log_fn=lambda _m: None)  # another thread count: another environment
    (denv,) = LatencyTable.load(path).envs()
    assert denv.threads == henv.threads + 1
    out = tmp_path / "again"
    assert main(["compress", "--out", str(out), "--rank-policy", "latency", "--latency-budget", "0.9",
                 "--latency-table", str(path)]) == 0
    lat = json.loads((out / "stages" / "compress.json").read_text())["compression"]["policy_inputs"]["latency"]
    assert lat["measured_on"] == denv.key and lat["layer_timings_taken"] == 0 and lat["measured_ms"] is None
