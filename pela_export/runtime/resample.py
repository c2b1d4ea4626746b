"""Image resampling in plain numpy, matching the two conventions models are evaluated with.

A device must resize exactly as the workstation did or accuracy drops (nearest
instead of bilinear costs the digits model 15 points), so both conventions are
spelled out here rather than left to whatever library the device has:

* ``antialias=False``: interpolation at half-pixel centres with border pixels
  repeated, filter never widened when shrinking — ``torch.nn.functional.interpolate
  (align_corners=False, antialias=False)`` and OpenCV ``cv2.resize`` (bicubic a = -0.75).
* ``antialias=True``: Pillow's ``Image.resize`` — the filter widens by the shrink
  factor, weights are renormalised at the border (bicubic a = -0.5). In ``uint8``
  it follows Pillow's fixed-point arithmetic (22 fraction bits, rounding after
  the horizontal and after the vertical pass), so results are bit-identical.

``nearest`` always samples the pixel under each output pixel's centre
(Pillow's NEAREST, torch's ``nearest-exact``).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = ["INTERPOLATIONS", "resample_weights", "resize_float", "resize_uint8"]

#: Pillow's fixed-point precision for 8-bit images (Resample.c: 32 - 8 - 2).
_PRECISION_BITS = 22


def _box(x: np.ndarray) -> np.ndarray:
    return ((x > -0.5) & (x <= 0.5)).astype(np.float64)


def _triangle(x: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - np.abs(x), 0.0, None)


def _cubic(a: float) -> Callable[[np.ndarray], np.ndarray]:
    def f(x: np.ndarray) -> np.ndarray:
        x = np.abs(x)
        near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
        far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
        return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))
    return f


def _hamming(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    px = np.pi * x
    with np.errstate(invalid="ignore", divide="ignore"):  # Pillow writes 0.54f, 0.46f: single-precision constants
        v = np.sin(px) / px * (float(np.float32(0.54)) + float(np.float32(0.46)) * np.cos(px))
    return np.where(x == 0.0, 1.0, np.where(x >= 1.0, 0.0, v))


def _sinc(x: np.ndarray) -> np.ndarray:
    px = np.pi * x
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(x == 0.0, 1.0, np.sin(px) / px)


def _lanczos(x: np.ndarray) -> np.ndarray:
    return np.where((x >= -3.0) & (x < 3.0), _sinc(x) * _sinc(x / 3.0), 0.0)


#: name → (filter, support) for the antialiased (Pillow) convention.
_PIL_FILTERS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float]] = {
    "box": (_box, 0.5), "bilinear": (_triangle, 1.0), "hamming": (_hamming, 1.0),
    "bicubic": (_cubic(-0.5), 2.0), "lanczos": (_lanczos, 3.0),
}
#: The plain convention differs only in the cubic's sharpness (torch / OpenCV use a = -0.75).
_PLAIN_FILTERS = {**_PIL_FILTERS, "bicubic": (_cubic(-0.75), 2.0)}

INTERPOLATIONS: tuple[str, ...] = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")


def _nearest(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's NEAREST: the centre position is accumulated step by step in double (ImagingScaleAffine)."""
    step = in_size / out_size
    centre = np.add.accumulate(np.r_[step * 0.5, np.full(out_size - 1, step)])
    idx = np.clip(np.floor(centre).astype(np.int64), 0, in_size - 1)
    return idx[:, None], np.ones((out_size, 1))


def resample_weights(in_size: int, out_size: int, interpolation: str,
                     antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights, both ``(out_size, taps)``: output i = Σ w[i, k] · input[idx[i, k]]."""
    if interpolation == "nearest":
        return _nearest(in_size, out_size)
    scale = in_size / out_size
    centre = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    if antialias:  # Pillow's precompute_coeffs
        filt, support = _PIL_FILTERS[interpolation]
        fscale = max(scale, 1.0)
        support *= fscale
        taps = int(math.ceil(support)) * 2 + 1
        xmin = np.maximum(np.trunc(centre - support + 0.5), 0).astype(np.int64)
        xmax = np.minimum(np.trunc(centre + support + 0.5), in_size).astype(np.int64)
        j = xmin[:, None] + np.arange(taps)[None, :]
        valid = j < xmax[:, None]
        w = np.where(valid, filt((j - centre[:, None] + 0.5) * (1.0 / fscale)), 0.0)
        idx = np.where(valid, j, 0)
    else:  # half-pixel source coordinate in float32 as torch computes it, border pixels repeated
        filt, support = _PLAIN_FILTERS[interpolation]
        scale32 = np.float64(np.float32(in_size) / np.float32(out_size))
        src = (scale32 * (np.arange(out_size) + 0.5) - 0.5).astype(np.float32).astype(np.float64)  # one rounding (FMA)
        reach = int(math.ceil(support))
        j = np.floor(src).astype(np.int64)[:, None] + np.arange(1 - reach, reach + 1)[None, :]
        w = filt(j - src[:, None])
        idx = np.clip(j, 0, in_size - 1)
    total = w.sum(axis=1, keepdims=True)
    w = np.divide(w, total, out=np.zeros_like(w), where=total != 0)
    return idx, w


def _pass_float(x: np.ndarray, axis: int, out_size: int, interpolation: str, antialias: bool) -> np.ndarray:
    idx, w = resample_weights(x.shape[axis], out_size, interpolation, antialias)
    moved = np.moveaxis(x, axis, -1).astype(np.float64)
    out = (moved[..., idx] * w).sum(axis=-1)
    return np.moveaxis(out.astype(np.float32), -1, axis)


def _height_first(in_hw: tuple[int, ...], out_hw: tuple[int, int]) -> bool:
    """Pillow ≥ 13 resizes the height first when it shrinks more than twice as much as the width
    (Resample.c ``horizontal_first``); earlier Pillow always starts with the width, which can move
    a few 8-bit results by one level."""
    dh, dw = in_hw[0] - out_hw[0], in_hw[1] - out_hw[1]
    return dh > 0 and dh > 2 * dw


def _two_passes(x: np.ndarray, size: tuple[int, int], one_pass: Callable[[np.ndarray, int, int], np.ndarray]
                ) -> np.ndarray:
    axes = [(1, size[0]), (2, size[1])] if _height_first(x.shape[1:3], size) else [(2, size[1]), (1, size[0])]
    for axis, n in axes:
        if x.shape[axis] != n:
            x = one_pass(x, axis, n)
    return x


def resize_float(x: np.ndarray, size: tuple[int, int], interpolation: str, antialias: bool) -> np.ndarray:
    """Resize float images ``(N, H, W, C)`` to ``size`` (H, W), one separable pass per axis, float32 between."""
    out = _two_passes(x, size, lambda a, axis, n: _pass_float(a, axis, n, interpolation, antialias))
    return out.astype(np.float32, copy=False)


def _pass_uint8(x: np.ndarray, axis: int, out_size: int, interpolation: str) -> np.ndarray:
    idx, w = resample_weights(x.shape[axis], out_size, interpolation, antialias=True)
    moved = np.moveaxis(x, axis, -1)
    if interpolation == "nearest":
        return np.moveaxis(moved[..., idx[:, 0]], -1, axis)
    one = float(1 << _PRECISION_BITS)
    kk = np.trunc(np.where(w < 0, -0.5 + w * one, 0.5 + w * one)).astype(np.int64)
    acc = (moved.astype(np.int64)[..., idx] * kk).sum(axis=-1) + (1 << (_PRECISION_BITS - 1))
    out = np.clip(acc >> _PRECISION_BITS, 0, 255).astype(np.uint8)
    return np.moveaxis(out, -1, axis)


def _resize_pillow(x: np.ndarray, size: tuple[int, int], interpolation: str) -> np.ndarray | None:
    """Pillow's own resize when it is installed and the images are L or RGB; else None."""
    try:
        from PIL import Image
    except ImportError:
        return None
    if x.shape[-1] not in (1, 3):
        return None
    filt = getattr(Image.Resampling, interpolation.upper())
    out = np.empty((x.shape[0], size[0], size[1], x.shape[-1]), dtype=np.uint8)
    for i, img in enumerate(x):
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        out[i] = np.asarray(pil.resize((size[1], size[0]), filt)).reshape(out.shape[1:])
    return out


def resize_uint8(x: np.ndarray, size: tuple[int, int], interpolation: str, *, use_pillow: bool = True) -> np.ndarray:
    """Resize 8-bit images ``(N, H, W, C)`` exactly as Pillow's ``Image.resize`` (Pillow itself when present)."""
    if tuple(x.shape[1:3]) == tuple(size):
        return x
    if use_pillow:
        done = _resize_pillow(x, size, interpolation)
        if done is not None:
            return done
    return _two_passes(x, size, lambda a, axis, n: _pass_uint8(a, axis, n, interpolation))
