"""Decompositions and rank policies are registered once with their facts; option checks, the
data collected and the ratio a run reports are derived from those entries."""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
import typing

import pytest
import torch

from pela_export.errors import OptionError
from pela_export.lowrank import DECOMPOSITIONS, DEFAULT_RATIO, RANK_ALLOCATORS, LayerStats, LowRankLinear
from pela_export.lowrank.ranks import PolicyNeed
from pela_export.options import flag_of
from pela_export.pipeline.compress_options import CALIB_OPTIONS, COMPRESS_OPTIONS, effective_ratio, ratio_choice
from pela_export.pipeline.compress_options import CompressOptions
from pela_export.pipeline.config import RunConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
import dummy_decomposition  # noqa: E402  (tests/fixtures; registers --method dummy)

RUN_OPTIONS = set(COMPRESS_OPTIONS + CALIB_OPTIONS)


@pytest.mark.parametrize("name", DECOMPOSITIONS.names())
def test_every_decomposition_declares_its_facts(name: str) -> None:
    spec = DECOMPOSITIONS.get(name)
    assert spec.name == name and callable(spec.fn) and spec.summary
    assert spec.needs in ("none", "activation stats", "fisher")
    assert set(spec.options) <= RUN_OPTIONS and all(flag_of(CompressOptions, o).startswith("--") for o in spec.options)
    if spec.data_aware:
        assert spec.requires in {f for f in LayerStats.__dataclass_fields__} and spec.missing_fix
        assert "--calib-data" in spec.missing_fix
    else:
        assert spec.fisher is None and not spec.collect
    w = torch.randn(12, 10, dtype=torch.float64)
    stats = LayerStats(abs_mean=torch.rand(10) + 0.1, gram=torch.eye(10), fisher_rows=torch.rand(12) + 0.1,
                       fisher_elements=torch.rand(12, 10) + 0.1)
    f = spec(w, 4, stats)
    assert f.u.shape == (12, 4) and f.v.shape == (4, 10)


@pytest.mark.parametrize("name", RANK_ALLOCATORS.names())
def test_every_rank_policy_declares_its_facts(name: str) -> None:
    spec = RANK_ALLOCATORS.get(name)
    assert spec.name == name and callable(spec.fn) and spec.summary and spec.options
    assert spec.options <= RUN_OPTIONS and spec.needs <= set(typing.get_args(PolicyNeed))
    assert all(flag_of(CompressOptions, o).startswith("--") for o in spec.options)


def test_derived_facts_match_the_methods() -> None:
    assert DECOMPOSITIONS.get("asvd").options == {"asvd_alpha": "alpha"}
    assert DECOMPOSITIONS.get("fwsvd").fisher == "rows" and DECOMPOSITIONS.get("whiten").collect == {"gram"}
    assert not DECOMPOSITIONS.get("svd").data_aware
    assert [n for n in RANK_ALLOCATORS.names() if RANK_ALLOCATORS.get(n).uses_ratio] == ["ratio", "sensitivity"]
    assert RANK_ALLOCATORS.get("sensitivity").needs == {"calibration", "probe"}


def test_ratio_with_a_policy_that_does_not_use_it_is_an_error_naming_the_policy() -> None:
    with pytest.raises(OptionError) as info:
        RunConfig.of(ratio=4, rank_policy="energy", energy=0.9)
    msg = str(info.value)
    assert "--ratio" in msg and "--rank-policy energy" in msg and "--energy" in msg
    assert "drop --ratio" in msg and "ratio/sensitivity" in msg
    with pytest.raises(OptionError, match="--ratio is only used with --rank-policy ratio or sensitivity"):
        RunConfig.of(ratio=3, rank_policy="budget", param_budget=0.5)
    with pytest.raises(OptionError, match="--asvd-alpha is only used with --method asvd, not by --method dummy"):
        RunConfig.of(method="dummy", asvd_alpha=0.3)
    RunConfig.of(ratio=3, rank_policy="sensitivity")  # sensitivity reads the ratio


def test_ratio_stays_none_and_the_default_is_an_automatic_choice() -> None:
    cfg = RunConfig()
    assert cfg.compress.ratio is None and effective_ratio(cfg) == DEFAULT_RATIO == 2.0
    assert "--ratio 2" in str(ratio_choice(cfg))
    assert replace(cfg.compress, rank_policy="sensitivity").ratio is None and cfg.to_dict()["compress"]["ratio"] is None
    assert cfg.settings()["ratio"] is None
    energy = RunConfig.of(rank_policy="energy", energy=0.9)
    assert effective_ratio(energy) is None and ratio_choice(energy) is None
    assert ratio_choice(RunConfig.of(ratio=3)) is None and effective_ratio(RunConfig.of(ratio=3)) == 3.0


def test_saved_spec_matches_a_run_without_ratio() -> None:
    from types import SimpleNamespace

    from pela_export.errors import ArtifactError
    from pela_export.lowrank.select import DEFAULT_EXCLUDE, DEFAULT_INCLUDE
    from pela_export.pipeline.context import check_spec_matches

    loaded = SimpleNamespace(source="default:digits")
    saved = {"source": {"model": "default:digits"}, "ratio": 2.0, "method": "svd", "rank_policy": "ratio",
             "align": None, "include": list(DEFAULT_INCLUDE), "exclude": list(DEFAULT_EXCLUDE)}
    check_spec_matches(saved, RunConfig(), loaded)  # None asks for the default 2.0
    check_spec_matches(saved, RunConfig.of(ratio=2), loaded)
    with pytest.raises(ArtifactError, match="ratio=2.0"):
        check_spec_matches(saved, RunConfig.of(ratio=3), loaded)
    energy = saved | {"ratio": None, "rank_policy": "energy"}
    check_spec_matches(energy, RunConfig.of(rank_policy="energy", energy=0.9), loaded)


@pytest.fixture
def digits_env(monkeypatch: pytest.MonkeyPatch, default_cache: Path) -> None:
    monkeypatch.setenv("PELA_EXPORT_CACHE", str(default_cache))


@pytest.mark.slow
def test_energy_policy_reports_no_ratio(tmp_path: Path, digits_env: None) -> None:
    from pela_export.cli.main import main

    out = tmp_path / "o"
    assert main(["compress", "--rank-policy", "energy", "--energy", "0.9", "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "lowrank.json").read_text())["ratio"] is None
    ranks = (out / "ranks.md").read_text().splitlines()[0]
    assert "k=" not in ranks and "energy=0.9" in ranks
    record = json.loads((out / "stages" / "compress.json").read_text())
    assert record["compression"]["ratio"] is None
    assert not any("--ratio" in c for c in record["automatic_choices"])


@pytest.mark.slow
def test_a_registered_dummy_decomposition_runs_the_whole_pipeline(tmp_path: Path, digits_env: None) -> None:
    from pela_export.pipeline.run import run_pipeline
    from pela_export.runtime import validate_deploy, verify_bundle

    out = tmp_path / "run"
    run_pipeline(RunConfig.of(method="dummy", out=str(out), precisions=("fp32",), eval_samples=100, runs=30,
                           warmup=1, batch_sizes=(1,), progress=False))
    spec = json.loads((out / "lowrank.json").read_text())
    assert spec["method"] == "dummy" and spec["ratio"] == DEFAULT_RATIO
    report = json.loads((out / "report.json").read_text())
    assert report["compression"]["method"] == "dummy" and report["verification"]["ok"] is True
    assert any("--ratio 2" in c for c in report["automatic_choices"])
    assert "(k=2)" in (out / "ranks.md").read_text().splitlines()[0]
    from pela_export.lowrank import load_compressed
    from pela_export.models.sources import resolve_model

    model, _ = load_compressed(resolve_model(None, None, None).model, out / "compressed.pt", out / "lowrank.json")
    layer = next(m for m in model.modules() if isinstance(m, LowRankLinear))
    v = layer.first.weight.detach().double()  # V (rank x in)
    gram = v @ v.T  # Σ sits in U: V's rows stay orthonormal
    assert torch.allclose(gram, torch.eye(gram.shape[0], dtype=torch.float64), atol=1e-4)
    bundle = out / "bundle"
    assert verify_bundle(bundle) == []
    deploy = validate_deploy(json.loads((bundle / "deploy.json").read_text()))
    assert deploy["compression"]["method"] == "dummy"
    assert set(deploy["variants"]) == {"original.fp32", "compressed.fp32"}
