"""Pretrained weights through the Hugging Face hub cache, offline.

There is no network here, so each test builds a hub cache in huggingface_hub's own layout
(``models--ORG--NAME/{refs/main, snapshots/<commit>/FILE -> ../../blobs/<sha>}``) from models
it creates, points HF_HOME / HF_HUB_CACHE at it and sets HF_HUB_OFFLINE=1.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

from pela_export.errors import ModelSourceError, OptionError
from pela_export.models.hub import HubFileMissingError
from pela_export.models.sources import resolve_model

timm = pytest.importorskip("timm")
pytest.importorskip("huggingface_hub")

TIMM_REPO = "timm/test_vit.r160_in1k"  # where timm's pretrained_cfg for test_vit points


def hub_cache(cache: Path, repo_id: str, files: dict[str, Path]) -> str:
    """Lay ``files`` (repo path → local file) out as huggingface_hub caches a download; returns the commit."""
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit, encoding="utf-8")  # no newline, as huggingface_hub writes it
    for name, src in files.items():
        data = src.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return commit


def saved_dir(directory: Path) -> dict[str, Path]:
    return {p.relative_to(directory).as_posix(): p for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def offline(tmp_path, monkeypatch) -> Path:
    """An empty hub cache under HF_HOME, offline; returns the cache directory (HF_HOME/hub)."""
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path / "hf-home" / "hub"


def _same_weights(model: torch.nn.Module, reference: dict[str, torch.Tensor]) -> bool:
    state = model.state_dict()
    return state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in reference)


@pytest.mark.parametrize("filename", ["model.safetensors", "pytorch_model.bin"])
def test_timm_pretrained_comes_from_the_hub_cache(tmp_path, offline, filename):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    reference = {k: v.clone().contiguous() for k, v in timm.create_model("test_vit").state_dict().items()}
    weights = tmp_path / filename
    save_file(reference, str(weights)) if filename.endswith(".safetensors") else torch.save(reference, weights)
    commit = hub_cache(offline, TIMM_REPO, {filename: weights})

    m = resolve_model("timm:test_vit", pretrained=True)
    assert _same_weights(m.model, reference)
    assert m.extra["weights"] == f"pretrained: hf-hub {TIMM_REPO}@{commit} (cache)"

    plain = resolve_model("timm:test_vit", check=False)  # no --pretrained: random, even with the cache there
    assert not torch.equal(plain.model.head.weight, reference["head.weight"])
    assert plain.extra["weights"].startswith("random")


def test_timm_hf_hub_repo_with_its_config(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))  # HF_HUB_CACHE wins over HF_HOME
    monkeypatch.setenv("HF_HOME", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(2)
    src = timm.create_model("test_vit", num_classes=7)
    timm.models.save_for_hf(src, str(tmp_path / "saved"), safe_serialization=True)  # config.json + model.safetensors
    commit = hub_cache(cache, "acme/tiny-vit", saved_dir(tmp_path / "saved"))

    for spec in ("timm:hf-hub:acme/tiny-vit", f"timm:hf-hub:acme/tiny-vit@{commit}"):
        m = resolve_model(spec)
        assert m.name == "tiny-vit" and m.num_classes == 7 and m.input_shape == (3, 160, 160)
        assert _same_weights(m.model, src.state_dict())
        assert m.extra["weights"] == f"pretrained: hf-hub acme/tiny-vit@{commit} (cache)"


def test_hf_hub_id_loads_a_transformers_model_and_its_files(tmp_path, offline):
    transformers = pytest.importorskip("transformers")
    import tiny_hf_text as tiny  # tests/fixtures

    directory = tiny.with_tokenizer(tiny.sentence_encoder(tmp_path / "enc", pooling="cls_token"))
    commit = hub_cache(offline, "acme/tiny-bert", saved_dir(directory))

    m = resolve_model("hf:acme/tiny-bert")
    reference = transformers.BertModel.from_pretrained(directory).state_dict()
    assert _same_weights(m.model.model, reference)
    assert m.name == "tiny-bert" and m.extra["weights"] == f"pretrained: hf-hub acme/tiny-bert@{commit} (cache)"
    assert m.extra["pooling"]["mode"] == "cls", "1_Pooling/config.json came from the cache too"
    assert "tokenizer.json" in m.extra["tokenizer_files"]


def test_hf_local_directory_wins_over_a_hub_id(tmp_path, offline, monkeypatch):
    pytest.importorskip("transformers")
    import tiny_hf_text as tiny

    monkeypatch.chdir(tmp_path)
    tiny.bert_classifier(Path("acme/tiny-bert"))  # an existing directory spelled like ORG/NAME
    m = resolve_model("hf:acme/tiny-bert")
    assert m.extra["weights"] == "saved model acme/tiny-bert" and m.num_classes == 3


def test_not_cached_offline_names_repo_file_and_fix(offline):
    with pytest.raises(HubFileMissingError) as ei:
        resolve_model("hf:acme/not-cached")
    msg = str(ei.value)
    assert "Hugging Face repo acme/not-cached" in msg and "config.json" in msg and "HF_HUB_OFFLINE=1" in msg
    assert "hf download acme/not-cached config.json" in msg and str(offline) in msg and "HF_HUB_CACHE" in msg

    with pytest.raises(HubFileMissingError) as ei:
        resolve_model("timm:test_vit", pretrained=True)
    assert f"Hugging Face repo {TIMM_REPO}: model.safetensors (or pytorch_model.bin)" in str(ei.value)


def test_cached_config_without_weights_names_the_weight_file(tmp_path, offline):
    config = tmp_path / "config.json"
    config.write_text('{"model_type": "bert"}', encoding="utf-8")
    hub_cache(offline, "acme/half", {"config.json": config})
    with pytest.raises(HubFileMissingError, match=r"acme/half: model\.safetensors \(or model\.safetensors"):
        resolve_model("hf:acme/half")


def test_pretrained_name_without_weights_in_timm(offline):
    cfg = timm.models.get_pretrained_cfg("convnext_atto_rms")
    assert not (cfg.hf_hub_id or cfg.url), "precondition: timm ships no weights for this model"
    with pytest.raises(ModelSourceError, match="timm has no pretrained weights for 'convnext_atto_rms'"):
        resolve_model("timm:convnext_atto_rms", pretrained=True)
    with pytest.raises(ModelSourceError, match=r"no pretrained weights named 'resnet18\.nope'.*\n.*resnet18\.a1_in1k"):
        resolve_model("timm:resnet18.nope", pretrained=True)


def test_url_only_timm_weights_offline_name_the_url(offline):
    url = timm.models.get_pretrained_cfg("legacy_seresnet18").url
    assert url and not timm.models.get_pretrained_cfg("legacy_seresnet18").hf_hub_id, "precondition: URL-only"
    with pytest.raises(HubFileMissingError) as ei:
        resolve_model("timm:legacy_seresnet18", pretrained=True)
    assert url in str(ei.value) and "torch-home" in str(ei.value)


def test_pretrained_is_for_timm_models_only(tmp_path):
    for spec in (None, f"hf:{tmp_path}", "pkg.mod:make"):
        with pytest.raises(OptionError, match="--pretrained applies to timm:NAME models only"):
            resolve_model(spec, pretrained=True)


def test_every_model_command_takes_pretrained(tmp_path, offline, capsys):
    from pela_export.cli.args import config_from_args
    from pela_export.cli.main import build_parser, main
    from pela_export.pipeline.context import prepare

    parser = build_parser()
    for command in ("inspect", "export", "compress", "run"):
        assert parser.parse_args([command, "timm:test_vit", "--pretrained"]).pretrained
    assert main(["inspect", "timm:test_vit", "--pretrained"]) == 2  # the flag reaches the loader: cache is empty
    assert TIMM_REPO in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "model.onnx"), "--pretrained"]) == 2  # a saved file: never ignored
    assert "--pretrained loads a timm model's weights" in capsys.readouterr().err

    ns = parser.parse_args(["compress", "timm:test_vit", "--pretrained", "--out", str(tmp_path / "out")])
    with pytest.raises(HubFileMissingError, match=TIMM_REPO):
        prepare(config_from_args(ns))
