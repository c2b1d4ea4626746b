"""Saving a compressed model as a standard checkpoint plus a small JSON spec,
and rebuilding it on the original architecture, so any later stage (export,
bench, training) can restart from the compress artifact."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import atomic_path, write_json_atomic
from ..errors import ArtifactError, CheckpointError
from .factorize import CompressionResult
from .kinds import empty_factorized, is_candidate, matrix_shape
from .select import set_submodule

SPEC_VERSION = 1


def save_compressed(result: CompressionResult, ckpt_path: str | Path, spec_path: str | Path,
                    source: dict[str, Any] | None = None) -> None:
    """Write ``state_dict`` (torch.save) and the layer spec (JSON), each atomically."""
    with atomic_path(ckpt_path) as tmp:
        torch.save(result.model.state_dict(), tmp)
    spec = {"spec_version": SPEC_VERSION, "source": source or {}, **result.to_dict()}
    write_json_atomic(spec_path, spec)


def read_spec(spec_path: str | Path) -> dict[str, Any]:
    path = Path(spec_path)
    if not path.is_file():
        raise ArtifactError(f"low-rank spec {str(path)!r} not found",
                            fix="run `pela-export compress` first, or do not skip the compress stage")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"low-rank spec {str(path)!r} is not valid JSON ({exc})",
                            fix="re-run `pela-export compress` to regenerate it") from None
    if not isinstance(spec, dict) or spec.get("spec_version") != SPEC_VERSION or "layers" not in spec:
        raise ArtifactError(
            f"low-rank spec {str(path)!r} has spec_version {spec.get('spec_version') if isinstance(spec, dict) else None!r}, expected {SPEC_VERSION}",
            fix="re-run `pela-export compress` with this version of pela-export")
    return spec


def load_compressed(original: nn.Module, ckpt_path: str | Path, spec_path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the factorized structure on ``original`` (modified in place) and load the weights."""
    spec = read_spec(spec_path)
    for layer in spec["layers"]:
        if layer["status"] != "factorized":
            continue
        name = layer["name"]
        try:
            old = original.get_submodule(name)
        except AttributeError:
            raise ArtifactError(f"layer {name!r} from the spec does not exist in the model",
                                fix="load the spec with the same model it was compressed from") from None
        kind = layer.get("kind", "linear")
        conv = kind.removeprefix("conv-") if kind.startswith("conv-") else None
        want = (nn.Conv2d if conv else nn.Linear)
        if not is_candidate(old) or not isinstance(old, want) or \
                matrix_shape(old, conv) != (layer["out_features"], layer["in_features"]):
            raise ArtifactError(f"layer {name!r} is {old!r}, spec expects {want.__name__} {kind} with matrix "
                                f"{layer['out_features']}x{layer['in_features']}",
                                fix="load the spec with the same model it was compressed from")
        set_submodule(original, name, empty_factorized(old, layer["rank"], conv))
    ckpt = Path(ckpt_path)
    if not ckpt.is_file():
        raise ArtifactError(f"compressed checkpoint {str(ckpt)!r} not found", fix="run `pela-export compress` first")
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise CheckpointError(f"compressed checkpoint {str(ckpt)!r} cannot be read ({type(exc).__name__})",
                              fix="re-run `pela-export compress` to regenerate it") from None
    try:
        original.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"compressed checkpoint {str(ckpt)!r} does not match the spec: {exc}",
                              fix="re-run `pela-export compress`; checkpoint and spec must come from the same run") from None
    original.eval()
    return original, spec
