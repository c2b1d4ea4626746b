"""Calibration batches for data-aware compression (weighted SVD, sensitivity ranks)
and the training split for PELA training: the model's own dataset (train split)
or ``--calib-data``; a fixed, seeded selection so a compression is reproducible."""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data.opendata import resolve_spec
from ..data.spec import data_choices
from ..errors import OptionError
from ..models.io import Batch, as_feeds, batch_len, batch_slice
from .context import Context
from .evaldata import image_split, random_inputs

CALIB_SEED = 0


@dataclass
class CalibData:
    """Model-ready inputs (and labels when the source has them) plus where they came from.

    ``x`` is one array for a single-tensor model, else ``{input name: array}`` for
    every model input (token ids, masks, ...), all with the same number of samples.
    """

    x: Batch
    y: np.ndarray | None
    source: str
    sha256: str

    def __len__(self) -> int:
        return batch_len(self.x)

    def batches(self, batch_size: int) -> list[tuple[Any, torch.Tensor | None]]:
        """``(x, y)`` pairs: ``x`` a tensor, or a dict of tensors (input name → batch) for multi-input models."""
        out = []
        for i in range(0, len(self), batch_size):
            part = batch_slice(self.x, i, i + batch_size)
            xb: Any = ({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in part.items()}
                       if isinstance(part, Mapping) else torch.from_numpy(part))
            yb = torch.from_numpy(self.y[i:i + batch_size]) if self.y is not None else None
            out.append((xb, yb))
        return out

    def feeds(self, batch_size: int, input_names: list[str]) -> list[dict[str, np.ndarray]]:
        """ONNX Runtime feeds (input name → array) of every batch, in the model's input order."""
        return [as_feeds(batch_slice(self.x, i, i + batch_size), input_names) for i in range(0, len(self), batch_size)]

    def describe(self) -> dict[str, object]:
        return {"source": self.source, "samples": len(self), "labelled": self.y is not None, "sha256": self.sha256}


def batch_sha256(x: Batch, *extra: np.ndarray | None) -> str:
    """Digest of every array of a batch (dicts in key order) plus ``extra`` arrays (None skipped)."""
    h = hashlib.sha256()
    parts = [x[k] for k in x] if isinstance(x, Mapping) else [x]
    for a in (*parts, *(e for e in extra if e is not None)):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def calibration_data(ctx: Context, samples: int, *, labelled: bool, why: str, split: str = "train") -> CalibData:
    """``samples`` seeded-random examples of the calibration source, adapted to the model input."""
    cfg, loaded = ctx.cfg, ctx.loaded
    resolved = resolve_spec(cfg.data.calib_data or cfg.data.eval_data, loaded, "calib")
    if resolved.kind == "random":
        if labelled:
            what = f"--calib-data {resolved.text} has no labels" if resolved.text else f"{loaded.name!r} has no dataset"
            raise OptionError(f"{why} needs labelled data, and {what}",
                              fix=f"pass --calib-data {'|'.join(data_choices('calib', text=False)[:3])} "
                                  "(or use --method asvd/whiten)")
        ctx.note(f"{why}: no dataset for {loaded.name}; using {samples} seeded random inputs (pass --calib-data)")
        x = random_inputs(loaded, samples, CALIB_SEED + 7)
        return CalibData(x, None, "random", batch_sha256(x))
    spec = resolved.label
    x, y, _, _ = image_split(ctx, spec, "--calib-data", split,
                             lambda count: np.random.default_rng(CALIB_SEED).permutation(count)[:samples])
    return CalibData(x, y, f"{spec} {split} split ({batch_len(x)} seeded samples)", batch_sha256(x, y))
