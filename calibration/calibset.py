"""A calibration set: a seeded selection of model-ready examples cut into batches.

It is a sequence of ``{input name: array}`` batches, so it is accepted wherever
the precision converters take ``Feeds``, and carries its manifest so every
artifact calibrated from it can say exactly which data it saw. The selection
rule (``default_rng(seed).permutation(count)[:samples]``) is the one the
compression stage uses, so the same seed picks the same examples there.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np

from pela_export.errors import DatasetError, OptionError

from .manifest import CalibrationManifest, arrays_sha256
from .sources import DEFAULT_SOURCE, FLAG, ModelInput, open_source

DEFAULT_SAMPLES = 512  # TensorRT's guidance: ~500 representative images
DEFAULT_BATCH_SIZE = 32
CALIB_SEED = 0  # same default as pela_export.pipeline.calib


@dataclass
class CalibrationSet(Sequence[Mapping[str, np.ndarray]]):
    """Model-ready arrays (``{input: (samples, ...)}``) served as batches, plus their manifest."""

    arrays: dict[str, np.ndarray]
    batch_size: int
    manifest: CalibrationManifest

    @property
    def num_samples(self) -> int:
        return len(next(iter(self.arrays.values())))

    def __len__(self) -> int:  # number of batches
        return (self.num_samples + self.batch_size - 1) // self.batch_size

    @overload
    def __getitem__(self, i: int) -> Mapping[str, np.ndarray]: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[Mapping[str, np.ndarray]]: ...

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        start = (i % len(self)) * self.batch_size
        return {k: v[start:start + self.batch_size] for k, v in self.arrays.items()}

    def describe(self) -> dict[str, Any]:
        m = self.manifest
        return {"source": m.source, "samples": self.num_samples, "batch_size": self.batch_size,
                "seed": m.seed, "sha256": m.sha256}


def select_indices(count: int, samples: int, seed: int) -> np.ndarray:
    """The first ``samples`` of a seeded permutation of ``range(count)`` (all of them when fewer)."""
    return np.random.default_rng(seed).permutation(count)[:samples]


def _check_sizes(samples: int, batch_size: int) -> None:
    if samples < 1:
        raise OptionError(f"calibration sample count must be >= 1, got {samples}",
                          fix=f"pass --calib-samples {DEFAULT_SAMPLES} (or any count >= 1)")
    if batch_size < 1:
        raise OptionError(f"calibration batch size must be >= 1, got {batch_size}",
                          fix=f"pass --calib-batch-size {DEFAULT_BATCH_SIZE} (or any size >= 1)")


def calibration_set(source: Any = DEFAULT_SOURCE, model_input: ModelInput | None = None, *,
                    samples: int = DEFAULT_SAMPLES, batch_size: int = DEFAULT_BATCH_SIZE,
                    seed: int = CALIB_SEED) -> CalibrationSet:
    """``samples`` seeded examples of ``source`` adapted to ``model_input``, in batches of ``batch_size``.

    ``source``: a registry spec (``digits``, ``fashion-mnist``, ``idx:DIR``,
    ``images:DIR``, ``npz:FILE``), a ``.npz`` path or image folder, an array,
    a ``{input name: array}`` dict, an iterable of batches, or a :class:`Source`.
    """
    _check_sizes(samples, batch_size)
    src = open_source(source, model_input)
    count = len(src)
    if count == 0:
        raise DatasetError(f"calibration source {src.spec!r} is empty", fix=f"pass {FLAG} with at least one example")
    idx = select_indices(count, samples, seed)
    arrays = src.take(idx)
    manifest = CalibrationManifest(source=src.spec, seed=seed, samples=len(idx), batch_size=batch_size,
                                   indices=[int(i) for i in idx], files=src.files(idx),
                                   inputs={k: list(v.shape) for k, v in arrays.items()},
                                   sha256=arrays_sha256(arrays))
    return CalibrationSet(arrays, batch_size, manifest)


def from_feeds(feeds: Sequence[Mapping[str, np.ndarray]], source: str = "feeds") -> CalibrationSet:
    """Wrap batches a caller already prepared (kept in order, no selection) with a manifest."""
    if isinstance(feeds, CalibrationSet):
        return feeds
    batches = list(feeds)
    src = open_source(batches) if batches else None
    if src is None or len(src) == 0:
        raise DatasetError("calibration data is empty (no examples)", fix=f"pass {FLAG} with at least one example")
    arrays = src.take(np.arange(len(src)))
    batch_size = max(len(next(iter(b.values()))) for b in batches)
    manifest = CalibrationManifest(source=source, seed=None, samples=len(src), batch_size=batch_size,
                                   indices=list(range(len(src))), inputs={k: list(v.shape) for k, v in arrays.items()},
                                   sha256=arrays_sha256(arrays))
    return CalibrationSet(arrays, batch_size, manifest)


def from_manifest(manifest: CalibrationManifest | str | Path, model_input: ModelInput | None = None,
                  source: Any = None) -> CalibrationSet:
    """Rebuild the set a manifest recorded and prove it is the same data (ArtifactError if not).

    ``source`` replaces the recorded spec; it is required when the manifest
    records caller-provided batches (``seed`` None), which only the caller has.
    """
    where = "calibration manifest" if isinstance(manifest, CalibrationManifest) else str(manifest)
    m = manifest if isinstance(manifest, CalibrationManifest) else CalibrationManifest.read(manifest)
    if m.seed is None:
        if source is None:
            raise OptionError(f"{where} records caller-provided batches ({m.source!r}); they cannot be reloaded "
                              "from a spec", fix="pass the same batches as source= to check them")
        rebuilt = from_feeds([source] if isinstance(source, Mapping) else source, source=m.source)
        rebuilt.batch_size = rebuilt.manifest.batch_size = m.batch_size
    else:
        rebuilt = calibration_set(_spec_of(m.source) if source is None else source, model_input,
                                  samples=m.samples, batch_size=m.batch_size, seed=m.seed)
        if source is not None and not isinstance(source, (str, Path)):
            rebuilt.manifest.source = m.source  # an API source has only a label, not a spec
    m.check(rebuilt.manifest, where=where)
    return rebuilt


def _spec_of(recorded: str) -> str:
    """The spec to reopen from a recorded source label (``digits (train split)`` -> ``digits``)."""
    return recorded.removesuffix(" (train split)")
