"""The inputs used to verify and evaluate a model: a real dataset when one
fits (the model's own or ``--data``), else seeded random inputs, said so."""
from __future__ import annotations

from collections.abc import Callable
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


def image_split(ctx: Context, spec: str, flag: str, split: str,
                select: Callable[[int], slice | np.ndarray]) -> tuple[np.ndarray, np.ndarray, int, tuple[int, ...]]:
    """Images of ``split`` chosen by ``select(count)``, adapted to the model input.

    Returns (inputs, int64 labels, class count, raw image shape). Shared by evaluation
    (first N test images) and calibration/training (seeded train selection).
    """
    from ..data import adapt_images, load_dataset

    loaded = ctx.loaded
    if not loaded.input_dtype.is_floating_point or len(loaded.input_shape) != 3:
        raise DatasetError(f"{flag} {spec} gives images, but {loaded.name!r} takes input {list(loaded.input_shape)} "
                           f"of {loaded.input_dtype}", fix=f"drop {flag} for non-image models")
    ds = load_dataset(spec)
    x_all, y_all = (ds.x_train, ds.y_train) if split == "train" else (ds.x_test, ds.y_test)
    chosen = select(len(x_all))
    x = adapt_images(x_all[chosen], loaded.input_shape, loaded.preprocessing).astype(np.float32)  # type: ignore[arg-type]
    return x, y_all[chosen].astype(np.int64), ds.num_classes, tuple(x_all.shape[1:])


def evaluation_data(ctx: Context, limit: int | None = None) -> EvalData:
    """Test-split inputs shaped for the model (first ``limit`` samples, deterministic)."""
    loaded, cfg = ctx.loaded, ctx.cfg
    spec = cfg.data or loaded.default_dataset
    n = limit if limit is not None else cfg.eval_samples
    if spec is None:
        ctx.note(f"no dataset for {loaded.name}: accuracy not measured; agreement and cosine use "
                 f"{RANDOM_EVAL_SAMPLES} seeded random inputs (pass --data for real data)")
        x = loaded.dummy_input(RANDOM_EVAL_SAMPLES, seed=1).numpy()
        return EvalData(x, None, "random", None)
    x, y, num_classes, raw_shape = image_split(ctx, spec, "--data", "test", lambda count: slice(0, n))
    if raw_shape != tuple(loaded.input_shape) and spec != loaded.default_dataset:
        ctx.note(f"{spec} images {list(raw_shape)} adapted to the model's input {list(loaded.input_shape)} "
                 "(resize, channels, normalise)")
    return EvalData(x, y, f"{spec} test split ({len(x)} samples)", num_classes)
