"""`pela-export inspect` recognises saved structured models and prints types, params and lowering choices."""
import pytest
from framework_fakes import tie_cores, tiny_model

from pela_export.cli.main import main
from pela_export.errors import ArtifactError
from pela_export.lowrank import factorize_model
from pela_export.structured.apply import structure_model
from pela_export.structured.inspect import find_structured, inspect_structured
from pela_export.structured.lowering import plan_lowering
from pela_export.structured.saved import save_structured

SOURCE = {"model": "framework_fakes:tiny_model"}


@pytest.fixture
def saved(tmp_path):
    model, _ = structure_model(tiny_model(), "test-chain", hyper={"rank": 4})
    tie_cores(model, ["blocks.0.attn.qkv", "blocks.1.attn.qkv"])
    plan = plan_lowering(model, form="lowrank", runs=2, warmup=0)
    save_structured(model, tmp_path / "structured.pt", tmp_path / "structured.json", source=SOURCE,
                    extra={"lowering": plan.to_dict()})
    return tmp_path


def test_directory_is_recognised_and_recorded_plan_printed(saved, capsys):
    assert main(["inspect", str(saved)]) == 0
    out = capsys.readouterr().out
    assert "structured model:" in out and "architecture: tiny_model" in out
    assert "| blocks.0.mlp.fc1 | test-chain | 16x8 |" in out
    assert "blocks.0.attn.qkv.core = blocks.1.attn.qkv.core" in out
    assert "lowering (recorded when the model was saved)" in out
    assert out.count("| lowrank | user override (all layers -> lowrank) |") == 6


def test_spec_flag_and_checkpoint_sibling_and_remeasure(saved, capsys):
    assert main(["inspect", "framework_fakes:tiny_model", "--structure-spec", str(saved / "structured.json"),
                 "--remeasure"]) == 0
    out = capsys.readouterr().out
    assert "lowering (measured now)" in out and "fastest measured" in out
    found = find_structured("framework_fakes:tiny_model", str(saved / "structured.pt"), None)
    assert found == ("framework_fakes:tiny_model", saved / "structured.pt", saved / "structured.json")
    assert find_structured(str(saved / "structured.json"), None, None)[1] == saved / "structured.pt"
    assert find_structured("framework_fakes:tiny_model", None, None) is None  # a plain model: the old inspect


def test_lowrank_only_model_and_missing_source(tmp_path):
    model = factorize_model(tiny_model(), ratio=2).model
    save_structured(model, tmp_path / "structured.pt", tmp_path / "structured.json", source=SOURCE)
    text = inspect_structured(None, tmp_path / "structured.pt", tmp_path / "structured.json")
    assert "6 plain low-rank layer(s)" in text and "nothing to lower" in text
    save_structured(model, tmp_path / "structured.pt", tmp_path / "structured.json")
    with pytest.raises(ArtifactError, match="records no source model"):
        inspect_structured(None, tmp_path / "structured.pt", tmp_path / "structured.json")


def test_cli_reports_errors_cleanly(saved, capsys):
    (saved / "structured.pt").write_bytes(b"junk")
    assert main(["inspect", str(saved)]) == 2
    assert "cannot be read" in capsys.readouterr().err
