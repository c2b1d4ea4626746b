"""deploy.json's ``preprocessing``: check it, and turn raw images into model input exactly as it says.

A device that feeds the model differently from the workstation loses accuracy
silently (nearest instead of bilinear resizing costs the digits model 15
points), so this is the reference implementation of the record: numpy only,
Pillow when installed (bit-identical either way), never torch.

Raw images are what a decoder gives: a PIL image, an ``(H, W)`` or ``(H, W, C)``
array, a list of those, or a batch array ``(N, H, W)`` / ``(N, H, W, C)`` —
channels last, RGB order. The steps, in order: raw channels → model channels
(1 → C repeats, C → 1 averages, alpha dropped); values ``input_range`` → [0, 1]
(before resizing for ``resize_dtype`` float32, after it for uint8); resize by
``resize_mode`` to ``resize_size``; centre crop (or zero-pad) to ``size``;
``channel_order`` (BGR reverses the channels); ``(x - mean) / std``; ``layout``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ArtifactError, InputShapeError
from .resample import INTERPOLATIONS, resize_float, resize_uint8

__all__ = ["CHANNEL_ORDERS", "CROP_OFFSETS", "INTERPOLATIONS", "LAYOUTS", "RESIZE_DTYPES", "RESIZE_MODES",
           "preprocess", "resized_shape", "validate_preprocessing"]

#: ``squash``: both sides to resize_size (H, W); ``shorter_side``: the shorter side to resize_size[0], the
#: longer to int(S · long / short) (torchvision ``Resize(int)``); ``fit_shorter`` / ``fit_longer``: scale
#: keeping the aspect ratio so the shorter / longer side fits resize_size (H, W), sides rounded half to even
#: (timm ``ResizeKeepRatio``).
RESIZE_MODES: tuple[str, ...] = ("squash", "shorter_side", "fit_shorter", "fit_longer")
RESIZE_DTYPES: tuple[str, ...] = ("float32", "uint8")
#: Centre-crop offset (in - out) / 2: ``round`` half to even (torchvision, timm), ``floor`` (Hugging Face).
CROP_OFFSETS: tuple[str, ...] = ("round", "floor")
CHANNEL_ORDERS: tuple[str, ...] = ("gray", "RGB", "BGR")
LAYOUTS: tuple[str, ...] = ("NCHW", "NHWC")
_OPTIONAL_CHOICES: dict[str, tuple[str, ...]] = {
    "interpolation": INTERPOLATIONS, "resize_mode": RESIZE_MODES, "resize_dtype": RESIZE_DTYPES,
    "crop_offset": CROP_OFFSETS, "channel_order": CHANNEL_ORDERS, "layout": LAYOUTS,
}
FIX = "re-create the bundle with `pela-export package` (deploy.json's preprocessing must not be edited by hand)"


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _numbers(c: list[str], d: Mapping[str, Any], key: str, where: str, lengths: tuple[int, ...]) -> list[float] | None:
    v = d.get(key)
    if not isinstance(v, list) or not all(_is_num(x) for x in v):
        c.append(f"key '{where}.{key}' is {v!r}, expected a list of numbers")
        return None
    if len(v) not in lengths:
        want = " or ".join(str(n) for n in sorted(set(lengths)))
        c.append(f"key '{where}.{key}' has {len(v)} values, expected {want} (one per input channel)")
        return None
    return [float(x) for x in v]


def validate_preprocessing(d: Any, where: str = "preprocessing") -> list[str]:
    """Every problem of a deploy.json ``preprocessing`` object (empty when valid).

    Only size, channels, mean and std are required: the other keys default to the
    pipeline bundles used before they were recorded (bilinear, no antialiasing,
    squash to ``size``, values already in [0, 1]), so older bundles still validate.
    """
    if not isinstance(d, Mapping):
        return [f"key {where!r} is {type(d).__name__}, expected an object"]
    c: list[str] = []
    size, channels = d.get("size"), d.get("channels")
    if not (isinstance(size, list) and len(size) == 2 and all(_is_pos_int(s) for s in size)):
        c.append(f"key '{where}.size' is {size!r}, expected [height, width] of positive integers")
    if not _is_pos_int(channels):
        c.append(f"key '{where}.channels' is {channels!r}, expected a positive integer")
        channels = None
    lengths = (1, channels) if channels else (1,)
    _numbers(c, d, "mean", where, lengths)
    std = _numbers(c, d, "std", where, lengths)
    for i, s in enumerate(std or []):
        if s <= 0:
            c.append(f"key '{where}.std[{i}]' is {s}, expected a positive number (inputs are divided by it)")
    for key, choices in _OPTIONAL_CHOICES.items():
        if key in d and d[key] not in choices:
            c.append(f"key '{where}.{key}' is {d[key]!r}, expected one of {', '.join(choices)}")
    if d.get("channel_order") == "gray" and channels not in (None, 1):
        c.append(f"key '{where}.channel_order' is 'gray' but the model has {channels} channels")
    rng = d.get("input_range", [0.0, 1.0])
    if not (isinstance(rng, list) and len(rng) == 2 and all(_is_num(v) for v in rng) and rng[0] < rng[1]):
        c.append(f"key '{where}.input_range' is {rng!r}, expected [low, high] with low < high "
                 "(the raw values that map to 0 and 1)")
    if "antialias" in d and not isinstance(d["antialias"], bool):
        c.append(f"key '{where}.antialias' is {d['antialias']!r}, expected true or false")
    pct = d.get("crop_pct", 1.0)
    if not (_is_num(pct) and pct > 0):
        c.append(f"key '{where}.crop_pct' is {pct!r}, expected a positive number")
    mode = d.get("resize_mode", "squash")
    if "resize_size" in d:
        rs, want = d["resize_size"], 1 if mode == "shorter_side" else 2
        if not (isinstance(rs, list) and len(rs) == want and all(_is_pos_int(s) for s in rs)):
            c.append(f"key '{where}.resize_size' is {rs!r}, expected {want} positive integer(s) for "
                     f"resize_mode {mode!r}")
    if "pad_fill" in d:
        _numbers(c, d, "pad_fill", where, (0, *lengths))
    if d.get("resize_dtype") == "uint8":
        if list(rng) != [0, 255]:
            c.append(f"key '{where}.input_range' is {rng!r}, but resize_dtype 'uint8' resizes 8-bit pixels: "
                     "expected [0, 255]")
        if d.get("antialias") is False:
            c.append(f"key '{where}.antialias' is false, but resize_dtype 'uint8' is Pillow's resize, "
                     "which antialiases: expected true")
    return c


def _spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The validated record with defaults filled in (ArtifactError listing every problem otherwise)."""
    problems = validate_preprocessing(spec)
    if problems:
        detail = problems[0] if len(problems) == 1 else "\n" + "\n".join(f"  - {p}" for p in problems)
        raise ArtifactError(f"deploy.json preprocessing is invalid: {detail}", fix=FIX, where="preprocessing")
    channels = int(spec["channels"])
    size = (int(spec["size"][0]), int(spec["size"][1]))
    mode = spec.get("resize_mode", "squash")
    default_rs = [min(size)] if mode == "shorter_side" else list(size)
    return {
        "size": size, "channels": channels, "mode": mode,
        "resize_size": tuple(int(v) for v in spec.get("resize_size", default_rs)),
        "interpolation": spec.get("interpolation", "bilinear"), "antialias": bool(spec.get("antialias", False)),
        "dtype": spec.get("resize_dtype", "float32"), "range": tuple(float(v) for v in spec.get("input_range", [0, 1])),
        "offset": spec.get("crop_offset", "round"), "pad": [float(v) for v in spec.get("pad_fill", [])],
        "order": spec.get("channel_order", "gray" if channels == 1 else "RGB"), "layout": spec.get("layout", "NCHW"),
        "mean": np.asarray(spec["mean"], dtype=np.float32), "std": np.asarray(spec["std"], dtype=np.float32),
    }


def resized_shape(hw: tuple[int, int], mode: str, resize_size: Sequence[int]) -> tuple[int, int]:
    """(H, W) an ``hw`` image is resized to before the centre crop."""
    h, w = hw
    if mode == "squash":
        return int(resize_size[0]), int(resize_size[1])
    if mode == "shorter_side":
        s = int(resize_size[0])
        return (s, int(s * w / h)) if h <= w else (int(s * h / w), s)
    th, tw = resize_size
    rh, rw = h / th, w / tw
    ratio = min(rh, rw) if mode == "fit_shorter" else max(rh, rw)
    return round(h / ratio), round(w / ratio)


def _pil_to_array(img: Any) -> np.ndarray:
    if img.mode not in ("L", "RGB", "I", "I;16", "F"):
        img = img.convert("L" if img.mode in ("1", "LA") else "RGB")
    return np.asarray(img)


def _batches(raw: Any) -> list[np.ndarray]:
    """Raw input as a list of ``(N, H, W, C)`` arrays, one per distinct image size."""
    if hasattr(raw, "mode") and hasattr(raw, "size") and hasattr(raw, "convert"):  # one PIL image
        raw = [raw]
    if isinstance(raw, np.ndarray):
        if raw.ndim not in (3, 4):
            raise InputShapeError(f"raw images have shape {raw.shape}; a batch array is (N, H, W) or (N, H, W, C)",
                                  fix="pass a list of images, or add the batch axis (x[None])")
        return [raw[..., None] if raw.ndim == 3 else raw]
    if not isinstance(raw, Sequence) or not raw:
        raise InputShapeError(f"raw images are {type(raw).__name__}, expected images",
                              fix="pass a PIL image, a list of images or an (N, H, W[, C]) array")
    out: list[np.ndarray] = []
    for i, item in enumerate(raw):
        a = _pil_to_array(item) if hasattr(item, "convert") else np.asarray(item)
        if a.ndim not in (2, 3):
            raise InputShapeError(f"raw image {i} has shape {a.shape}, expected (H, W) or (H, W, C)",
                                  fix="pass channels-last images")
        out.append((a[..., None] if a.ndim == 2 else a)[None])
    return out


def _match_channels(x: np.ndarray, channels: int) -> np.ndarray:
    have = x.shape[-1]
    if have in (2, 4) and channels != have:  # drop alpha
        x, have = x[..., :have - 1], have - 1
    if have == channels:
        return x
    if have == 1:
        return np.repeat(x, channels, axis=-1)
    if channels == 1:
        m = x.astype(np.float32).mean(axis=-1, keepdims=True)
        return np.clip(np.rint(m), 0, 255).astype(np.uint8) if x.dtype == np.uint8 else m
    raise InputShapeError(f"raw images have {have} channels but the model takes {channels}; only 1 ↔ C "
                          "conversion (and dropping alpha) is defined", fix=f"pass {channels}-channel images")


def _crop(x: np.ndarray, size: tuple[int, int], offset: str, fill: np.ndarray) -> np.ndarray:
    """Centre crop ``(N, H, W, C)`` to ``size``, zero-padding (``fill``) a side that is too small."""
    th, tw = size
    h, w = x.shape[1:3]
    if th > h or tw > w:  # torchvision's centre_crop pads symmetric, the odd pixel after
        ph, pw = max(th - h, 0), max(tw - w, 0)
        padded = np.empty((x.shape[0], h + ph, w + pw, x.shape[3]), dtype=x.dtype)
        padded[...] = fill.astype(x.dtype)
        padded[:, ph // 2:ph // 2 + h, pw // 2:pw // 2 + w] = x
        x, h, w = padded, h + ph, w + pw
    if offset == "round":
        top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
    else:
        top, left = (h - th) // 2, (w - tw) // 2
    return x[:, top:top + th, left:left + tw]


def _scale(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    x = x.astype(np.float32)
    if lo != 0.0:
        x = x - np.float32(lo)
    return x / np.float32(hi - lo) if hi - lo != 1.0 else x


def _one_batch(x: np.ndarray, s: dict[str, Any], use_pillow: bool) -> np.ndarray:
    x = _match_channels(x, s["channels"])
    lo, hi = s["range"]
    fill = np.asarray(s["pad"] or [0.0], dtype=np.float64)
    target = resized_shape(x.shape[1:3], s["mode"], s["resize_size"])
    if s["dtype"] == "uint8":
        if x.dtype != np.uint8:
            x = np.clip(np.rint(x.astype(np.float64)), 0, 255).astype(np.uint8)
        x = resize_uint8(x, target, s["interpolation"], use_pillow=use_pillow)
        x = _scale(_crop(x, s["size"], s["offset"], np.rint(fill)), lo, hi)
    else:
        x = _scale(x, lo, hi)
        if tuple(x.shape[1:3]) != target:
            x = resize_float(x, target, s["interpolation"], s["antialias"])
        x = _crop(x, s["size"], s["offset"], ((fill - lo) / (hi - lo)).astype(np.float32))
    if s["order"] == "BGR":
        x = x[..., ::-1]
    x = (x - s["mean"]) / s["std"]
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if s["layout"] == "NCHW" else x, dtype=np.float32)


def preprocess(raw_images: Any, spec: Mapping[str, Any], *, use_pillow: bool = True) -> np.ndarray:
    """Model input (float32, ``spec['layout']``) for ``raw_images``, following deploy.json's ``preprocessing``.

    ``use_pillow=False`` forces the numpy resampler (what a device without Pillow runs).
    """
    s = _spec(spec)
    return np.concatenate([_one_batch(b, s, use_pillow) for b in _batches(raw_images)], axis=0)
