"""timm models with pretrained weights: ``timm:NAME --pretrained`` and ``timm:hf-hub:ORG/NAME``.

The weight file is resolved through the Hugging Face hub cache (:mod:`.hub`) first and
handed to timm as a local file, so timm never downloads by itself and every failure is
one clear error; what was loaded is described for ``LoadedModel.extra["weights"]``.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from torch import nn

from ..errors import ModelSourceError
from .hub import HubFileMissingError, fetch, is_offline, split_revision


def weight_candidates(filename: str | None) -> list[str]:
    """The files timm tries for a hub weight file: its safetensors twin first (timm's ``_get_safe_alternatives``)."""
    name = filename or "pytorch_model.bin"
    safe = {"pytorch_model.bin": "model.safetensors",
            "open_clip_pytorch_model.bin": "open_clip_model.safetensors"}.get(name)
    if safe is None and name.endswith(".bin"):
        safe = name[:-4] + ".safetensors"
    return [safe, name] if safe else [name]


def _create(what: str, path: Path, create: Callable[[], nn.Module]) -> nn.Module:
    """Run timm's constructor; a file that does not fit the architecture is named, not a traceback."""
    try:
        return create()
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ModelSourceError(f"the pretrained weights {path} do not load into {what} ({first})",
                               fix="delete that file from the cache so it is fetched again, or pass your own "
                                   "weights with --checkpoint FILE") from None


def _url_file(url: str, name: str) -> tuple[Path, str]:
    """A timm weight file hosted only at a URL, through torch's hub cache (TORCH_HOME)."""
    import torch.hub

    target = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    if target.is_file():
        return target, f"pretrained: {url} (torch hub cache)"
    problem = (f"{target.name} (pretrained weights of timm model {name!r}, only at {url}) is not in the torch hub "
               f"cache {target.parent} and cannot be downloaded")
    fix = (f"download {url} on a machine with internet and copy it to {target} (TORCH_HOME moves that cache), "
           "or pass the file with --checkpoint FILE")
    if is_offline():
        raise HubFileMissingError(f"{problem}: HF_HUB_OFFLINE=1 is set", fix=fix)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(target), progress=False)
    except (OSError, ValueError) as exc:
        raise HubFileMissingError(f"{problem}: {type(exc).__name__}: {str(exc)[:200]}", fix=fix) from None
    return target, f"pretrained: {url} (downloaded)"


def create_pretrained(name: str) -> tuple[nn.Module, str]:
    """``timm.create_model(name, pretrained=True)`` with the weights from the hub cache; (model, weights note)."""
    import timm
    from timm.models import get_pretrained_cfg

    arch = name.split(".", 1)[0]
    tags = timm.list_pretrained(f"{arch}.*")
    choose = (f"pass one of timm's pretrained names: {', '.join(tags[:6])}{', ...' if len(tags) > 6 else ''}"
              if tags else "drop --pretrained for random weights, or pass your weights with --checkpoint FILE")
    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError:  # an unknown .TAG
        raise ModelSourceError(f"timm has no pretrained weights named {name!r}", fix=choose) from None
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise ModelSourceError(f"timm has no pretrained weights for {name!r} (--pretrained)", fix=choose)
    if cfg.hf_hub_id:
        repo_id, revision = split_revision(cfg.hf_hub_id)
        found = fetch(repo_id, weight_candidates(cfg.hf_hub_filename), revision=revision,
                      what=f"pretrained weights of timm model {name}")
        assert found is not None
        path, note = found.path, f"pretrained: {found.describe()}"
    else:
        path, note = _url_file(cfg.url, name)
    overlay = {"file": str(path), "custom_load": cfg.custom_load}
    model = _create(f"timm model {name!r}", path,
                    lambda: timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay))
    return model, note


def parse_timm_config(data: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(architecture, pretrained_cfg, model_args) of a timm hub config.json, as timm's hf-hub loader reads it.

    Both forms: ``{"architecture", "num_classes", "pretrained_cfg": {...}, "model_args": {...}}`` and the
    older single dict; top-level ``num_classes`` and label names win over the saved pretrained_cfg.
    """
    from timm.models import PretrainedCfg

    data = dict(data)
    if "pretrained_cfg" not in data:
        legacy = data
        data = {"architecture": legacy.pop("architecture", None), "pretrained_cfg": legacy}
        if "labels" in legacy:
            legacy["label_names"] = legacy.pop("labels")
    arch = data.get("architecture")
    if not isinstance(arch, str) or not isinstance(data["pretrained_cfg"], dict):
        raise ModelSourceError("config.json is not a timm model config (no 'architecture' and 'pretrained_cfg')",
                               fix="pass timm:hf-hub:ORG/NAME only for repos saved by timm (push_to_hf_hub / "
                                   "save_for_hf); transformers models are hf:ORG/NAME")
    known = set(PretrainedCfg.__dataclass_fields__)
    pretrained = {k: v for k, v in data["pretrained_cfg"].items() if k in known}
    for key in ("num_classes", "label_names", "label_descriptions"):
        if key in data:
            pretrained[key] = data[key]
    return arch, pretrained, dict(data.get("model_args") or {})


def create_from_hub(repo: str) -> tuple[nn.Module, str]:
    """``timm:hf-hub:ORG/NAME[@REV]``: config.json and weights from the hub cache; (model, weights note)."""
    import timm

    repo_id, revision = split_revision(repo)
    config = fetch(repo_id, ["config.json"], revision=revision, what="the timm model config")
    assert config is not None
    try:
        data = json.loads(config.path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelSourceError(f"config.json of {repo_id} is not valid JSON ({exc})",
                               fix=f"delete {config.path} from the cache so it is fetched again") from None
    arch, pretrained_cfg, model_args = parse_timm_config(data if isinstance(data, dict) else {})
    if not timm.is_model(arch):
        raise ModelSourceError(f"{repo_id} is a timm {arch!r}, which timm {timm.__version__} does not have",
                               fix="upgrade timm: pip install -U timm")
    found = fetch(repo_id, weight_candidates(pretrained_cfg.get("hf_hub_filename")), revision=config.commit,
                  what=f"weights of timm model {arch}")
    assert found is not None
    overlay = {"file": str(found.path), "source": None, "custom_load": pretrained_cfg.get("custom_load", False)}
    model = _create(f"timm model {arch!r} of {repo_id}", found.path,
                    lambda: timm.create_model(arch, pretrained=True, pretrained_cfg=pretrained_cfg,
                                              pretrained_cfg_overlay=overlay, **model_args))
    return model, f"pretrained: {found.describe()}"
