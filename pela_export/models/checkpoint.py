"""Loading user checkpoints into an architecture, with every key mismatch named."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError

_CONTAINER_KEYS = ("state_dict", "model", "model_state_dict", "module", "model_ema")
_MAX_LISTED = 8


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Read a state dict from ``.pt/.pth/.bin`` (torch) or ``.safetensors``.

    Returns the tensors and notes describing any unwrapping done (a training
    checkpoint's ``state_dict``/``model`` entry, a DDP ``module.`` prefix) so the
    report can say so instead of rewriting silently.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} not found", fix="pass --checkpoint with an existing file")
    notes: list[str] = []
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(p))
        else:
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt files raise many different types
        raise CheckpointError(
            f"checkpoint {str(p)!r} cannot be read: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}",
            fix="check the file is a complete PyTorch state dict (torch.save(model.state_dict(), path)) or .safetensors",
        ) from None
    if isinstance(obj, dict):
        for key in _CONTAINER_KEYS:
            if key in obj and isinstance(obj[key], dict) and obj[key] and not isinstance(obj.get(key), torch.Tensor):
                notes.append(f"using the {key!r} entry of the checkpoint")
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {str(p)!r} holds {type(obj).__name__}, not a state dict of tensors",
                              fix="save it with torch.save(model.state_dict(), path)")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
        notes.append("stripped the 'module.' prefix (DataParallel checkpoint)")
    return obj, notes


def load_checkpoint(model: nn.Module, path: str | Path) -> list[str]:
    """Load ``path`` into ``model`` strictly; on mismatch name missing, unexpected and mis-shaped keys."""
    state, notes = read_state_dict(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing in checkpoint", missing), ("unexpected in checkpoint", unexpected),
                             ("shape mismatch", shapes)):
            if items:
                shown = ", ".join(items[:_MAX_LISTED]) + (f", ... (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")
                parts.append(f"{label} ({len(items)}): {shown}")
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not match the architecture:\n  " + "\n  ".join(parts),
            fix="pass the checkpoint of this exact architecture (check the model name / num_classes), "
                "or the model that matches this checkpoint",
        )
    model.load_state_dict(state, strict=True)
    return notes
