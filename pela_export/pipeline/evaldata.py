"""The inputs used to verify and evaluate a model: a real dataset when one
fits (the model's own or ``--data``), else seeded random inputs, said so."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DatasetError
from .context import Context

RANDOM_EVAL_SAMPLES = 64


@dataclass
class EvalData:
    x: np.ndarray
    labels: np.ndarray | None
    source: str
    num_classes: int | None


def evaluation_data(ctx: Context, limit: int | None = None) -> EvalData:
    """Test-split inputs shaped for the model (first ``limit`` samples, deterministic)."""
    from ..data import adapt_images, load_dataset

    loaded, cfg = ctx.loaded, ctx.cfg
    spec = cfg.data or loaded.default_dataset
    n = limit if limit is not None else cfg.eval_samples
    if spec is None:
        ctx.note(f"no dataset for {loaded.name}: accuracy not measured; agreement and cosine use "
                 f"{RANDOM_EVAL_SAMPLES} seeded random inputs (pass --data for real data)")
        x = loaded.dummy_input(RANDOM_EVAL_SAMPLES, seed=1).numpy()
        return EvalData(x, None, "random", None)
    if not loaded.input_dtype.is_floating_point or len(loaded.input_shape) != 3:
        raise DatasetError(f"--data {spec} gives images, but {loaded.name!r} takes input {list(loaded.input_shape)} "
                           f"of {loaded.input_dtype}", fix="drop --data for non-image models")
    ds = load_dataset(spec)
    x, y = ds.x_test, ds.y_test
    if n is not None:
        x, y = x[:n], y[:n]
    c, h, w = loaded.input_shape
    if x.shape[1:] != (c, h, w) and spec != loaded.default_dataset:
        ctx.note(f"{spec} images {list(x.shape[1:])} adapted to the model's input {[c, h, w]} (resize, channels, normalise)")
    x = adapt_images(x, (c, h, w), loaded.preprocessing).astype(np.float32)
    return EvalData(x, y.astype(np.int64), f"{spec} test split ({len(x)} samples)", ds.num_classes)
