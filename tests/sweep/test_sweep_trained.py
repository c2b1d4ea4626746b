"""``--train-top``: which front points are trained, the flags that reproduce them, and their fingerprint."""
from __future__ import annotations

from typing import Any

from pela_export.sweep.grid import COMPRESSED, ORIGINAL, SweepPoint
from pela_export.sweep.trained import TrainTop, pick
from pela_export.train import TrainConfig


def _row(pid: str, latency: float, drop: float | None, front: bool = True, model: str = COMPRESSED) -> dict[str, Any]:
    return {"id": pid, "model": model, "latency_ms": latency, "drop": drop, "on_front": front}


POINTS = {pid: SweepPoint(COMPRESSED, "fp32", "ratio", "svd", (("ratio", k),))
          for pid, k in (("k2", 2.0), ("k3", 3.0), ("k4", 4.0), ("k5", 5.0))}
POINTS["orig"] = SweepPoint(ORIGINAL, "fp32")


def test_pick_takes_the_fastest_front_points_that_lose_accuracy() -> None:
    rows = [_row("orig", 10.0, 0.0, model=ORIGINAL), _row("k2", 6.0, 0.0), _row("k3", 5.0, 1.5),
            _row("k4", 4.0, 3.0, front=False), _row("k5", 3.0, 6.0)]
    chosen, why = pick(rows, POINTS, 2)
    assert [p.id for p in chosen] == ["k5-ratio-svd-fp32-trained", "k3-ratio-svd-fp32-trained"]
    assert all(p.trained for p in chosen) and "k5-ratio-svd-fp32-trained" in why
    chosen, why = pick(rows, POINTS, 5)  # k2 loses nothing, k4 is off the front, the original is never trained
    assert len(chosen) == 2 and "only 2 front point(s) lose accuracy" in why
    assert pick([_row("k2", 6.0, 0.0)], POINTS, 1) == ([], "--train-top 1: no compressed point on the front loses "
                                                           "accuracy, so none was trained")


def test_trained_point_reproduces_with_train_and_keeps_old_point_json_compatible() -> None:
    point = POINTS["k3"]
    assert "trained" not in point.to_dict() and SweepPoint.from_dict(point.to_dict()) == point
    trained = SweepPoint.from_dict({**point.to_dict(), "trained": True})
    assert trained.trained and trained.flags()[-1] == "--train" and trained.id.endswith("-trained")


def test_flags_name_every_non_default_training_option_and_the_data() -> None:
    top = TrainTop(2, TrainConfig(epochs=2, lr=5e-4, scope="all", distill_blocks=("blocks.*",), device="cuda"),
                   "fashion-mnist")
    assert top.flags() == ["--train-data", "fashion-mnist", "--epochs", "2", "--lr", "0.0005", "--train-scope", "all",
                           "--distill-blocks", "blocks.*"]
    assert TrainTop(1, TrainConfig()).flags() == []
    fp = top.fingerprint()
    assert fp["train_data"] == "fashion-mnist" and fp["train"]["epochs"] == 2 and "device" not in fp["train"]
