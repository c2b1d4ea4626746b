"""``--train-top N``: PELA-train the N fastest compressed points of the front that lose accuracy, as new points.

Training recovers what factorizing lost, so it pays most on the points that lose the most, and on the
front those are the fastest ones. Each trained point is the same compression (policy, method, options,
precision) with ``--train`` and the sweep's training flags, measured like every other point into its own
``points/<id>-trained/``; its ``point.json`` is matched by the grid's settings plus the training
configuration, so changing ``--epochs`` trains again while the untrained points stay reused.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .grid import COMPRESSED, SweepPoint

#: TrainConfig fields whose CLI flag is not ``--`` + the name with dashes.
FLAG_NAMES = {"scope": "--train-scope"}
#: TrainConfig fields set by the run itself, not by a training flag.
NOT_FLAGS = ("amp", "device", "checkpoint_dir", "resume", "progress")


@dataclass(frozen=True)
class TrainTop:
    """How many front points to train, the training configuration and its data (None: the model's own)."""

    top: int
    config: Any  # pela_export.train.TrainConfig (kept untyped: this module stays torch-free)
    data: str | None = None

    def fingerprint(self) -> dict[str, Any]:
        """What a trained point's point.json must have been trained with, to be reused."""
        cfg = {k: v for k, v in dataclasses.asdict(self.config).items() if k not in NOT_FLAGS}
        return {"train": cfg, "train_data": self.data}

    def flags(self) -> list[str]:
        """The training flags that reproduce the trained points (after ``--train``): every non-default value."""
        default = type(self.config)()
        out = ["--train-data", str(self.data)] if self.data is not None else []
        for f in dataclasses.fields(self.config):
            value = getattr(self.config, f.name)
            if f.name in NOT_FLAGS or value == getattr(default, f.name):
                continue
            flag = FLAG_NAMES.get(f.name, "--" + f.name.replace("_", "-"))
            out += [flag, ",".join(value) if isinstance(value, tuple) else f"{value:g}" if isinstance(value, float)
                    else str(value)]
        return out


def pick(rows: Sequence[Mapping[str, Any]], points: Mapping[str, SweepPoint], top: int) -> tuple[list[SweepPoint], str]:
    """The ``top`` fastest compressed, untrained points on the front that lose accuracy (drop > 0, or no
    baseline to tell), as trained points; and the sentence that records the choice."""
    candidates = sorted((r for r in rows if r["on_front"] and r["model"] == COMPRESSED and r["id"] in points
                         and not points[r["id"]].trained and (r["drop"] is None or r["drop"] > 0)),
                        key=lambda r: r["latency_ms"])
    chosen = [dataclasses.replace(points[r["id"]], trained=True) for r in candidates[:top]]
    if not chosen:
        return [], (f"--train-top {top}: no compressed point on the front loses accuracy, so none was trained")
    names = ", ".join(p.id for p in chosen)
    short = f" (only {len(chosen)} front point(s) lose accuracy)" if len(chosen) < top else ""
    return chosen, (f"--train-top {top}: trained the fastest compressed front point(s) that lose accuracy, as "
                    f"new points: {names}{short}")
