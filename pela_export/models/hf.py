"""Hugging Face transformers models from a local directory or a hub repo (optional extra ``hf``).

transformers itself loads offline only (``local_files_only``); a hub repo (``hf:ORG/NAME``)
is first resolved to its snapshot in the Hugging Face hub cache (:mod:`.hub`). Vision models
take pixel values shaped from the config and return logits; text models take every tokenizer
input with batch and sequence dynamic (:mod:`.hf_text`) and return logits or their declared
pooled embedding.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import DependencyError, ModelSourceError, OptionError
from .base import LoadedModel, Preprocessing, Tolerance
from .checkpoint import load_checkpoint



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


def _auto_class(transformers: Any, config: Any, vision: bool) -> Any:
    """The model class the saved config declares: a head only where the checkpoint has one.

    Loading a bare encoder (``BertModel``) as ``...ForSequenceClassification`` would add a
    randomly initialised head, so the declared architecture decides.
    """
    archs = [str(a) for a in (getattr(config, "architectures", None) or [])]
    if vision:
        return transformers.AutoModelForImageClassification
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return transformers.AutoModelForSequenceClassification
    return transformers.AutoModel


def load_hf_target(target: str, checkpoint: str | None, user_shape: tuple[int, ...] | None, *,
                   max_length: int | None = None, hidden_state: bool = False) -> LoadedModel:
    """``hf:DIR`` when DIR is an existing directory (or a path), else ``hf:ORG/NAME[@REV]`` from the hub cache.

    A hub model's source is its snapshot directory, where the tokenizer files lie for data and packaging.
    """
    from .hub import hf_snapshot, looks_like_repo_id, split_revision
    from .sources import weights_note

    if Path(target).expanduser().is_dir() or not looks_like_repo_id(target):
        loaded = load_hf_dir(target, checkpoint, user_shape, max_length=max_length, hidden_state=hidden_state)
        loaded.extra["weights"] = weights_note(f"saved model {target}", checkpoint)
        return loaded
    snapshot, weights = hf_snapshot(target)
    name = split_revision(target)[0].rsplit("/", 1)[-1]
    loaded = load_hf_dir(str(snapshot), checkpoint, user_shape, max_length=max_length, hidden_state=hidden_state,
                         name=name)
    loaded.extra["hub_repo"] = target
    loaded.extra["weights"] = weights_note(f"pretrained: {weights.describe()}", checkpoint)
    return loaded


def load_hf_dir(directory: str, checkpoint: str | None, user_shape: tuple[int, ...] | None, *,
                max_length: int | None = None, hidden_state: bool = False, name: str | None = None) -> LoadedModel:
    """Resolve ``hf:<dir>``: a saved transformers model (config.json + weights).

    Text models: ``max_length`` caps the sequence axis (default: the config's positions,
    at most 512); ``hidden_state`` adds the last hidden state as a second output of a bare encoder.
    """
    try:
        import transformers
    except ImportError:
        raise DependencyError("hf: models need the transformers package",
                              fix="pip install 'pela-export[hf]'") from None
    path = Path(directory).expanduser()
    if not (path / "config.json").is_file():
        raise ModelSourceError(f"{directory!r} is not a saved transformers model (no config.json)",
                               fix="pass hf:DIR where DIR was written by model.save_pretrained(DIR), or a hub repo "
                                   "as hf:ORG/NAME")
    config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    vision = hasattr(config, "image_size") and hasattr(config, "num_channels")
    try:
        model = _auto_class(transformers, config, vision).from_pretrained(path, local_files_only=True)
    except (ValueError, KeyError):
        model = transformers.AutoModel.from_pretrained(path, local_files_only=True)
    except OSError as exc:
        raise ModelSourceError(f"cannot load weights from {directory!r} ({str(exc).splitlines()[0]})",
                               fix="check the directory holds model.safetensors or pytorch_model.bin") from None
    notes = load_checkpoint(model, checkpoint) if checkpoint else []
    model.eval()
    name = name or path.resolve().name
    if vision:
        if max_length is not None or hidden_state:
            raise OptionError("--max-length and --hidden-state apply to text models only",
                              fix=f"drop them for the vision model {name!r}")
        size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        shape, origin = (tuple(user_shape), "user") if user_shape else ((config.num_channels, size, size), "config")
        pre = _preprocessing(path, (shape[-2], shape[-1]), shape[0])
        wrapped = LogitsOnly(model, "pixel_values").eval()
        loaded = LoadedModel(wrapped, name, f"hf:{directory}", shape, origin, preprocessing=pre,
                             num_classes=getattr(config, "num_labels", None), family="hf-vision",
                             tolerance=Tolerance(atol=1e-4, rtol=1e-3))
    else:
        loaded = _text_model(model, config, path, name, f"hf:{directory}", user_shape, max_length, hidden_state)
    loaded.extra["checkpoint_notes"] = notes
    return loaded


def _text_model(model: nn.Module, config: Any, path: Path, name: str, source: str,
                user_shape: tuple[int, ...] | None, max_length: int | None, hidden_state: bool) -> LoadedModel:
    from .hf_text import TextModel, read_pooling, sequence_range, text_inputs, text_io

    head = "logits" if type(model).__name__.endswith("ForSequenceClassification") else "embedding"
    if hidden_state and head == "logits":
        raise OptionError(f"--hidden-state adds the encoder's last hidden state, but {name!r} is a classifier",
                          fix="drop --hidden-state, or export the bare encoder")
    names = text_inputs(model, path)
    if "input_ids" not in names or "attention_mask" not in names:
        raise ModelSourceError(f"text model {name!r} does not take input_ids and attention_mask (takes {names})",
                               fix="export a model whose forward accepts input_ids and attention_mask")
    seq, seq_origin = sequence_range(config, path, max_length)
    origin = seq_origin
    if user_shape:
        if len(user_shape) != 1 or not 2 <= user_shape[0] <= seq.max:
            raise OptionError(f"--input-shape {list(user_shape)} for a text model: give one sequence length "
                              f"between 2 and {seq.max}", fix="pass --input-shape LENGTH, or --max-length N")
        from .io import AxisRange

        seq, origin = AxisRange(seq.min, user_shape[0], seq.max), "user (--input-shape: optimal sequence length)"
    pooling = read_pooling(path) if head == "embedding" else None
    io = text_io(names, config, seq, head, hidden_state)
    wrapped = TextModel(model, names, head, pooling, hidden_state).eval()
    loaded = LoadedModel(wrapped, name, source, (seq.opt,), origin, input_name="input_ids",
                         output_name=io.output_names[0], input_dtype=torch.int64,
                         num_classes=getattr(config, "num_labels", None) if head == "logits" else None,
                         family="hf-text", io=io, tolerance=Tolerance(atol=1e-4, rtol=1e-3),
                         extra={"vocab_size": int(getattr(config, "vocab_size", 100))})
    if pooling is not None:
        loaded.extra["pooling"] = {"mode": pooling.mode, "normalize": pooling.normalize, "origin": pooling.origin}
    loaded.extra["tokenizer_files"] = sorted(p.name for p in path.iterdir()
                                             if p.name in TOKENIZER_FILES)
    return loaded


#: Files a tokenizer needs on the device (copied into the bundle when present).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "merges.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model")
