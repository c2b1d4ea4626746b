"""Per-tensor activation statistics over a calibration set, from ONNX Runtime.

The FP32 model runs once per batch with every float intermediate tensor
exposed as an output (on an in-memory copy). For each tensor we keep the
absolute maximum, the count of exact zeros and a histogram of the non-zero
``|x|``: the range starts at the first batch's absmax and doubles when a
later batch exceeds it, merging bin pairs exactly, so one pass suffices and
no sample is clipped. Zeros are counted apart because they quantize exactly
at any scale: a ReLU's zero spike would otherwise dominate the first bin. Every scale method
(:mod:`.methods`) reads these statistics, so the TensorRT cache and the Q/DQ
graph are derived from the same numbers.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pela_export._io import write_json_atomic
from pela_export.errors import ArtifactError, DatasetError, OptionError

from . import graph as g

DEFAULT_BINS = 2048
DEFAULT_MICRO_BATCH = 8
STATS_FORMAT = 1


@dataclass
class TensorStats:
    """absmax, min/max, exact-zero count and a histogram of non-zero |x| over ``[0, hist_max]``."""

    name: str
    hist: np.ndarray  # int64 counts, ``bins`` long
    hist_max: float = 0.0  # upper edge of the last bin (>= absmax)
    absmax: float = 0.0
    min: float = float("inf")
    max: float = float("-inf")
    count: int = 0
    zeros: int = 0
    infinite: int = 0  # ±inf elements left out of every statistic (e.g. -inf attention-mask scores)

    @classmethod
    def empty(cls, name: str, bins: int = DEFAULT_BINS) -> TensorStats:
        if bins < 2 or bins % 2:
            raise OptionError(f"histogram bins must be an even number >= 2, got {bins}", fix="pass bins=2048")
        return cls(name, np.zeros(bins, dtype=np.int64))

    @property
    def bins(self) -> int:
        return len(self.hist)

    @property
    def bin_width(self) -> float:
        return self.hist_max / self.bins

    def update(self, x: np.ndarray) -> None:
        """Add one batch of values; the range doubles (merging bin pairs) until it covers them.

        ±inf values are counted in ``infinite`` and left out: attention masks written as
        ``where(mask, scores, -inf)`` produce them on purpose (Softmax makes them 0), and no
        finite scale covers them. NaN is an error: it means broken inputs or a broken model.
        """
        v = np.asarray(x, dtype=np.float32).ravel()
        if v.size == 0:
            return
        if np.isnan(v).any():
            raise DatasetError(f"tensor {self.name!r} has NaN values on the calibration data",
                               fix="check the calibration inputs (range, normalisation) and the FP32 model")
        finite = np.isfinite(v)
        if not finite.all():
            self.infinite += int(v.size - finite.sum())
            v = v[finite]
            if v.size == 0:
                return
        a = np.abs(v)
        top = float(a.max())
        self.min = min(self.min, float(v.min()))
        self.max = max(self.max, float(v.max()))
        self.absmax = max(self.absmax, top)
        self.count += int(a.size)
        nonzero = a[a > 0]
        self.zeros += int(a.size - nonzero.size)
        a = nonzero
        if top > self.hist_max:
            if self.hist_max == 0.0:
                self.hist_max = top
            while top > self.hist_max:
                self.hist = np.concatenate([self.hist.reshape(-1, 2).sum(axis=1), np.zeros(self.bins // 2, np.int64)])
                self.hist_max *= 2.0
        if a.size == 0:
            return
        idx = np.minimum((a * (self.bins / self.hist_max)).astype(np.int64), self.bins - 1)
        self.hist += np.bincount(idx, minlength=self.bins)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "absmax": self.absmax, "min": self.min, "max": self.max, "count": self.count,
                "zeros": self.zeros, "infinite": self.infinite, "hist_max": self.hist_max, "hist": self.hist.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorStats:
        return cls(str(d["name"]), np.asarray(d["hist"], dtype=np.int64), float(d["hist_max"]), float(d["absmax"]),
                   float(d["min"]), float(d["max"]), int(d["count"]), int(d.get("zeros", 0)), int(d.get("infinite", 0)))


@dataclass
class ActivationStatistics:
    """Statistics of every observed tensor, in graph order, plus what they were measured on."""

    tensors: dict[str, TensorStats]
    samples: int
    batches: int
    manifest: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def amax(self, method: str, **params: Any) -> dict[str, float]:
        """Clipping threshold per tensor by a registered method (see :mod:`.methods`)."""
        from .methods import ScaleParams, threshold

        p = ScaleParams(**params)
        return {name: threshold(s, method, p) for name, s in self.tensors.items()}

    def scales(self, method: str, **params: Any) -> dict[str, float]:
        """Symmetric INT8 scale per tensor (float32 values, as stored in the graph and the cache)."""
        from .methods import amax_to_scale

        return {name: amax_to_scale(a) for name, a in self.amax(method, **params).items()}

    def to_dict(self) -> dict[str, Any]:
        return {"format": STATS_FORMAT, "samples": self.samples, "batches": self.batches, "manifest": self.manifest,
                **self.extra, "tensors": [s.to_dict() for s in self.tensors.values()]}

    def write(self, path: str | Path) -> Path:
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def read(cls, path: str | Path) -> ActivationStatistics:
        p = Path(path)
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
            if d.get("format") != STATS_FORMAT:
                raise ValueError(f"format {d.get('format')!r}, expected {STATS_FORMAT}")
            tensors = [TensorStats.from_dict(t) for t in d.pop("tensors")]
            known = {"format", "samples", "batches", "manifest"}
            return cls({t.name: t for t in tensors}, int(d["samples"]), int(d["batches"]), d.get("manifest"),
                       {k: v for k, v in d.items() if k not in known})
        except FileNotFoundError:
            raise ArtifactError("calibration statistics not found", where=str(p),
                                fix="re-run the INT8 calibration") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"cannot read calibration statistics ({type(exc).__name__}: {exc})", where=str(p),
                                fix="re-run the INT8 calibration") from None


def _batch_len(batch: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(batch.values()))) if batch else 0


def collect_statistics(model: Any, feeds: Sequence[Mapping[str, np.ndarray]], *, bins: int = DEFAULT_BINS,
                       tensors: Sequence[str] | None = None, threads: int | None = None,
                       micro_batch: int | None = DEFAULT_MICRO_BATCH) -> ActivationStatistics:
    """Run ``model`` (path or ModelProto, FP32) over ``feeds`` and histogram its activation tensors.

    ``tensors`` limits the observed tensors (default: every float tensor that
    depends on the input). Batches run in chunks of ``micro_batch`` examples
    because every exposed tensor of a chunk is alive at once (a ViT-S batch of
    32 would hold ~3 GB); a static-batch model runs in chunks of its batch.
    Cost: one ORT run per chunk with those tensors as outputs.
    """
    proto = g.load_model(model) if isinstance(model, (str, Path)) else model
    names = list(tensors) if tensors is not None else g.activation_tensors(proto)
    batches = list(feeds)
    if not batches or all(_batch_len(b) == 0 for b in batches):
        raise DatasetError("calibration data is empty (no examples)", fix="pass --calib-data with at least one example")
    sess = g.session(g.expose(proto, names), threads=threads)
    inputs = {i.name for i in sess.get_inputs()}
    missing = inputs - set(batches[0])
    if missing:
        raise OptionError(f"calibration batches lack model input(s) {sorted(missing)} (have {sorted(batches[0])})",
                          fix="key calibration arrays by the ONNX input names")
    stats = {n: TensorStats.empty(n, bins) for n in names}
    samples = runs = 0
    for chunk in g.micro_batches(batches, micro_batch, g.fixed_batch(sess)):
        for name, value in g.run(sess, chunk, names).items():
            arr = np.asarray(value)
            if np.issubdtype(arr.dtype, np.floating):
                stats[name].update(arr)
        samples, runs = samples + _batch_len(chunk), runs + 1
    if not runs:
        raise DatasetError(f"calibration batches are smaller than the model's static batch {g.fixed_batch(sess)}",
                           fix="pass at least one full batch, or export with a dynamic batch axis")
    kept = {n: s for n, s in stats.items() if s.count}  # non-float tensors found at run time are dropped
    manifest = getattr(getattr(feeds, "manifest", None), "to_dict", lambda: None)()
    extra = {"bins": bins, "dropped_samples": sum(_batch_len(b) for b in batches) - samples}
    return ActivationStatistics(kept, samples=samples, batches=len(batches), manifest=manifest, extra=extra)
