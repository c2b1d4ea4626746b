"""Calibration batches for data-aware compression (weighted SVD, sensitivity ranks)
and the training split for PELA training: the model's own dataset (train split)
or ``--calib-data``; a fixed, seeded selection so a compression is reproducible."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import OptionError
from .context import Context
from .evaldata import image_split

CALIB_SEED = 0


@dataclass
class CalibData:
    """Model-ready inputs (and labels when the source has them) plus where they came from."""

    x: np.ndarray
    y: np.ndarray | None
    source: str
    sha256: str

    def batches(self, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        out = []
        for i in range(0, len(self.x), batch_size):
            xb = torch.from_numpy(self.x[i:i + batch_size])
            yb = torch.from_numpy(self.y[i:i + batch_size]) if self.y is not None else None
            out.append((xb, yb))
        return out

    def describe(self) -> dict[str, object]:
        return {"source": self.source, "samples": int(len(self.x)), "labelled": self.y is not None, "sha256": self.sha256}


def calibration_data(ctx: Context, samples: int, *, labelled: bool, why: str, split: str = "train") -> CalibData:
    """``samples`` seeded-random examples of the calibration source, adapted to the model input."""
    cfg, loaded = ctx.cfg, ctx.loaded
    spec = cfg.calib_data or cfg.data or loaded.default_dataset
    if spec is None:
        if labelled:
            raise OptionError(f"{why} needs labelled data, and {loaded.name!r} has no dataset",
                              fix="pass --calib-data digits|fashion-mnist|idx:DIR (or use --method asvd/whiten)")
        ctx.note(f"{why}: no dataset for {loaded.name}; using {samples} seeded random inputs (pass --calib-data)")
        x = loaded.dummy_input(samples, seed=CALIB_SEED + 7).numpy()
        return CalibData(x, None, "random", hashlib.sha256(x.tobytes()).hexdigest())
    x, y, _, _ = image_split(ctx, spec, "--calib-data", split,
                             lambda count: np.random.default_rng(CALIB_SEED).permutation(count)[:samples])
    digest = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()
    return CalibData(x, y, f"{spec} {split} split ({len(x)} seeded samples)", digest)
