"""Hugging Face transformers models from a local directory (optional extra ``hf``).

Loads offline only (``local_files_only``): pretrained weights are never
downloaded. Vision models take pixel values shaped from the config; text
models take token ids. The wrapper returns plain logits so every exporter and
comparator sees one tensor.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..errors import DependencyError, ModelSourceError
from .base import LoadedModel, Preprocessing, Tolerance
from .checkpoint import load_checkpoint

TEXT_SEQ_CAP = 128


class LogitsOnly(nn.Module):
    """Calls a transformers model and returns ``.logits`` (or the last hidden state)."""

    def __init__(self, model: nn.Module, input_kw: str) -> None:
        super().__init__()
        self.model = model
        self.input_kw = input_kw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(**{self.input_kw: x})
        logits = getattr(out, "logits", None)
        return logits if logits is not None else out.last_hidden_state


#: PIL resample codes used in preprocessor_config.json.
_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def _hf_side(value: object) -> tuple[int, int] | None:
    if isinstance(value, int):
        return value, value
    if isinstance(value, dict) and "height" in value and "width" in value:
        return int(value["height"]), int(value["width"])
    return None


def hf_preprocessing(data: dict, size: tuple[int, int], channels: int) -> Preprocessing:
    """The image processor described by preprocessor_config.json ``data``, for input ``size``.

    Hugging Face's image processors resize the 8-bit image (``resample``; Pillow in transformers < 5,
    torchvision since, within 2 of 255 levels of it), centre crop with a floored offset, multiply
    by ``rescale_factor`` and normalise;
    ``{"shortest_edge": S}`` keeps the aspect ratio, ``{"height", "width"}`` squashes;
    ConvNeXt's ``crop_pct`` resizes the shortest edge to int(S / crop_pct) below 384.
    """
    mean = tuple(float(v) for v in data.get("image_mean", (0.5,) * channels))
    std = tuple(float(v) for v in data.get("image_std", (0.5,) * channels))
    if data.get("do_normalize") is False:
        mean, std = (0.0,) * channels, (1.0,) * channels
    factor = float(data.get("rescale_factor", 1 / 255)) if data.get("do_rescale", True) else 1.0
    high = round(1.0 / factor, 6)
    sz = data.get("size")
    mode, resize_size, pct = "squash", size, 1.0
    if isinstance(sz, dict) and "shortest_edge" in sz:
        edge = int(sz["shortest_edge"])
        mode, resize_size = "shorter_side", (edge,)
        if "crop_pct" in data and data["crop_pct"] is not None:
            pct = float(data["crop_pct"])
            mode, resize_size = ("shorter_side", (int(edge / pct),)) if edge < 384 else ("squash", (edge, edge))
    elif isinstance(sz, int) and data.get("do_center_crop"):
        mode, resize_size = "shorter_side", (sz,)
    elif _hf_side(sz) is not None and data.get("do_resize", True):
        resize_size = _hf_side(sz)  # type: ignore[assignment]
    eight_bit = high == 255.0
    return Preprocessing(mean, std, size, channels, input_range=(0.0, high),
                         interpolation=_PIL_RESAMPLE.get(int(data.get("resample", 2)), "bilinear"), antialias=True,
                         resize_mode=mode, resize_size=tuple(resize_size), crop_pct=pct, crop_offset="floor",
                         resize_dtype="uint8" if eight_bit else "float32")


def _preprocessing(directory: Path, size: tuple[int, int], channels: int) -> Preprocessing:
    cfg = directory / "preprocessor_config.json"
    data = json.loads(cfg.read_text(encoding="utf-8")) if cfg.is_file() else {}
    return hf_preprocessing(data if isinstance(data, dict) else {}, size, channels)


def load_hf_dir(directory: str, checkpoint: str | None, user_shape: tuple[int, ...] | None) -> LoadedModel:
    """Resolve ``hf:<dir>``: a saved transformers model (config.json + weights)."""
    try:
        import transformers
    except ImportError:
        raise DependencyError("hf: models need the transformers package",
                              fix="pip install 'pela-export[hf]'") from None
    path = Path(directory)
    if not (path / "config.json").is_file():
        raise ModelSourceError(f"{directory!r} is not a saved transformers model (no config.json)",
                               fix="pass hf:DIR where DIR was written by model.save_pretrained(DIR)")
    config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    vision = hasattr(config, "image_size") and hasattr(config, "num_channels")
    auto = transformers.AutoModelForImageClassification if vision else transformers.AutoModelForSequenceClassification
    try:
        model = auto.from_pretrained(path, local_files_only=True)
    except (ValueError, KeyError):
        model = transformers.AutoModel.from_pretrained(path, local_files_only=True)
    except OSError as exc:
        raise ModelSourceError(f"cannot load weights from {directory!r} ({str(exc).splitlines()[0]})",
                               fix="check the directory holds model.safetensors or pytorch_model.bin") from None
    notes = load_checkpoint(model, checkpoint) if checkpoint else []
    model.eval()
    name = path.resolve().name
    if vision:
        size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        shape, origin = (tuple(user_shape), "user") if user_shape else ((config.num_channels, size, size), "config")
        pre = _preprocessing(path, (shape[-2], shape[-1]), shape[0])
        wrapped = LogitsOnly(model, "pixel_values")
        loaded = LoadedModel(wrapped, name, f"hf:{directory}", shape, origin, preprocessing=pre,
                             num_classes=getattr(config, "num_labels", None), family="hf-vision",
                             tolerance=Tolerance(atol=1e-4, rtol=1e-3))
    else:
        if user_shape:
            shape, origin = tuple(user_shape), "user"
        else:
            seq = min(int(getattr(config, "max_position_embeddings", TEXT_SEQ_CAP)), TEXT_SEQ_CAP)
            shape, origin = (seq,), f"config (max_position_embeddings capped at {TEXT_SEQ_CAP})"
        loaded = LoadedModel(LogitsOnly(model, "input_ids"), name, f"hf:{directory}", shape, origin,
                             input_name="input_ids", input_dtype=torch.int64,
                             num_classes=getattr(config, "num_labels", None), family="hf-text",
                             extra={"vocab_size": int(getattr(config, "vocab_size", 100))})
    loaded.extra["checkpoint_notes"] = notes
    return loaded
